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
  /// Columns per strip: one SIMD packet of T.
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
  /// k, the rows in use.
  Index rows() const { return k_; }
  /// C / W rounded up, the number of strips.
  Index strips() const { return strips_; }
  /// Distance between strips, in strip rows: k rounded up to a multiple of W.
  Index stride() const { return stride_; }
  /// Strip s: row-major (stride(), W), columns [s W, s W + W), row f one packet.
  T* strip(Index s) { return data_.data() + s * stride_ * W; }
  /// Strip s, read-only.
  const T* strip(Index s) const { return data_.data() + s * stride_ * W; }
  /// Element (f, r).
  T operator()(Index f, Index r) const { return strip(r / W)[f * W + r % W]; }

 private:
  Index k_ = 0, stride_ = 0, strips_ = 0;
  Matrix<T> data_;  // (strips * stride, W)
};

/// The monomials M (k x C) of a block of rows, as MonomialBlock::build() leaves them: those of
/// degree < g (the parents, about half of them at the routes' sizes) stored in a StripMatrix,
/// those of degree g (the leaves) formed when used, as parent times coordinate. A block then
/// fits in the L2 cache with room to spare, and building it writes half as much.
template <class T>
class Monomials {
 public:
  /// Rows of the block per strip: one SIMD packet of T.
  static constexpr Index W = simd::width<T>;

  /// k, all monomials.
  Index size() const { return k_; }
  /// The stored ones: features [0, stored()).
  Index stored() const { return M_.rows(); }
  /// C / W rounded up, the number of strips.
  Index strips() const { return M_.strips(); }
  /// Strip s of the stored monomials: (stored, W), row f one packet.
  const T* strip(Index s) const { return M_.strip(s); }
  /// Monomial f >= stored() of the rows of strip s.
  simd::Packet<T> leaf(Index s, Index f) const {
    return simd::mul(simd::load(M_.strip(s) + parent_[f] * W),
                     simd::load(XT_.data() + last_[f] * XT_.cols() + s * W));
  }
  /// Monomial f of the rows of strip s; zero for f >= k.
  simd::Packet<T> packet(Index s, Index f) const {
    if (f < stored()) return simd::load(M_.strip(s) + f * W);
    return f < k_ ? leaf(s, f) : simd::zero<T>();
  }
  /// Element (f, r).
  T operator()(Index f, Index r) const {
    alignas(64) T lanes[W];
    simd::store(lanes, packet(r / W, f));
    return lanes[r % W];
  }

 private:
  template <class>
  friend class MonomialBlock;
  StripMatrix<T> M_;  // (stored, C)
  Matrix<T> XT_;      // (d, padded C): the rows, transposed, zero past C
  const std::int32_t* parent_ = nullptr;
  const std::int32_t* last_ = nullptr;
  Index k_ = 0;
};

/// Builds and differentiates the monomials of row blocks for one SymmetricFeatures.
template <class T>
class MonomialBlock {
 public:
  /// Rows per strip: one SIMD packet of T.
  static constexpr Index W = simd::width<T>;

  /// The monomials of `features`, which must outlive this object (it keeps a reference).
  explicit MonomialBlock(const SymmetricFeatures& features) : features_(features) {
    // The order in which backward() visits the parents: degrees from g - 1 down to 0 (children
    // before parents), and within a degree grouped by last coordinate, so that a parent's
    // d - last children come in runs of equal length and their loop's branches are predicted
    // (in feature order the length changes at almost every parent).
    std::vector<Index> first_child(std::size_t(features.size()), 0);
    for (Index f = features.size() - 1; f >= 1; --f)
      first_child[std::size_t(features.parent(f))] = f;
    for (int j = features.degree() - 1; j >= 0; --j) {
      const auto begin = visits_.size();
      for (Index p = features.degree_begin(j); p < features.degree_begin(j + 1); ++p)
        visits_.push_back({p, features.last_coordinate(p), first_child[std::size_t(p)]});
      std::stable_sort(
          visits_.begin() + std::ptrdiff_t(begin), visits_.end(),
          [](const ParentVisit& a, const ParentVisit& b) { return a.first < b.first; });
    }
  }

  /// M (k x C): M(f, r) = x_r^alpha_f for the rows x_r of X (C x d). Padding rows are those
  /// of x = 0 (monomial 0 is 1 there, the rest 0).
  void build(const Eigen::Ref<const Matrix<T>>& X, Monomials<T>& M) {
    const Index stored = stored_count();
    transpose_padded(X, M.XT_);
    M.M_.resize(stored, X.rows());
    M.k_ = features_.size();
    // One flat loop (a loop over each parent's children, whose length varies, would cost a
    // branch misprediction per parent): monomial f is its parent's times its last coordinate.
    // The tables are read through local pointers: packet stores may alias anything, so
    // members would be reloaded after every store.
    const std::int32_t* parent = M.parent_ = features_.parents();
    const std::int32_t* last = M.last_ = features_.last_coordinates();
    for (Index s = 0; s < M.strips(); ++s) {
      T* m = M.M_.strip(s);
      const T* x = M.XT_.data() + s * W;  // x + c * stride: coordinate c of the strip's rows
      const Index stride = M.XT_.cols();
      simd::store(m, simd::broadcast(T(1)));
      for (Index f = 1; f < stored; ++f)
        simd::store(m + f * W,
                    simd::mul(simd::load(m + parent[f] * W), simd::load(x + last[f] * stride)));
    }
  }

