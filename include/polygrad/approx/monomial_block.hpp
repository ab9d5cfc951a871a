#pragma once
// The monomials of a chunk of rows, stored in strips, for the chunked routes.
//
// SymmetricFeatures builds phi and psi one row at a time. The routes instead need the features
// of a whole chunk of C rows, and most of their time goes into products with them, so here a
// chunk is built feature by feature, W rows at a time (W = one SIMD packet of T): each new
// monomial is its parent's packet times one coordinate's packet. The block is stored in strips
// of W rows (StripMatrix), so that one strip -- k x W, about 400 KB at k = 6435 in float -- stays
// in the L2 cache while the products of feature_products.hpp sweep it.
//
// The weights of phi and psi are not applied: phi_f . psi_f carries the pair weight
// b_j j!/alpha! (pair_weights), which the routes fold into their states instead.

#include <algorithm>
#include <vector>

#include "polygrad/approx/features.hpp"
#include "polygrad/detail/simd.hpp"

namespace polygrad {

/// w_f = b_j j!/alpha! for every feature f of degree j: phi(x) . psi(y) = sum_f w_f x^a y^a.
/// `coeffs` are the b_j the features were built from.
inline Vector<double> pair_weights(const SymmetricFeatures& features,
                                   const std::vector<double>& coeffs) {
  Vector<double> w(features.size());
  for (int j = 0; j <= features.degree(); ++j) {
    for (Index f = features.degree_begin(j); f < features.degree_begin(j + 1); ++f) {
      // weight(f)^2 = |b_j| j!/alpha!; the sign of b_j is phi's.
      w(f) = features.weight(f) * features.weight(f) * (coeffs[std::size_t(j)] < 0 ? -1.0 : 1.0);
    }
  }
  return w;
}

/// Rows of a chunk rounded up to whole strips of W = simd::width<T> rows.
template <class T>
Index padded_rows(Index rows) {
  constexpr Index W = simd::width<T>;
  return (rows + W - 1) / W * W;
}

/// A k x C matrix stored in strips of W = simd::width<T> columns: strip s is a row-major
/// k x W block holding columns [s W, s W + W), so element (f, r) is one lane of a packet and a
/// strip row is one packet. C is padded to whole strips and k to a multiple of W; the rows
/// past k stay zero, so kernels may read whole W x W tiles.
template <class T>
class StripMatrix {
 public:
  static constexpr Index W = simd::width<T>;

  /// Shape k x C. Keeps the storage when the shape is unchanged, so the contents of rows < k
  /// are then those of the last use; a new shape is zero-filled.
  void resize(Index k, Index C) {
    const Index strips = (C + W - 1) / W;
    if (k == k_ && strips == strips_) return;
    k_ = k;
    stride_ = (k + W - 1) / W * W;
    strips_ = strips;
    data_.setZero(strips_ * stride_, W);
  }
  Index rows() const { return k_; }
  Index strips() const { return strips_; }
  /// Distance between strips, in strip rows: k rounded up to a multiple of W.
  Index stride() const { return stride_; }
  T* strip(Index s) { return data_.data() + s * stride_ * W; }
  const T* strip(Index s) const { return data_.data() + s * stride_ * W; }
  /// Element (f, r).
  T operator()(Index f, Index r) const { return strip(r / W)[f * W + r % W]; }

 private:
  Index k_ = 0, stride_ = 0, strips_ = 0;
  Matrix<T> data_;  // (strips * stride, W)
};

/// Builds and differentiates the monomials of row blocks for one SymmetricFeatures.
template <class T>
class MonomialBlock {
 public:
  static constexpr Index W = simd::width<T>;

  explicit MonomialBlock(const SymmetricFeatures& features) : features_(features) {}

