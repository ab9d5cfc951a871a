#pragma once
// The feature maps phi and psi of SymmetricFeatures evaluated row by row, straight from the index
// tables (design.md section 3, "Features"): the reference the tests hold the fast monomial
// blocks of monomial_block.hpp and feature_products.hpp against. Not used by the library itself.

#include <vector>

#include "polygrad/approx/features.hpp"

namespace polygrad::poly::reference {

/// out (rows x k) = w_f x^alpha_f for every row x of X, feature f built as its parent times one
/// coordinate; w is phi's or psi's weights.
template <class T>
void feature_rows(const SymmetricFeatures& F, const Eigen::Ref<const Matrix<T>>& X,
                  const std::vector<double>& w, Matrix<T>& out) {
  require<ShapeError>(X.cols() == F.dim(), "feature maps: input rows have ", X.cols(),
                      " coordinates, the features were built for ", F.dim());
  const Index k = F.size();
  out.resize(X.rows(), k);
  Vector<T> m(k);  // the raw monomials of one row
  for (Index r = 0; r < X.rows(); ++r) {
    F.monomials(X.row(r), m);
    for (Index f = 0; f < k; ++f) out(r, f) = T(w[std::size_t(f)]) * m(f);
  }
}

/// dX += J(x_r)^T dF_r for every row: the features' product rule, run from the last feature back
/// to the first so that each monomial's adjoint is complete before its parent receives it.
template <class T>
void feature_rows_backward(const SymmetricFeatures& F, const Eigen::Ref<const Matrix<T>>& X,
                           const std::vector<double>& w, const Matrix<T>& dF, Matrix<T>& dX) {
  require<ShapeError>(X.cols() == F.dim(), "feature maps: input rows have ", X.cols(),
                      " coordinates, the features were built for ", F.dim());
  require_shape(dF, X.rows(), F.size(), "feature gradient");
  require_shape(dX, X.rows(), F.dim(), "dX");
  const Index k = F.size();
  Vector<T> m(k), dm(k);
  for (Index r = 0; r < X.rows(); ++r) {
    F.monomials(X.row(r), m);
    for (Index f = 0; f < k; ++f) dm(f) = T(w[std::size_t(f)]) * dF(r, f);
    for (Index f = k - 1; f >= 1; --f) {
      const Index p = F.parent(f);
      const int c = F.last_coordinate(f);
      dX(r, c) += dm(f) * m(p);
      dm(p) += dm(f) * X(r, c);
    }
  }
}

/// The weights of one side: phi's carry the sign of b_j, psi's do not.
inline std::vector<double> side_weights(const SymmetricFeatures& F, bool phi_side) {
  std::vector<double> w(std::size_t(F.size()));
  for (Index f = 0; f < F.size(); ++f) w[std::size_t(f)] = phi_side ? F.phi_weight(f) : F.weight(f);
  return w;
}

/// out (rows x k) = phi of each row of X (rows x d); out is resized if needed.
template <class T>
void phi(const SymmetricFeatures& F, const Eigen::Ref<const Matrix<detail::non_deduced_t<T>>>& X,
         Matrix<T>& out) {
  feature_rows<T>(F, X, side_weights(F, true), out);
}

/// out (rows x k) = psi of each row of X (rows x d); out is resized if needed.
template <class T>
void psi(const SymmetricFeatures& F, const Eigen::Ref<const Matrix<detail::non_deduced_t<T>>>& X,
         Matrix<T>& out) {
  feature_rows<T>(F, X, side_weights(F, false), out);
}

/// dX (rows x d) += J_phi(x_r)^T dPhi_r for every row r; dPhi is rows x k.
template <class T>
void phi_backward(const SymmetricFeatures& F,
                  const Eigen::Ref<const Matrix<detail::non_deduced_t<T>>>& X,
                  const Matrix<T>& dPhi, Matrix<T>& dX) {
  feature_rows_backward<T>(F, X, side_weights(F, true), dPhi, dX);
}

/// dX (rows x d) += J_psi(x_r)^T dPsi_r for every row r; dPsi is rows x k.
template <class T>
void psi_backward(const SymmetricFeatures& F,
                  const Eigen::Ref<const Matrix<detail::non_deduced_t<T>>>& X,
                  const Matrix<T>& dPsi, Matrix<T>& dX) {
  feature_rows_backward<T>(F, X, side_weights(F, false), dPsi, dX);
}

}  // namespace polygrad::poly::reference
