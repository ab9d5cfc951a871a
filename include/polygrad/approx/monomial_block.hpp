#pragma once
// The monomials of a block of rows, stored feature-major, for the chunked routes.
//
// SymmetricFeatures builds phi and psi one row at a time. The routes instead need the features
// of a whole chunk of C rows, and most of their time goes into products with them, so here a
// chunk is built feature by feature: row f of the (k, C) block holds monomial f of every row,
// and each new monomial is its parent's row times one coordinate's row -- contiguous, and
// vectorised over the C rows. The weights of phi and psi are not applied: phi_f . psi_f
// carries the pair weight b_j j!/alpha! (pair_weights), which the routes fold into their
// k-row states once per chunk instead of into every feature.

#include <vector>

#include "polygrad/approx/features.hpp"

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

/// Builds and differentiates the monomials of row blocks for one SymmetricFeatures.
template <class T>
class MonomialBlock {
 public:
  explicit MonomialBlock(const SymmetricFeatures& features) : features_(features) {}

  /// M (k, C): M(f, r) = x_r^alpha_f for the rows x_r of X (C, d).
  void build(const Eigen::Ref<const Matrix<T>>& X, Matrix<T>& M) {
    const Index C = X.rows(), d = features_.dim();
    XT_ = X.transpose();  // (d, C)
    M.resize(features_.size(), C);
    M.row(0).setOnes();
    T* out = M.data() + C;
    const Index parents = features_.degree_begin(features_.degree());
    for (Index p = 0; p < parents; ++p) {
      const T* mp = M.data() + p * C;
      for (Index c = features_.last_coordinate(p); c < d; ++c, out += C) {
        const T* xc = XT_.data() + c * C;
        for (Index r = 0; r < C; ++r) out[r] = mp[r] * xc[r];
      }
    }
  }

  /// dX (C, d) += the gradient of sum_{f,r} dM(f, r) M(f, r) with respect to X, for the block
  /// M that build(X, M) produced. dM (k, C) is used as scratch: it is overwritten.
  void backward(const Eigen::Ref<const Matrix<T>>& X, const Matrix<T>& M, Matrix<T>& dM,
                Eigen::Ref<Matrix<T>> dX) {
    const Index C = X.rows(), d = features_.dim();
    XT_ = X.transpose();             // (d, C)
    dXT_.setZero(d, C);              // (d, C)
    // In build() this was M[child] = M[p] * X[c] for c = last(p)..d-1, children in order; walk
    // the parents backwards so that each dM[p] is complete before p is visited.
    Index child = features_.size();
    for (Index p = features_.degree_begin(features_.degree()) - 1; p >= 0; --p) {
      const Index first = features_.last_coordinate(p);
      child -= d - first;
      T* dp = dM.data() + p * C;
      const T* mp = M.data() + p * C;
      for (Index c = first; c < d; ++c) {
        const T* dchild = dM.data() + (child + c - first) * C;
        const T* xc = XT_.data() + c * C;
        T* dxc = dXT_.data() + c * C;
        for (Index r = 0; r < C; ++r) {
          dp[r] += dchild[r] * xc[r];
          dxc[r] += dchild[r] * mp[r];
        }
      }
    }
    dX += dXT_.transpose();
  }

 private:
  const SymmetricFeatures& features_;
  Matrix<T> XT_, dXT_;  // (d, C)
};

}  // namespace polygrad