  /// M (k x C): M(f, r) = x_r^alpha_f for the rows x_r of X (C x d). Padding rows are those
  /// of x = 0 (monomial 0 is 1 there, the rest 0).
  void build(const Eigen::Ref<const Matrix<T>>& X, StripMatrix<T>& M) {
    const Index k = features_.size();
    load_transposed(X);
    M.resize(k, X.rows());
    for (Index s = 0; s < M.strips(); ++s) {
      T* m = M.strip(s);
      const T* x = XT_.data() + s * W;  // x + c * stride: coordinate c of the strip's rows
      const Index stride = XT_.cols();
      simd::store(m, simd::broadcast(T(1)));
      // One flat loop (no loop over each parent's children, whose varying length the branch
      // predictor cannot follow): monomial f is its parent's times its last coordinate.
      for (Index f = 1; f < k; ++f) {
        const auto parent = simd::load(m + features_.parent(f) * W);
        simd::store(m + f * W, simd::mul(parent, simd::load(x + features_.last_coordinate(f) * stride)));
      }
    }
  }

  /// dX (C x d) += the gradient, with respect to X, of sum_{f,r} G(f, r) M(f, r), for the
  /// block M that build(X, M) produced. G is given by `gradient`: gradient.begin_strip(s), then
  /// gradient(f) is the packet G(f, rows of strip s); each is asked for exactly once.
  ///
  /// In build() each child was M[child] = M[p] * x_c, so the parents are walked backwards and a
  /// child's total gradient is complete before its parent is visited. Only the parents' totals
  /// are kept (a strip of C(d + g - 1, g - 1) packets); the leaves' come straight from G.
  template <class Gradient>
  void backward(const Eigen::Ref<const Matrix<T>>& X, const StripMatrix<T>& M,
                Gradient&& gradient, Eigen::Ref<Matrix<T>> dX) {
    const Index C = X.rows(), d = features_.dim();
    const int g = features_.degree();
    load_transposed(X);
    dXT_.setZero(d, XT_.cols());
    if (g == 0) return;  // constant features: no gradient
    const Index parents = features_.degree_begin(g);
    const Index leaf_parents = features_.degree_begin(g - 1);  // parents >= this have leaves
    totals_.resize(parents, W);
    // dx accumulates in `copies` interleaved copies (by parent), so that consecutive parents do
    // not wait on one another's read-modify-write of the same coordinate.
    constexpr Index copies = 4;
    dx_.resize(copies * d, W);
    for (Index s = 0; s < M.strips(); ++s) {
      gradient.begin_strip(s);
      const T* m = M.strip(s);
      const T* x = XT_.data() + s * W;
      const Index xs = XT_.cols();  // stride between coordinates in x
      T* total = totals_.data();
      dx_.setZero();
      Index child = features_.size();
      auto visit = [&](Index p, auto child_total) {
        const Index first = features_.last_coordinate(p);
        child -= d - first;
        auto dp = gradient(p);
        const auto mp = simd::load(m + p * W);
        T* dx = dx_.data() + (p % copies) * d * W;
        for (Index c = first; c < d; ++c) {
          const auto dchild = child_total(child + c - first);
          dp = simd::fma(dchild, simd::load(x + c * xs), dp);
          simd::store(dx + c * W, simd::fma(dchild, mp, simd::load(dx + c * W)));
        }
        simd::store(total + p * W, dp);
      };
      for (Index p = parents - 1; p >= leaf_parents; --p)
        visit(p, [&](Index f) { return gradient(f); });
      for (Index p = leaf_parents - 1; p >= 0; --p)
        visit(p, [&](Index f) { return simd::load(total + f * W); });
      for (Index i = 0; i < copies; ++i)
        dXT_.middleCols(s * W, W) += dx_.middleRows(i * d, d);
    }
    dX += dXT_.leftCols(C).transpose();
  }

 private:
  // XT_ = X^T with its columns padded with zeros to whole strips: (d, padded C).
  void load_transposed(const Eigen::Ref<const Matrix<T>>& X) {
    require_shape(X, X.rows(), features_.dim(), "monomial block rows");
    XT_.setZero(features_.dim(), padded_rows<T>(X.rows()));
    XT_.leftCols(X.rows()) = X.transpose();
  }

  const SymmetricFeatures& features_;
  Matrix<T> XT_, dXT_;  // (d, padded C)
  Matrix<T> totals_;    // (parents, W): the total gradient of each parent monomial in a strip
  Matrix<T> dx_;        // (copies * d, W): a strip's dX^T, in interleaved partial sums
};

}  // namespace polygrad
