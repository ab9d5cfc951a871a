#pragma once
// Route "paper": Liang et al.'s gradient formulas with f~ in place of f, computed through
// row-wise Kronecker factors and prefix/suffix states, for one head (design.md section 4,
// route paper, errata corrected; chunking as in section 5). O(n k d_h^2).
//
// In the scaled coordinates of poly_approximation.hpp the paper's p = f~ o q - diag((f~ o q) 1) f~
// becomes p_ij = A~_ij (dO'_i . v_j + dz_i) and the score gradient is dt = R p, so
//     dqh_i = R sum_j A~_ij ((dO'_i . v_j) kh_j + dz_i kh_j)
//           = R [ sum_b dO'_ib (phi_i^T W)_b + dz_i phi_i^T Y ],  W = Psi^T (V (x) Kh), Y = Psi^T Kh
//     dkh_j = R [ sum_b v_jb (psi_j^T U)_b + psi_j^T Z ],         U = Phi^T (dO' (x) Qh), Z = Phi^T (dz o Qh)
//     dv_j  = psi_j^T G,                                          G = Phi^T dO'
// with (x) the row-wise Kronecker product (n x d_h^2): this is (f~ o q) K as a rank-k d_h product.
// Compared with route adjoint, R p(t) stands where p'(t) ~ R exp(R t) would. Two scans, as in
// route adjoint, over states of d_h^2 + d_h and d_h^2 + 2 d_h columns.

#include "polygrad/attention/poly_forward.hpp"
#include "polygrad/core/instances.hpp"

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

