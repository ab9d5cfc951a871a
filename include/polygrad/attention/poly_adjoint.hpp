#pragma once
// Route "adjoint": the exact gradient of the approximate forward of poly_forward.hpp, for one
// head (design.md section 4, route adjoint; chunking as in section 5). O(n k d_h).
//
// With dO' = dO / z~ and dz as in poly_forward.hpp, every visible pair (i, j) receives
// dA~_ij = dO'_i . v_j + dz_i, so across chunks, with m(x) the monomials and w the pair
// weights of monomial_block.hpp,
//     dm(qh_i) = diag(w) [S_i s_i] [dO'_i; dz_i]     (prefix states of earlier keys)
//     dm(kh_j) = diag(w) [G_j g_j] [v_j; 1]          (suffix states of later queries)
//     dv_j    += G_j^T diag(w) m(kh_j)
// and inside a causal chunk dt = dA~ o p'(t) is applied to the C x C scores directly. Two scans:
// forward over the key states (dQ and the diagonal blocks), reverse over the query states
// (dK, dV).

#include "polygrad/attention/poly_forward.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad::poly {

/// The gradients `out` of one head given dO, for the inputs of forward() and what it returned
/// (`result`: O and z). `links` join the scans to other shards'.
template <class T>
void backward_adjoint(const PolyApproximation& a, const ConstMatrixRef<T>& Q,
                      const ConstMatrixRef<T>& K, const ConstMatrixRef<T>& V,
                      const ForwardOutput<T>& result, const ConstMatrixRef<T>& dO, bool causal,
                      Index chunk, HeadGradients<T> out, const BackwardLinks& links = {}) {
  const ConstMatrixRef<T>& O = result.O;
  const ConstVectorRef<T>& z = result.z;
  MatrixRef<T>& dQ = out.dQ;
  MatrixRef<T>& dK = out.dK;
  MatrixRef<T>& dV = out.dV;
  const Index n = Q.rows(), dh = V.cols(), k = a.features.size();
  dQ.setZero();
  dK.setZero();
  dV.setZero();
  detail::Workspace<T> ws(a);

  // Queries: dm(qh_i) from the key states (all keys, or those of earlier chunks), and the
  // diagonal blocks.
  FeatureState<T> keys(k, dh + 1, chunk);  // sum m(kh_j) [v_j 1]^T
  auto read_keys = [&](Chunk c, const Matrix<T>& S) {
    detail::load_queries(a, Q, c, ws);
    detail::load_gradients(O, z, dO, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      const auto qs = ws.qh.middleRows(b, s);
      ws.block.build(qs, ws.Mq);
      add_state_gradient(ws.block, qs, ws.Mq, S, detail::strip_rows(ws.gradients, b),
                         dQ.middleRows(c.begin + b, s), ws.scratch);
    });
    if (!causal) return;
    // The diagonal block, densely: dA = dO' V^T + dz 1^T, dt = dA o p'(t).
    detail::load_keys(a, K, c, ws);
    detail::load_diagonal_block(a, ws, true);
    const auto dOz = ws.gradients.topLeftCorner(c.size, dh);
    const auto Vc = V.middleRows(c.begin, c.size);
    ws.dA.noalias() = dOz * Vc.transpose();
    ws.dA.colwise() += ws.gradients.col(dh).head(c.size);
    ws.dA = ws.dA.cwiseProduct(ws.dp);  // now dt; zero above the diagonal
    dV.middleRows(c.begin, c.size).noalias() += ws.A.transpose() * dOz;
    dQ.middleRows(c.begin, c.size).noalias() += ws.dA * ws.kh;
    dK.middleRows(c.begin, c.size).noalias() += ws.dA.transpose() * ws.qh;
  };
  auto add_keys = [&](Chunk c, FeatureState<T>& state) { detail::add_keys(a, K, V, c, state, ws); };
  auto key_pass = [&] {
    scan(causal, ChunkScan(n, chunk, ScanOrder::forward), keys, a.pair_weight, read_keys, add_keys,
         links.keys);
  };

  // Keys: dm(kh_j) and dv_j from the query states (all queries, or those of later chunks).
  FeatureState<T> queries(k, dh + 1, chunk);  // sum m(qh_i) [dO'_i dz_i]^T
  auto read_queries = [&](Chunk c, const Matrix<T>& G) {
    detail::load_keys(a, K, c, ws);
    detail::load_values(V, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      const auto ks = ws.kh.middleRows(b, s);
      ws.block.build(ks, ws.Mk);
      monomials_transpose_times(ws.Mk, G, ws.products);
      dV.middleRows(c.begin + b, s) += ws.products.topLeftCorner(s, dh);
      add_state_gradient(ws.block, ks, ws.Mk, G, detail::strip_rows(ws.values, b),
                         dK.middleRows(c.begin + b, s), ws.scratch);
    });
  };
  auto add_queries = [&](Chunk c, FeatureState<T>& state) {
    detail::load_queries(a, Q, c, ws);
    detail::load_gradients(O, z, dO, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.qh.middleRows(b, s), ws.Mq);
      state.add(ws.Mq, detail::strip_rows(ws.gradients, b), ws.scratch);
    });
  };
  auto query_pass = [&] {
    scan(causal, ChunkScan(n, chunk, ScanOrder::reverse), queries, a.pair_weight, read_queries,
         add_queries, links.queries);
  };
  links.run(key_pass, query_pass);

  // Back from the scaled coordinates: qh = q q_scale, kh = (k - centre) k_scale.
  dQ *= T(a.q_scale);
  dK *= T(a.k_scale);
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_POLY_ADJOINT_INSTANCES(how, T)                                                \
  how void backward_adjoint<T>(const PolyApproximation&, const ConstMatrixRef<T>&,             \
                               const ConstMatrixRef<T>&, const ConstMatrixRef<T>&,             \
                               const ForwardOutput<T>&, const ConstMatrixRef<T>&, bool, Index, \
                               HeadGradients<T>, const BackwardLinks&);
POLYGRAD_INSTANCES(POLYGRAD_POLY_ADJOINT_INSTANCES)

}  // namespace polygrad::poly
