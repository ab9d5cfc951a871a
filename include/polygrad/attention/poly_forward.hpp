#pragma once
// The forward pass of polynomial attention for one head, chunked (design.md sections 3 and 5),
// and what the two backward routes share with it: a head's workspace and the loading of a
// chunk's rows.
//
// The inputs are one head's raw queries, keys and values (views, n x d_h). Each chunk's rows are
// scaled into the workspace as poly_approximation.hpp says, t_ij = qh_i . kh_j and
// A~_ij = p(t_ij). Across chunks A~ is the low-rank phi(qh_i) . psi(kh_j), carried in a running
// feature state (the scan of poly_scan.hpp); inside a causal chunk the C x C scores are
// evaluated directly. Monomials are built one strip at a time and never stored for the whole
// sequence. Nothing is allocated per chunk or per strip: the workspace's buffers keep their
// storage from one chunk to the next.

#include <algorithm>

#include "polygrad/attention/poly_approximation.hpp"
#include "polygrad/attention/poly_scan.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad::poly {

namespace detail {

/// The buffers of one head's route, made once per call and reused by every chunk and strip.
template <class T>
struct Workspace {
  explicit Workspace(const PolyApproximation& a)
      : block(a.features), centre(a.key_centre.transpose().template cast<T>()) {}
  MonomialBlock<T> block;
  RowVector<T> centre;  // (d_h) the key centre, empty when keys are not centred
  Monomials<T> Mq, Mk;  // (k, W) monomials of a strip of queries or keys
  ProductScratch<T> scratch;
  Matrix<T> qh, kh;        // (C, d_h) a chunk's scaled queries and keys
  Matrix<T> values;        // (padded C, d_h + 1) [v_j 1] of a chunk
  Matrix<T> gradients;     // (padded C, d_h + 1) [dO'_i dz_i] of a chunk
  Matrix<T> rows;          // (W, m) the rows of a strip entering a wide state (route paper)
  Matrix<T> products;      // (W, m) a strip's products with a state
  Matrix<T> numerator;     // (C, d_h + 1) [sum_j A_ij v_j, z_i] of a chunk
  Matrix<T> t, A, dp, dA;  // (C, C) a diagonal block's t, p(t), p'(t) and score gradient
  Matrix<T> dx;            // (W, d_h) a strip's gradient before it is scaled (route paper)
};

/// qh = q * q_scale for the rows of a chunk: (C, d_h).
template <class T>
void load_queries(const PolyApproximation& a, const ConstMatrixRef<T>& Q, Chunk c,
                  Workspace<T>& ws) {
  ws.qh = Q.middleRows(c.begin, c.size) * T(a.q_scale);
}

/// kh = (k - key_centre) * k_scale for the rows of a chunk: (C, d_h).
template <class T>
void load_keys(const PolyApproximation& a, const ConstMatrixRef<T>& K, Chunk c, Workspace<T>& ws) {
  if (ws.centre.size() == 0) {
    ws.kh = K.middleRows(c.begin, c.size) * T(a.k_scale);
  } else {
    ws.kh = (K.middleRows(c.begin, c.size).rowwise() - ws.centre) * T(a.k_scale);
  }
}

/// [v_j 1] for the rows of a chunk, zero-padded to whole strips: one product then carries sums
/// and counts.
template <class T>
void load_values(const ConstMatrixRef<T>& V, Chunk c, Workspace<T>& ws) {
  const Index d = V.cols();
  ws.values.resize(padded_rows<T>(c.size), d + 1);
  ws.values.topLeftCorner(c.size, d) = V.middleRows(c.begin, c.size);
  ws.values.col(d).head(c.size).setOnes();
  ws.values.bottomRows(ws.values.rows() - c.size).setZero();
}

/// [dO'_i dz_i] for the rows of a chunk, zero-padded to whole strips, with dO' = dO / z~ and
/// dz = -(dO . O~) / z~: the gradient reaching the unnormalised numerator and the normaliser
/// (design.md section 4, route adjoint; the paper route needs the same two, since its dS equals
/// A~ o (dO' V^T + dz 1^T)).
template <class T>
void load_gradients(const ConstMatrixRef<T>& O, const ConstVectorRef<T>& z,
                    const ConstMatrixRef<T>& dO, Chunk c, Workspace<T>& ws) {
  const Index d = O.cols();
  const auto zc = z.segment(c.begin, c.size).array();
  const auto dOc = dO.middleRows(c.begin, c.size);
  ws.gradients.resize(padded_rows<T>(c.size), d + 1);
  ws.gradients.topLeftCorner(c.size, d) = dOc.array().colwise() / zc;
  ws.gradients.col(d).head(c.size) =
      -(dOc.array() * O.middleRows(c.begin, c.size).array()).rowwise().sum() / zc;
  ws.gradients.bottomRows(ws.gradients.rows() - c.size).setZero();
}

/// Rows [begin, begin + W) of a chunk buffer padded to whole strips: one strip's rows.
template <class T>
auto strip_rows(const Matrix<T>& padded, Index begin) {
  return padded.middleRows(begin, simd::width<T>);
}

/// Adds the keys of a chunk to a state of sum_j m(kh_j) [v_j 1]^T: (k, d_h + 1).
template <class T>
void add_keys(const PolyApproximation& a, const ConstMatrixRef<T>& K, const ConstMatrixRef<T>& V,
              Chunk c, FeatureState<T>& state, Workspace<T>& ws) {
  load_keys(a, K, c, ws);
  load_values(V, c, ws);
  for_each_strip<T>(c, [&](Index b, Index s) {
    ws.block.build(ws.kh.middleRows(b, s), ws.Mk);
    state.add(ws.Mk, strip_rows(ws.values, b), ws.scratch);
  });
}

/// A = p(t) and, if wanted, dp = p'(t) on a causal diagonal block t = Qh_c Kh_c^T (C x C),
/// with the entries above the diagonal set to zero.
template <class T>
void diagonal_scores(const ExpPolynomial& p, const Matrix<T>& t, Matrix<T>& A,
                     Matrix<T>* dp = nullptr) {
  const int g = p.degree;
  A.setConstant(t.rows(), t.cols(), T(p.coeffs[g]));
  for (int j = g - 1; j >= 0; --j) A = (A.array() * t.array() + T(p.coeffs[j])).matrix();
  A.template triangularView<Eigen::StrictlyUpper>().setZero();
  if (!dp) return;
  dp->setConstant(t.rows(), t.cols(), T(g * p.coeffs[g]));
  if (g == 0) dp->setZero();
  for (int j = g - 1; j >= 1; --j) *dp = (dp->array() * t.array() + T(j * p.coeffs[j])).matrix();
  dp->template triangularView<Eigen::StrictlyUpper>().setZero();
}

/// The scores of a causal chunk against its own keys: ws.t = qh kh^T and ws.A = p(t), with
/// ws.dp = p'(t) if asked. Expects the chunk's qh and kh loaded.
template <class T>
void load_diagonal_block(const PolyApproximation& a, Workspace<T>& ws, bool derivative) {
  ws.t.noalias() = ws.qh * ws.kh.transpose();
  diagonal_scores(a.polynomial, ws.t, ws.A, derivative ? &ws.dp : nullptr);
}

/// Throws NumericError unless every normaliser is positive and finite. A certified plan
/// guarantees it (design.md section 3); otherwise the message says which promise failed.
template <class T>
void require_positive_normalisers(const PolyApproximation& a, const ConstVectorRef<T>& z,
                                  Index offset) {
  for (Index i = 0; i < z.size(); ++i) {
    if (z(i) > 0 && std::isfinite(double(z(i)))) continue;
    const HeadPlan& plan = a.plan;
    std::string why;
    if (plan.exp_error >= 1) {
      why = polygrad::detail::concat(
          "the degree-", plan.degree, " polynomial certifies no error bound (", plan.exp_error,
          " >= 1) on [-R, R], R = ", plan.bound,
          ", and is not positive on these scores: raise the degree, or let ", "epsilon choose it");
    } else if (!plan.certified) {
      why = polygrad::detail::concat(
          "the scores are not within the given bound R = ", plan.bound, " (Cauchy-Schwarz gives ",
          plan.cauchy_schwarz_bound,
          "): use a larger bound, QK normalisation, or the automatic bound");
    } else {
      why = "rounding broke the certified positivity: use double, or a tighter epsilon";
    }
    throw NumericError(polygrad::detail::concat("polynomial attention: normaliser of row ",
                                                offset + i, " is ", z(i), "; ", why));
  }
}

}  // namespace detail

