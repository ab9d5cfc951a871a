#pragma once
// The dense reference of the polynomial approximation: the same approximate attention as the
// chunked routes, with the n x n matrix P(S) held in memory. O(n^2) memory; tests only.
//
// Its purpose is to separate the low-rank machinery (features, states, chunks) from the
// approximation error: the routes must agree with this file to rounding.

#include "polygrad/attention/poly_approximation.hpp"

/// The dense reference of polynomial attention, with the n x n matrix P(S) in memory; for
/// tests.
namespace polygrad::poly::reference {

using polygrad::detail::scaled_keys;
using polygrad::detail::scaled_queries;

/// The masked matrix A~ = M o p(Qh Kh^T) of one head: (n, n).
template <class T>
Matrix<T> approximate_scores(const Matrix<T>& Qh, const Matrix<T>& Kh,
                             const ExpPolynomial& polynomial, bool causal,
                             Matrix<T>* derivative = nullptr) {
  const Matrix<T> t = Qh * Kh.transpose();  // (n, n)
  const Index n = t.rows();
  Matrix<T> A(n, n);
  if (derivative) derivative->resize(n, n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {
      const bool visible = !causal || j <= i;
      A(i, j) = visible ? T(polynomial(double(t(i, j)))) : T(0);
      if (derivative)
        (*derivative)(i, j) = visible ? T(polynomial.derivative(double(t(i, j)))) : T(0);
    }
  }
  return A;
}

/// O~ = diag(z~)^-1 A~ V for one head (design.md section 3).
template <class T>
Matrix<T> forward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                  const PolyApproximation& a, bool causal) {
  const Matrix<T> A =
      approximate_scores<T>(scaled_queries(Q, a), scaled_keys(K, a), a.polynomial, causal);
  const Vector<T> z = A.rowwise().sum();
  return (A * V).array().colwise() / z.array();
}

/// Route "adjoint": the exact gradient of forward() with the approximation held fixed.
template <class T>
void backward_adjoint(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                      const Matrix<T>& dO, const PolyApproximation& a, bool causal, Matrix<T>& dQ,
                      Matrix<T>& dK, Matrix<T>& dV) {
  const Matrix<T> Qh = scaled_queries(Q, a), Kh = scaled_keys(K, a);
  Matrix<T> dp;  // p'(t), (n, n)
  const Matrix<T> A = approximate_scores<T>(Qh, Kh, a.polynomial, causal, &dp);
  const Vector<T> z = A.rowwise().sum();
  const Matrix<T> O = (A * V).array().colwise() / z.array();
  const Matrix<T> dOz = dO.array().colwise() / z.array();                      // dO_i / z_i
  const Vector<T> dz = -(dO.array() * O.array()).rowwise().sum() / z.array();  // d loss / d z_i
  const Matrix<T> dA = (dOz * V.transpose()).colwise() + dz;                   // (n, n)
  const Matrix<T> dt = dA.cwiseProduct(dp);  // masked: dp is zero there
  dV = A.transpose() * dOz;
  dQ = (dt * Kh) * T(a.q_scale);
  dK = (dt.transpose() * Qh) * T(a.k_scale);
}

/// Route "paper": Liang et al.'s formulas, with the errata of design.md section 4 corrected,
/// in the original coordinates: f~ = diag(z~)^-1 A~, q = dO V^T, p = f~ o q - diag((f~ o q) 1) f~,
/// dQ = c p K, dK = c p^T Q, dV = f~^T dO.
template <class T>
void backward_paper(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& dO,
                    const PolyApproximation& a, bool causal, T scale, Matrix<T>& dQ, Matrix<T>& dK,
                    Matrix<T>& dV) {
  const Matrix<T> A =
      approximate_scores<T>(scaled_queries(Q, a), scaled_keys(K, a), a.polynomial, causal);
  const Vector<T> z = A.rowwise().sum();
  const Matrix<T> f = A.array().colwise() / z.array();  // (n, n)
  const Matrix<T> q = dO * V.transpose();               // (n, n)
  const Matrix<T> fq = f.cwiseProduct(q);               // (n, n)
  const Vector<T> fq_rows = fq.rowwise().sum();
  const Matrix<T> p = fq - (f.array().colwise() * fq_rows.array()).matrix();  // (n, n)
  dV = f.transpose() * dO;
  dQ = scale * p * K;
  dK = scale * p.transpose() * Q;
}

}  // namespace polygrad::poly::reference
