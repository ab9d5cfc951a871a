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
  Monomials<T> Mq, Mk;       // (k, W) monomials of a strip of queries or keys
  Matrix<T> A, dp, products;  // (C, C) scores and p'(t); (W, d_h + 1) a strip's products
  auto values = [&](Index begin, Index size) {  // [v_j 1]
    return detail::with_ones<T>(V.middleRows(begin, size));
  };
  auto gradients = [&](Index begin, Index size) {  // [dO'_i dz_i]
    return detail::padded_chunk_rows<T>(dNum.middleRows(begin, size));
  };

  // Queries: dm(qh_i) from the key states (all keys, or those of earlier chunks).
  detail::FeatureState<T> keys(k, dh + 1, chunk);  // sum m(kh_j) [v_j 1]^T
  if (!causal) detail::add_whole_sequence(keys, block, Mk, Kh, w, values);
  for (Index c = 0; c < chunks; ++c) {
    const detail::Chunk rows = detail::chunk_at(c, n, chunk);
    const auto [begin, size] = rows;
    const Matrix<T>& S = causal ? keys.refresh(w) : keys.current();
    detail::for_each_strip<T>(rows, [&](Index b, Index s) {
      const auto Qs = Qh.middleRows(b, s);
      block.build(Qs, Mq);
      add_state_gradient(block, Qs, Mq, S, gradients(b, s), dQh.middleRows(b, s));
    });
    if (!causal) continue;
    detail::for_each_strip<T>(rows, [&](Index b, Index s) {
      block.build(Kh.middleRows(b, s), Mk);
      keys.add(Mk, values(b, s));
    });
    // The diagonal block, densely: dA = dO' V^T + dz 1^T, dt = dA o p'(t).
    const auto Qc = Qh.middleRows(begin, size), Kc = Kh.middleRows(begin, size);
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
  detail::FeatureState<T> queries(k, dh + 1, chunk);  // sum m(qh_i) [dO'_i dz_i]^T
  if (!causal) detail::add_whole_sequence(queries, block, Mq, Qh, w, gradients);
  for (Index c = chunks - 1; c >= 0; --c) {
    const detail::Chunk rows = detail::chunk_at(c, n, chunk);
    const Matrix<T>& G = causal ? queries.refresh(w) : queries.current();  // (d_h + 1, k)
    detail::for_each_strip<T>(rows, [&](Index b, Index s) {
      const auto Ks = Kh.middleRows(b, s);
      block.build(Ks, Mk);
      monomials_transpose_times(Mk, G, products);
      dV.middleRows(b, s) += products.topLeftCorner(s, dh);
      add_state_gradient(block, Ks, Mk, G, values(b, s), dKh.middleRows(b, s));
    });
    if (!causal) continue;
    detail::for_each_strip<T>(rows, [&](Index b, Index s) {
      block.build(Qh.middleRows(b, s), Mq);
      queries.add(Mq, gradients(b, s));
    });
  }
}

}  // namespace polygrad::poly
