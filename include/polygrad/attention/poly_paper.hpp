#pragma once
// Route "paper": Liang et al.'s gradient formulas with f~ in place of f, computed through
// row-wise Kronecker factors and prefix/suffix states, for one head (DESIGN.md section 4,
// route paper, errata corrected; chunking as in section 5). O(n k d_h^2).
//
// In the scaled coordinates of poly_approximation.hpp the paper's p = f~ o q - diag((f~ o q) 1) f~
// becomes p_ij = A~_ij (dO'_i . v_j + dz_i) and the score gradient is dt = R p, so
//     dqh_i = R sum_j A~_ij ((dO'_i . v_j) kh_j + dz_i kh_j)
//           = R [ sum_b dO'_ib (phi_i^T W)_b + dz_i phi_i^T Y ],  W = Psi^T (V (x) Kh), Y = Psi^T Kh
//     dkh_j = R [ sum_b v_jb (psi_j^T U)_b + psi_j^T Z ],         U = Phi^T (dO' (x) Qh), Z = Phi^T (dz o Qh)
//     dv_j  = psi_j^T G,                                          G = Phi^T dO'
// with (x) the row-wise Kronecker product (n x d_h^2): this is (f~ o q) K as a rank-k d_h product.
// Compared with route adjoint, R p(t) stands where p'(t) ~ R exp(R t) would.

#include "polygrad/attention/poly_forward.hpp"