/// What forward() computed for one head that its backward route reads again: the output O
/// (n x d_h) and the normalisers z~ (n).
template <class T>
struct ForwardOutput {
  ConstMatrixRef<T> O;  ///< (n, d_h) the head's output
  ConstVectorRef<T> z;  ///< (n) its normalisers z~
};

/// What a backward route assigns: dQ, dK, dV (each n x d_h), with respect to the raw Q, K, V.
template <class T>
struct HeadGradients {
  /// (n, d_h) each.
  ///@{
  MatrixRef<T> dQ, dK, dV;
  ///@}
};

/// How the two passes of a backward route join the other shards' (poly_scan.hpp): the key
/// states run in forward order, the query states in reverse. `queries_first` runs the query
/// pass first (a shard late in the sequence has its query start soonest).
struct BackwardLinks {
  /// The links of the key-state pass (forward order) and of the query-state pass (reverse).
  ///@{
  ScanLink keys, queries;
  ///@}
  bool queries_first = false;  ///< run the query pass before the key pass

  /// Runs the two passes of a backward route in the order these links ask for.
  template <class KeyPass, class QueryPass>
  void run(KeyPass&& key_pass, QueryPass&& query_pass) const {
    if (queries_first) {
      query_pass();
      key_pass();
    } else {
      key_pass();
      query_pass();
    }
  }
};

