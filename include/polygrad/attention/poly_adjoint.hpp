#pragma once
// Route "adjoint": the exact gradient of the approximate forward of poly_forward.hpp, for one
// head (DESIGN.md section 4, route adjoint; chunking as in section 5). O(n k d_h).
//
// With dO' = dO / z~ and dz as in poly_forward.hpp, every visible pair (i, j) receives
// dA~_ij = dO'_i . v_j + dz_i, so across chunks, with m(x) the monomials and w the pair
// weights of monomial_block.hpp,
//     dm(qh_i) = diag(w) [S_i s_i] [dO'_i; dz_i]     (prefix states of earlier keys)
//     dm(kh_j) = diag(w) [G_j g_j] [v_j; 1]          (suffix states of later queries)
//     dv_j    += G_j^T diag(w) m(kh_j)
// and inside a causal chunk dt = dA~ o p'(t) is applied to the C x C scores directly.

#include "polygrad/attention/poly_forward.hpp"

namespace polygrad::poly {

/// dQh, dKh, dV (each n x d_h) of one head given dO, for the inputs and results of forward().
template <class T>
void backward_adjoint(const PolyApproximation& a, const Matrix<T>& Qh, const Matrix<T>& Kh,
                      const Matrix<T>& V, const Matrix<T>& O, const ForwardSaved<T>& saved,
                      const Matrix<T>& dO, bool causal, Index chunk, Matrix<T>& dQh,
                      Matrix<T>& dKh, Matrix<T>& dV) {
  const Index n = Qh.rows(), dh = V.cols(), k = a.features.size();
  const Index chunks = detail::chunk_count(n, chunk);
  const Vector<double>& w = a.pair_weight;
  Matrix<T> dOz;
  Vector<T> dz;
  detail::normaliser_gradients(O, saved.z, dO, dOz, dz);
  dQh.setZero(n, dh);
  dKh.setZero(n, dh);
  dV.setZero(n, dh);
  // [dO' dz]: the gradient of [numerator z~] per query row, (n, d_h + 1).
  Matrix<T> dNum(n, dh + 1);
  dNum << dOz, dz;

  MonomialBlock<T> block(a.features);
  Matrix<T> Mq, Mk, dM, A, dp, products;  // (k, C) monomials and their gradient; (C, C) scores
  // Queries: dm(qh_i) from the key states (all keys, or those of earlier chunks).
  detail::FeatureState<T> keys(k, dh + 1);  // sum m(kh_j) [v_j 1]^T
  if (!causal) {
    for (Index c = 0; c < chunks; ++c) {
      const auto [begin, size] = detail::chunk_at(c, n, chunk);
      block.build(Kh.middleRows(begin, size), Mk);
      keys.add(Mk, detail::with_ones<T>(V.middleRows(begin, size)));
    }
    keys.refresh(w);
  }
  for (Index c = 0; c < chunks; ++c) {
    const auto [begin, size] = detail::chunk_at(c, n, chunk);
    const auto Qc = Qh.middleRows(begin, size), Kc = Kh.middleRows(begin, size);
    const Matrix<T>& S = causal ? keys.refresh(w) : keys.current();
    block.build(Qc, Mq);
    state_times_rows_transpose<T>(S, dNum.middleRows(begin, size), dM);  // (k, C)
    block.backward(Qc, Mq, dM, dQh.middleRows(begin, size));
    if (!causal) continue;
    block.build(Kc, Mk);
    keys.add(Mk, detail::with_ones<T>(V.middleRows(begin, size)));
    // The diagonal block, densely: dA = dO' V^T + dz 1^T, dt = dA o p'(t).
    const Matrix<T> t = Qc * Kc.transpose();
    detail::diagonal_scores(a.polynomial, t, A, &dp);
    Matrix<T> dA = (dOz.middleRows(begin, size) * V.middleRows(begin, size).transpose()).colwise() +
                   dz.segment(begin, size);
    dA = dA.cwiseProduct(dp);  // now dt; zero above the diagonal
    dV.middleRows(begin, size).noalias() += A.transpose() * dOz.middleRows(begin, size);
    dQh.middleRows(begin, size).noalias() += dA * Kc;
    dKh.middleRows(begin, size).noalias() += dA.transpose() * Qc;
  }

  // Keys: dm(kh_j) and dv_j from the query states (all queries, or those of later chunks).
  detail::FeatureState<T> queries(k, dh + 1);  // sum m(qh_i) [dO'_i dz_i]^T
  if (!causal) {
    for (Index c = 0; c < chunks; ++c) {
      const auto [begin, size] = detail::chunk_at(c, n, chunk);
      block.build(Qh.middleRows(begin, size), Mq);
      queries.add(Mq, dNum.middleRows(begin, size));
    }
    queries.refresh(w);
  }
  for (Index c = chunks - 1; c >= 0; --c) {
    const auto [begin, size] = detail::chunk_at(c, n, chunk);
    const auto Kc = Kh.middleRows(begin, size);
    const Matrix<T>& G = causal ? queries.refresh(w) : queries.current();  // (k, d_h + 1)
    block.build(Kc, Mk);
    monomials_transpose_times(Mk, G, products);  // (C, d_h + 1)
    dV.middleRows(begin, size) += products.leftCols(dh);
    state_times_rows_transpose<T>(G, detail::with_ones<T>(V.middleRows(begin, size)), dM);
    block.backward(Kc, Mk, dM, dKh.middleRows(begin, size));
    if (!causal) continue;
    block.build(Qh.middleRows(begin, size), Mq);
    queries.add(Mq, dNum.middleRows(begin, size));
  }
}

}  // namespace polygrad::poly