/// The gradients `out` of one head given dO, for the inputs of forward() and what it returned
/// (`result`: O and z). `links` join the scans to other shards'.
template <class T>
void backward_paper(const PolyApproximation& a, const ConstMatrixRef<T>& Q,
                    const ConstMatrixRef<T>& K, const ConstMatrixRef<T>& V,
                    const ForwardOutput<T>& result, const ConstMatrixRef<T>& dO, bool causal,
                    Index chunk, HeadGradients<T> out, const BackwardLinks& links = {}) {
  const ConstMatrixRef<T>& O = result.O;
  const ConstVectorRef<T>& z = result.z;
  MatrixRef<T>& dQ = out.dQ;
  MatrixRef<T>& dK = out.dK;
  MatrixRef<T>& dV = out.dV;
  require<ShapeError>(V.cols() == Q.cols(), "the paper route needs values as wide as queries ",
                      "and keys (its states pair each value coordinate with each query ",
                      "coordinate), got ", V.cols(), " and ", Q.cols(),
                      "; route adjoint takes values of any width");
  constexpr Index W = simd::width<T>;
  const Index n = Q.rows(), d = V.cols(), k = a.features.size(), dd = d * d;
  const T R = T(a.polynomial.bound);
  dQ.setZero();
  dK.setZero();
  dV.setZero();
  detail::Workspace<T> ws(a);
  // Key-side rows [V (x) Kh, Kh] of a strip of the chunk loaded in ws: (W, d^2 + d).
  auto key_rows = [&](Chunk c, Index b, Index s) {
    ws.rows.setZero(W, dd + d);
    detail::kronecker_rows<T>(V.middleRows(c.begin + b, s), ws.kh.middleRows(b, s),
                              ws.rows.topLeftCorner(s, dd));
    ws.rows.topRightCorner(s, d) = ws.kh.middleRows(b, s);
  };
  // Query-side rows [dO' (x) Qh, dz o Qh, dO'] of a strip: (W, d^2 + 2 d).
  auto query_rows = [&](Index b, Index s) {
    const auto dOz = ws.gradients.block(b, 0, s, d);
    const auto dz = ws.gradients.col(d).segment(b, s);
    ws.rows.setZero(W, dd + 2 * d);
    detail::kronecker_rows<T>(dOz, ws.qh.middleRows(b, s), ws.rows.topLeftCorner(s, dd));
    ws.rows.block(0, dd, s, d) = ws.qh.middleRows(b, s).array().colwise() * dz.array();
    ws.rows.topRightCorner(s, d) = dOz;
  };

  // Queries: dqh from the key states [W Y] (all keys, or those of earlier chunks), and the
  // diagonal blocks.
  FeatureState<T> keys(k, dd + d, chunk);
  auto read_keys = [&](Chunk c, const Matrix<T>& WY) {
    detail::load_queries(a, Q, c, ws);
    detail::load_gradients(O, z, dO, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.qh.middleRows(b, s), ws.Mq);
      monomials_transpose_times(ws.Mq, WY, ws.products);  // (W, d^2 + d)
      const auto dOz = ws.gradients.block(b, 0, s, d);
      const auto dz = ws.gradients.col(d).segment(b, s);
      ws.dx = (ws.products.topRightCorner(s, d).array().colwise() * dz.array()).matrix();
      detail::add_contracted<T>(ws.products.topLeftCorner(s, dd), dOz, ws.dx);
      dQ.middleRows(c.begin + b, s) += R * ws.dx;
    });
    if (!causal) return;
    // The diagonal block, densely: dt = R A~ o (dO' V^T + dz 1^T).
    detail::load_keys(a, K, c, ws);
    detail::load_diagonal_block(a, ws, false);
    const auto dOz = ws.gradients.topLeftCorner(c.size, d);
    ws.dA.noalias() = dOz * V.middleRows(c.begin, c.size).transpose();
    ws.dA.colwise() += ws.gradients.col(d).head(c.size);
    ws.dA = R * ws.dA.cwiseProduct(ws.A);
    dV.middleRows(c.begin, c.size).noalias() += ws.A.transpose() * dOz;
    dQ.middleRows(c.begin, c.size).noalias() += ws.dA * ws.kh;
    dK.middleRows(c.begin, c.size).noalias() += ws.dA.transpose() * ws.qh;
  };
  auto add_keys = [&](Chunk c, FeatureState<T>& state) {
    detail::load_keys(a, K, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.kh.middleRows(b, s), ws.Mk);
      key_rows(c, b, s);
      state.add(ws.Mk, ws.rows, ws.scratch);
    });
  };
  auto key_pass = [&] {
    scan(causal, ChunkScan(n, chunk, ScanOrder::forward), keys, a.pair_weight, read_keys, add_keys,
         links.keys);
  };

  // Keys: dkh and dv from the query states [U Z G] (all queries, or those of later chunks).
  FeatureState<T> queries(k, dd + 2 * d, chunk);
  auto read_queries = [&](Chunk c, const Matrix<T>& UZG) {
    detail::load_keys(a, K, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.kh.middleRows(b, s), ws.Mk);
      monomials_transpose_times(ws.Mk, UZG, ws.products);  // (W, d^2 + 2 d)
      ws.dx = ws.products.block(0, dd, s, d);
      detail::add_contracted<T>(ws.products.topLeftCorner(s, dd), V.middleRows(c.begin + b, s),
                                ws.dx);
      dK.middleRows(c.begin + b, s) += R * ws.dx;
      dV.middleRows(c.begin + b, s) += ws.products.topRightCorner(s, d);
    });
  };
  auto add_queries = [&](Chunk c, FeatureState<T>& state) {
    detail::load_queries(a, Q, c, ws);
    detail::load_gradients(O, z, dO, c, ws);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.qh.middleRows(b, s), ws.Mq);
      query_rows(b, s);
      state.add(ws.Mq, ws.rows, ws.scratch);
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
#define POLYGRAD_POLY_PAPER_INSTANCES(how, T)                                                \
  how void backward_paper<T>(const PolyApproximation&, const ConstMatrixRef<T>&,             \
                             const ConstMatrixRef<T>&, const ConstMatrixRef<T>&,             \
                             const ForwardOutput<T>&, const ConstMatrixRef<T>&, bool, Index, \
                             HeadGradients<T>, const BackwardLinks&);
POLYGRAD_INSTANCES(POLYGRAD_POLY_PAPER_INSTANCES)

}  // namespace polygrad::poly