  /// dX (C x d) += the gradient, with respect to X, of sum_{f,r} G(f, r) M(f, r), for the
  /// block M that build(X, M) produced. G is given by `gradient`: gradient.begin_strip(s), then
  /// gradient(f) is the packet G(f, rows of strip s); each is asked for exactly once.
  /// Gradient::columns is the number of state columns behind G when known at compile time.
  ///
  /// In build() each parent's children were M[p] * x_c for c = last(p)..d-1, so the parents are
  /// visited from the highest degree down, and a child's total gradient is complete before its
  /// parent is visited. Only the parents' totals are kept (a strip of C(d + g - 1, g - 1)
  /// packets); the leaves' (degree g) come straight from G. `gradient` is taken by value: a
  /// local copy can live in registers, where packet stores (which may alias anything) would
  /// force a referenced object's members to be reloaded.
  template <class Gradient>
  void backward(const Eigen::Ref<const Matrix<T>>& X, const Monomials<T>& M, Gradient gradient,
                Eigen::Ref<Matrix<T>> dX) {
    // With d known at compile time a strip's dx stays in registers; in memory each parent's
    // read-modify-write of dx waits on the previous parent's. The routes' gradients have d + 1
    // columns (at most 12 when formed in the sweep: d <= 11), so that case gets its own sweep;
    // anything else the general one.
    if constexpr (Gradient::columns >= 2) {
      if (features_.dim() == Gradient::columns - 1) {
        sweep<Gradient::columns - 1>(X, M, gradient, dX);
        return;
      }
    }
    sweep<0>(X, M, gradient, dX);
  }

 private:
  struct ParentVisit {
    Index parent, first, first_child;  // children: first_child + (c - first), c = first..d-1
  };

  // backward() for d = D, or d known only at run time (D = 0).
  template <int D, class Gradient>
  void sweep(const Eigen::Ref<const Matrix<T>>& X, const Monomials<T>& M, Gradient& gradient,
             Eigen::Ref<Matrix<T>> dX) {
    const Index C = X.rows(), d = D > 0 ? D : features_.dim();
    transpose_padded(X, XT_);
    dXT_.setZero(d, XT_.cols());
    if (features_.degree() == 0) return;  // constant features: no gradient
    const Index parents = features_.degree_begin(features_.degree());
    const Index leaf_parents = features_.degree_begin(features_.degree() - 1);
    totals_.resize(parents, W);
    const ParentVisit* visits = visits_.data();
    const Index visit_count = Index(visits_.size());
    for (Index s = 0; s < M.strips(); ++s) {
      gradient.begin_strip(s);
      const T* m = M.strip(s);
      const T* x = XT_.data() + s * W;
      T* dx = dXT_.data() + s * W;
      const Index xs = XT_.cols();  // stride between coordinates in x and dx
      T* total = totals_.data();
      simd::Packet<T> dx_held[D > 0 ? D : 1];  // dx of the strip, when D > 0
      for (auto& p : dx_held) p = simd::zero<T>();
      auto visit = [&](const ParentVisit& v, auto child_total) {
        auto dp = gradient(v.parent);
        const auto mp = simd::load(m + v.parent * W);
        auto child = [&](Index c, simd::Packet<T>& dxc) {
          const auto dchild = child_total(v.first_child + c - v.first);
          dp = simd::fma(dchild, simd::load(x + c * xs), dp);
          dxc = simd::fma(dchild, mp, dxc);
        };
        if constexpr (D > 0) {
#pragma GCC unroll 16
          for (int c = 0; c < D; ++c)
            if (c >= v.first) child(c, dx_held[c]);
        } else {
          for (Index c = v.first; c < d; ++c) {
            auto dxc = simd::load(dx + c * xs);
            child(c, dxc);
            simd::store(dx + c * xs, dxc);
          }
        }
        simd::store(total + v.parent * W, dp);
      };
      for (Index i = 0; i < visit_count; ++i) {
        const ParentVisit v = visits[i];
        if (v.parent >= leaf_parents)
          visit(v, [&](Index f) { return gradient(f); });
        else
          visit(v, [&](Index f) { return simd::load(total + f * W); });
      }
      if constexpr (D > 0)
        for (int c = 0; c < D; ++c) simd::store(dx + c * xs, dx_held[c]);
    }
    dX += dXT_.leftCols(C).transpose();
  }

  // Features of degree < g; all of them (just the constant) when g = 0.
  Index stored_count() const {
    return features_.degree() == 0 ? features_.size() : features_.degree_begin(features_.degree());
  }

  // XT = X^T with its columns padded with zeros to whole strips: (d, padded C).
  void transpose_padded(const Eigen::Ref<const Matrix<T>>& X, Matrix<T>& XT) const {
    require_shape(X, X.rows(), features_.dim(), "monomial block rows");
    XT.setZero(features_.dim(), padded_rows<T>(X.rows()));
    XT.leftCols(X.rows()) = X.transpose();
  }

  const SymmetricFeatures& features_;
  std::vector<ParentVisit> visits_;  // backward()'s order
  Matrix<T> XT_, dXT_;               // (d, padded C)
  Matrix<T> totals_;  // (parents, W): the total gradient of each parent monomial in a strip
};

}  // namespace polygrad