/// O~ (n x d_h) and the normalisers z~ (n) of one head, from its raw Q, K, V (n x d_h) and the
/// approximation of poly_approximation.hpp. `link` joins the scan to other shards'.
template <class T>
void forward(const PolyApproximation& a, const ConstMatrixRef<T>& Q, const ConstMatrixRef<T>& K,
             const ConstMatrixRef<T>& V, bool causal, Index chunk, MatrixRef<T> O, VectorRef<T> z,
             const ScanLink& link = {}) {
  const Index n = Q.rows(), dh = V.cols(), k = a.features.size();
  require<ShapeError>(O.rows() == n && O.cols() == dh && z.size() == n, "poly::forward: O must be ",
                      n, " x ", dh, " and z of length ", n);
  detail::Workspace<T> ws(a);
  // keys = sum_j m(kh_j) [v_j 1]^T over the keys seen so far: (k, d_h + 1).
  FeatureState<T> keys(k, dh + 1, chunk);
  auto read = [&](Chunk c, const Matrix<T>& S) {
    detail::load_queries(a, Q, c, ws);
    ws.numerator.resize(c.size, dh + 1);
    for_each_strip<T>(c, [&](Index b, Index s) {
      ws.block.build(ws.qh.middleRows(b, s), ws.Mq);
      monomials_transpose_times(ws.Mq, S, ws.products);
      ws.numerator.middleRows(b, s) = ws.products.topRows(s);
    });
    if (causal) {
      detail::load_keys(a, K, c, ws);
      detail::load_diagonal_block(a, ws, false);
      ws.numerator.leftCols(dh).noalias() += ws.A * V.middleRows(c.begin, c.size);
      ws.numerator.col(dh) += ws.A.rowwise().sum();
    }
    auto zc = z.segment(c.begin, c.size);
    zc = ws.numerator.col(dh);
    detail::require_positive_normalisers<T>(a, zc, c.begin);
    O.middleRows(c.begin, c.size) = ws.numerator.leftCols(dh).array().colwise() / zc.array();
  };
  auto add = [&](Chunk c, FeatureState<T>& state) { detail::add_keys(a, K, V, c, state, ws); };
  scan(causal, ChunkScan(n, chunk, ScanOrder::forward), keys, a.pair_weight, read, add, link);
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_POLY_FORWARD_INSTANCES(how, T)                                        \
  how void forward<T>(const PolyApproximation&, const ConstMatrixRef<T>&,              \
                      const ConstMatrixRef<T>&, const ConstMatrixRef<T>&, bool, Index, \
                      MatrixRef<T>, VectorRef<T>, const ScanLink&);
POLYGRAD_INSTANCES(POLYGRAD_POLY_FORWARD_INSTANCES)

}  // namespace polygrad::poly