namespace polygrad::poly {

namespace detail {

/// The row-wise Kronecker product: out(i, b d + e) = X(i, b) Y(i, e); (C, d^2).
template <class T, class A, class B>
void kronecker_rows(const A& X, const B& Y, Eigen::Ref<Matrix<T>> out) {
  const Index d = X.cols();
  for (Index i = 0; i < X.rows(); ++i)
    for (Index b = 0; b < d; ++b) out.row(i).segment(b * d, d) = X(i, b) * Y.row(i);
}

/// The contraction back: out(i, e) += sum_b X(i, b) Z(i, b d + e); Z: (C, d^2), X: (C, d).
template <class T, class A, class B>
void add_contracted(const A& Z, const B& X, Eigen::Ref<Matrix<T>> out) {
  const Index d = X.cols();
  for (Index i = 0; i < X.rows(); ++i)
    for (Index b = 0; b < d; ++b) out.row(i) += X(i, b) * Z.row(i).segment(b * d, d);
}

}  // namespace detail

/// dQh, dKh, dV (each n x d_h) of one head given dO, for the inputs and results of forward().
template <class T>
void backward_paper(const PolyApproximation& a, const Matrix<T>& Qh, const Matrix<T>& Kh,
                    const Matrix<T>& V, const Matrix<T>& O, const ForwardSaved<T>& saved,
                    const Matrix<T>& dO, bool causal, Index chunk, Matrix<T>& dQh,
                    Matrix<T>& dKh, Matrix<T>& dV) {
  const Index n = Qh.rows(), d = V.cols(), k = a.features.size(), dd = d * d;
  const Index chunks = detail::chunk_count(n, chunk);
  const Vector<double>& w = a.pair_weight;
  const T R = T(a.polynomial.bound);
  Matrix<T> dOz;
  Vector<T> dz;
  detail::normaliser_gradients(O, saved.z, dO, dOz, dz);
  dQh.setZero(n, d);
  dKh.setZero(n, d);
  dV.setZero(n, d);

  MonomialBlock<T> block(a.features);
  Monomials<T> Mq, Mk;          // (k, W) monomials of a strip of queries or keys
  Matrix<T> A, rows, products;  // (C, C) scores; a strip's rows and products (W, m)
  // Key-side rows [V (x) Kh, Kh] of a strip: (W, d^2 + d).
  auto key_rows = [&](Index begin, Index size) -> const Matrix<T>& {
    rows.setZero(padded_rows<T>(size), dd + d);
    detail::kronecker_rows<T>(V.middleRows(begin, size), Kh.middleRows(begin, size),
                              rows.topLeftCorner(size, dd));
    rows.topRightCorner(size, d) = Kh.middleRows(begin, size);
    return rows;
  };
  // Query-side rows [dO' (x) Qh, dz o Qh, dO'] of a strip: (W, d^2 + 2 d).
  auto query_rows = [&](Index begin, Index size) -> const Matrix<T>& {
    rows.setZero(padded_rows<T>(size), dd + 2 * d);
    detail::kronecker_rows<T>(dOz.middleRows(begin, size), Qh.middleRows(begin, size),
                              rows.topLeftCorner(size, dd));
    rows.block(0, dd, size, d) =
        Qh.middleRows(begin, size).array().colwise() * dz.segment(begin, size).array();
    rows.topRightCorner(size, d) = dOz.middleRows(begin, size);
    return rows;
  };

  // Queries: dqh from the key states [W Y] (all keys, or those of earlier chunks).
  detail::FeatureState<T> keys(k, dd + d, chunk);
  if (!causal) detail::add_whole_sequence(keys, block, Mk, Kh, w, key_rows);
  for (Index c = 0; c < chunks; ++c) {
    const detail::Chunk chunk_rows = detail::chunk_at(c, n, chunk);
    const auto [begin, size] = chunk_rows;
    const Matrix<T>& WY = causal ? keys.refresh(w) : keys.current();
    detail::for_each_strip<T>(chunk_rows, [&](Index b, Index s) {
      block.build(Qh.middleRows(b, s), Mq);
      monomials_transpose_times(Mq, WY, products);  // (W, d^2 + d)
      auto dq = dQh.middleRows(b, s);
      detail::add_contracted<T>(products.topLeftCorner(s, dd), dOz.middleRows(b, s), dq);
      dq += (products.topRightCorner(s, d).array().colwise() * dz.segment(b, s).array()).matrix();
      dq *= R;
    });
    if (!causal) continue;
    detail::for_each_strip<T>(chunk_rows, [&](Index b, Index s) {
      block.build(Kh.middleRows(b, s), Mk);
      keys.add(Mk, key_rows(b, s));
    });
    // The diagonal block, densely: dt = R A~ o (dO' V^T + dz 1^T).
    const auto Qc = Qh.middleRows(begin, size), Kc = Kh.middleRows(begin, size);
    const Matrix<T> t = Qc * Kc.transpose();
    detail::diagonal_scores(a.polynomial, t, A);
    Matrix<T> dt = (dOz.middleRows(begin, size) * V.middleRows(begin, size).transpose()).colwise() +
                   dz.segment(begin, size);
    dt = R * dt.cwiseProduct(A);
    dV.middleRows(begin, size).noalias() += A.transpose() * dOz.middleRows(begin, size);
    dQh.middleRows(begin, size).noalias() += dt * Kc;
    dKh.middleRows(begin, size).noalias() += dt.transpose() * Qc;
  }

  // Keys: dkh and dv from the query states [U Z G] (all queries, or those of later chunks).
  detail::FeatureState<T> queries(k, dd + 2 * d, chunk);
  if (!causal) detail::add_whole_sequence(queries, block, Mq, Qh, w, query_rows);
  for (Index c = chunks - 1; c >= 0; --c) {
    const detail::Chunk chunk_rows = detail::chunk_at(c, n, chunk);
    const Matrix<T>& UZG = causal ? queries.refresh(w) : queries.current();
    detail::for_each_strip<T>(chunk_rows, [&](Index b, Index s) {
      block.build(Kh.middleRows(b, s), Mk);
      monomials_transpose_times(Mk, UZG, products);  // (W, d^2 + 2 d)
      Matrix<T> dk = Matrix<T>::Zero(s, d);
      detail::add_contracted<T>(products.topLeftCorner(s, dd), V.middleRows(b, s), dk);
      dk += products.block(0, dd, s, d);
      dKh.middleRows(b, s) += R * dk;
      dV.middleRows(b, s) += products.topRightCorner(s, d);
    });
    if (!causal) continue;
    detail::for_each_strip<T>(chunk_rows, [&](Index b, Index s) {
      block.build(Qh.middleRows(b, s), Mq);
      queries.add(Mq, query_rows(b, s));
    });
  }
}

}  // namespace polygrad::poly
