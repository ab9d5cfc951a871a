#pragma once
// Exact attention, FlashAttention-2 style: tiles of B_q query rows against B_k key rows, online
// softmax, and a backward pass that recomputes the probabilities instead of storing them.
// Memory O(n d): no n x n buffer exists at any time.
//
// Formulas: DESIGN.md section 2. The naive reference (naive.hpp) computes the same quantities
// densely; tests/attention/test_exact.cpp compares the two.

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "polygrad/attention/method.hpp"
#include "polygrad/detail/heads.hpp"

namespace polygrad {

namespace exact {

/// Tile sizes of the exact kernels: B_q query rows meet B_k key rows per tile. At 64 x 64 the two
/// tile buffers (16 KiB each in float) stay in L1/L2; 96 to 192 measured no faster at d_h = 16.
struct Tiles {
  Index query = 64;  ///< B_q
  Index key = 64;    ///< B_k
};

}  // namespace exact

namespace detail {

/// Number of threads a parallel_for started here would get: 1 inside an active parallel region
/// (OpenMP does not nest by default) or without OpenMP.
inline Index exact_thread_count() {
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

/// Whether H heads of n x d_h are worth threads: below about 2^24 multiply-adds per product pass
/// (n = 1024 at d_h = 16) starting threads and waiting at barriers costs more than it saves, far
/// more on a loaded machine, where a descheduled thread stalls every barrier.
inline bool exact_worth_parallel(Index heads, Index n, Index dh) {
  const double work = double(heads) * double(n) * double(n) * double(dh);
  return exact_thread_count() > 1 && work >= 16777216.0;
}

/// How many interleaved parts to split each head's `blocks` tile rows into, so that H heads keep
/// every thread busy even when H is smaller than the thread count.
inline Index exact_split(bool parallel, Index heads, Index blocks) {
  if (!parallel) return 1;
  const Index threads = exact_thread_count();
  return std::max<Index>(1, std::min(blocks, (threads + heads - 1) / heads));
}

/// Calls body(i) for i in [0, count): through parallel_for when `parallel`, else in a plain loop
/// with OpenMP's thread count set to 1 for this thread meanwhile, because outside a parallel
/// region Eigen would parallelise each (small) tile product on its own, at a cost far above it.
template <class Body>
void exact_for(bool parallel, Index count, Body&& body) {
  if (parallel && count > 1) {
    parallel_for(count, body);
    return;
  }
#if defined(_OPENMP)
  struct Restore {
    int threads = omp_get_max_threads();
    ~Restore() { omp_set_num_threads(threads); }
  } restore;
  omp_set_num_threads(1);
#endif
  for (Index i = 0; i < count; ++i) body(i);
}

/// Sets the entries of a transposed tile (rows: keys j0.., columns: queries i0..) that the causal
/// mask hides to `value`: query i0 + r sees key j0 + c only if j0 + c <= i0 + r.
template <class T>
void exact_mask_tile(Eigen::Map<Matrix<T>>& tile, Index i0, Index j0, T value) {
  for (Index c = 0; c < tile.rows(); ++c) {
    tile.row(c).head(std::clamp<Index>(j0 + c - i0, 0, tile.cols())).setConstant(value);
  }
}

/// Checks the per-head kernel inputs: Q, K, V of one shape n x d_h (n, d_h >= 1), finite values,
/// a finite positive scale and positive tile sizes.
template <class T>
void exact_check_inputs(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, T scale,
                        const exact::Tiles& tiles) {
  require<ShapeError>(Q.rows() >= 1 && Q.cols() >= 1, "exact attention needs Q with at least one ",
                      "row and one column, got ", Q.rows(), " x ", Q.cols());
  require_shape(K, Q.rows(), Q.cols(), "K");
  require_shape(V, Q.rows(), Q.cols(), "V");
  require_finite(Q, "Q");
  require_finite(K, "K");
  require_finite(V, "V");
  require<Error>(std::isfinite(scale) && scale > 0,
                 "attention scale must be finite and positive, got ", scale);
  require<PlanError>(tiles.query >= 1 && tiles.key >= 1, "exact attention tiles must be at least ",
                     "1 x 1, got ", tiles.query, " x ", tiles.key);
}

// Tiles are held transposed, keys x queries (S^T = K_j Q_i^T): a query's scores are then a column,
// so the row max, the row sum and the broadcasts of m_i, lse_i, delta_i are vertical, fully
// vectorised operations on contiguous rows, with no horizontal reduction per query.

/// Forward pass over the query blocks first, first + stride, ... (DESIGN.md section 2): assigns
/// their rows of O (n x d_h) and lse (n), which must already have that size. Calls with the same
/// stride and different `first` touch disjoint rows and may run in parallel.
template <class T>
void exact_forward_blocks(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, T scale,
                          bool causal, const exact::Tiles& tiles, Index first, Index stride,
                          Matrix<T>& O, Vector<T>& lse) {
  const Index n = Q.rows(), d = Q.cols();
  const Index Bq = std::min(tiles.query, n), Bk = std::min(tiles.key, n);
  const Index blocks = (n + Bq - 1) / Bq;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  Matrix<T> st_buffer(Bk, Bq);  // (B_k, B_q) scores S^T, then unnormalised probabilities
  Matrix<T> acc_buffer(Bq, d);  // (B_q, d_h) sum_j exp(c S_ij - m_i) v_j
  RowVector<T> m(Bq), z(Bq);    // running row max and row sum of the online softmax
  RowVector<T> m_new(Bq), alpha(Bq);

  for (Index b = first; b < blocks; b += stride) {
    const Index i0 = b * Bq, bq = std::min(Bq, n - i0);
    const auto Qi = Q.middleRows(i0, bq);
    Eigen::Map<Matrix<T>> acc(acc_buffer.data(), bq, d);
    // With the mask, keys after the block's last row are invisible: tiles above the diagonal are
    // skipped and the diagonal tile is cut at that key.
    const Index key_end = causal ? i0 + bq : n;
    for (Index j0 = 0; j0 < key_end; j0 += Bk) {
      const Index bk = std::min(Bk, key_end - j0);
      Eigen::Map<Matrix<T>> St(st_buffer.data(), bk, bq);
      St.noalias() = K.middleRows(j0, bk) * Qi.transpose();
      const bool diagonal = causal && j0 + bk - 1 > i0;
      if (diagonal) exact_mask_tile(St, i0, j0, minus_inf);  // kept out of the row max
      // Every query row sees key 0, so after the first tile m is finite and no -inf - -inf occurs.
      auto mb = m_new.head(bq);
      mb = St.row(0);
      for (Index c = 1; c < bk; ++c) mb = mb.cwiseMax(St.row(c));
      mb *= scale;
      if (j0 > 0) mb = mb.cwiseMax(m.head(bq));
      for (Index c = 0; c < bk; ++c) St.row(c) = (scale * St.row(c).array() - mb.array()).exp();
      // Masked entries are zeroed explicitly: Eigen's vectorised exp(-inf) is not 0.
      if (diagonal) exact_mask_tile(St, i0, j0, T(0));
      if (j0 == 0) {
        z.head(bq) = St.colwise().sum();
        acc.noalias() = St.transpose() * V.middleRows(j0, bk);
      } else {
        auto a = alpha.head(bq);
        a = (m.head(bq) - mb).array().exp();
        z.head(bq) = z.head(bq).cwiseProduct(a) + St.colwise().sum();
        acc = a.transpose().asDiagonal() * acc;
        acc.noalias() += St.transpose() * V.middleRows(j0, bk);
      }
      m.head(bq) = mb;
    }
    for (Index r = 0; r < bq; ++r) {
      O.row(i0 + r) = acc.row(r) / z[r];
      lse[i0 + r] = m[r] + std::log(z[r]);
    }
  }
}

/// Backward pass over the key blocks first, first + stride, ... (DESIGN.md section 2, the
/// FlashAttention-2 loop order: a key block's dK, dV accumulate in a small buffer while all query
/// blocks that see it stream past). Assigns those blocks' rows of dK and dV, and adds
/// sum_j dS_ij k_j (dQ / c) into dQ_sum for every query row. delta_i = dO_i . O_i.
/// Calls with the same stride and different `first` write disjoint rows of dK and dV, and need
/// separate dQ_sum buffers to run in parallel.
template <class T>
void exact_backward_blocks(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                           const Matrix<T>& dO, const Vector<T>& lse, const Vector<T>& delta,
                           T scale, bool causal, const exact::Tiles& tiles, Index first,
                           Index stride, Matrix<T>& dQ_sum, Matrix<T>& dK, Matrix<T>& dV) {
  const Index n = Q.rows(), d = Q.cols();
  const Index Bq = std::min(tiles.query, n), Bk = std::min(tiles.key, n);
  const Index blocks = (n + Bk - 1) / Bk;
  Matrix<T> pt_buffer(Bk, Bq);   // (B_k, B_q) recomputed probabilities P^T
  Matrix<T> dst_buffer(Bk, Bq);  // (B_k, B_q) dP^T, then dS^T
  Matrix<T> dk_buffer(Bk, d);    // (B_k, d_h) dK of the key block, before the factor c
  Matrix<T> dv_buffer(Bk, d);    // (B_k, d_h)

  for (Index b = first; b < blocks; b += stride) {
    const Index j0 = b * Bk, bk = std::min(Bk, n - j0);
    const auto Kj = K.middleRows(j0, bk);
    const auto Vj = V.middleRows(j0, bk);
    Eigen::Map<Matrix<T>> dK_acc(dk_buffer.data(), bk, d), dV_acc(dv_buffer.data(), bk, d);
    dK_acc.setZero();
    dV_acc.setZero();
    // With the mask, query rows before j0 see none of these keys: start at the block holding j0.
    const Index i_begin = causal ? (j0 / Bq) * Bq : 0;
    for (Index i0 = i_begin; i0 < n; i0 += Bq) {
      const Index bq = std::min(Bq, n - i0);
      const auto Qi = Q.middleRows(i0, bq);
      const auto dOi = dO.middleRows(i0, bq);
      const auto lse_i = lse.segment(i0, bq).transpose().array();
      const auto delta_i = delta.segment(i0, bq).transpose().array();
      Eigen::Map<Matrix<T>> Pt(pt_buffer.data(), bk, bq), dSt(dst_buffer.data(), bk, bq);
      const bool diagonal = causal && j0 + bk - 1 > i0;

      // P_ij = exp(c S_ij - lse_i), recomputed; masked entries zeroed explicitly.
      Pt.noalias() = Kj * Qi.transpose();
      for (Index c = 0; c < bk; ++c) Pt.row(c) = (scale * Pt.row(c).array() - lse_i).exp();
      if (diagonal) exact_mask_tile(Pt, i0, j0, T(0));
      dV_acc.noalias() += Pt * dOi;
      // dS = P o (dP - delta 1^T) with dP = dO V^T; masked entries stay 0 because P is 0 there.
      dSt.noalias() = Vj * dOi.transpose();
      for (Index c = 0; c < bk; ++c) {
        dSt.row(c) = Pt.row(c).array() * (dSt.row(c).array() - delta_i);
      }
      dK_acc.noalias() += dSt * Qi;
      dQ_sum.middleRows(i0, bq).noalias() += dSt.transpose() * Kj;
    }
    dK.middleRows(j0, bk) = scale * dK_acc;
    dV.middleRows(j0, bk) = dV_acc;
  }
}

}  // namespace detail

namespace exact {

/// Forward pass of one head: O = softmax(c Q K^T) V (causal: j <= i) and the per-row log-sum-exp
/// lse_i = log sum_j exp(c q_i . k_j) over the visible j, which is all that backward() needs
/// besides Q, K, V, O. Q, K, V: n x d_h. Tiled with online softmax (DESIGN.md section 2); query
/// blocks run in parallel under OpenMP (serially inside an enclosing parallel region).
/// Throws ShapeError / NumericError / Error / PlanError on bad shapes, non-finite input, a bad
/// scale or empty tiles.
template <class T>
void forward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, T scale, bool causal,
             Matrix<T>& O, Vector<T>& lse, const Tiles& tiles = Tiles{}) {
  detail::exact_check_inputs(Q, K, V, scale, tiles);
  const Index n = Q.rows();
  O.resize(n, Q.cols());
  lse.resize(n);
  const bool parallel = detail::exact_worth_parallel(1, n, Q.cols());
  const Index split = detail::exact_split(parallel, 1, (n + tiles.query - 1) / tiles.query);
  detail::exact_for(parallel, split, [&](Index part) {
    detail::exact_forward_blocks(Q, K, V, scale, causal, tiles, part, split, O, lse);
  });
}

/// Backward pass of one head: assigns dQ, dK, dV (n x d_h) given dO and what forward() returned
/// (O, lse), recomputing the probabilities tile by tile (DESIGN.md section 2). Key blocks run in
/// parallel under OpenMP, each part summing its dQ in its own n x d_h buffer.
/// Throws ShapeError / NumericError on bad shapes or a non-finite dO (and as forward() does).
template <class T>
void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
              const Vector<T>& lse, const Matrix<T>& dO, T scale, bool causal, Matrix<T>& dQ,
              Matrix<T>& dK, Matrix<T>& dV, const Tiles& tiles = Tiles{}) {
  detail::exact_check_inputs(Q, K, V, scale, tiles);
  require_shape(O, Q.rows(), Q.cols(), "O");
  require<ShapeError>(lse.size() == Q.rows(), "lse must have ", Q.rows(),
                      " entries (one per query row, as forward() returns it), got ", lse.size());
  require_shape(dO, Q.rows(), Q.cols(), "dO");
  require_finite(dO, "dO");
  const Vector<T> delta = O.cwiseProduct(dO).rowwise().sum();  // (n) delta_i = dO_i . O_i
  const Index n = Q.rows(), d = Q.cols();
  dQ.setZero(n, d);
  dK.resize(n, d);
  dV.resize(n, d);
  const bool parallel = detail::exact_worth_parallel(1, n, d);
  const Index split = detail::exact_split(parallel, 1, (n + tiles.key - 1) / tiles.key);
  std::vector<Matrix<T>> dQ_extra(split - 1, Matrix<T>::Zero(n, d));  // dQ sums of parts 1..
  detail::exact_for(parallel, split, [&](Index part) {
    detail::exact_backward_blocks(Q, K, V, dO, lse, delta, scale, causal, tiles, part, split,
                                  part == 0 ? dQ : dQ_extra[part - 1], dK, dV);
  });
  for (const Matrix<T>& extra : dQ_extra) dQ += extra;
  dQ *= scale;
}

}  // namespace exact

/// Exact multi-head attention with the tiled kernels of polygrad::exact. Heads run in parallel
/// (detail::parallel_for); when there are fewer heads than threads, each head's tile rows are
/// split between threads too. Saves per head Q, K, V, O and lse for backward: O(n d) memory.
template <class T>
class ExactAttention final : public AttentionMethod<T> {
 public:
  /// Uses B_q x B_k tiles; the default suits d_h up to about 64.
  explicit ExactAttention(exact::Tiles tiles = exact::Tiles{}) : tiles_(tiles) {
    require<PlanError>(tiles.query >= 1 && tiles.key >= 1, "exact attention tiles must be at ",
                       "least 1 x 1, got ", tiles.query, " x ", tiles.key);
  }

  /// "exact".
  std::string name() const override { return "exact"; }

  /// The tile sizes in use.
  const exact::Tiles& tiles() const { return tiles_; }

  /// Assigns O (n x H d_h) and returns a context holding Q, K, V, O and lse per head.
  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    const Index dh = detail::check_attention_inputs(Q, K, V, shape);
    const Index n = Q.rows(), H = shape.heads;
    auto context = std::make_unique<Context>(shape, tiles_);
    context->Q.resize(H);
    context->K.resize(H);
    context->V.resize(H);
    context->O.resize(H);
    context->lse.resize(H);
    const bool parallel = detail::exact_worth_parallel(H, n, dh);
    detail::exact_for(parallel, H, [&](Index h) {
      context->Q[h] = detail::head_of(Q, h, dh);
      context->K[h] = detail::head_of(K, h, dh);
      context->V[h] = detail::head_of(V, h, dh);
      context->O[h].resize(n, dh);
      context->lse[h].resize(n);
    });
    const Index blocks = (n + tiles_.query - 1) / tiles_.query;
    const Index split = detail::exact_split(parallel, H, blocks);
    detail::exact_for(parallel, H * split, [&](Index w) {
      const Index h = w / split;
      detail::exact_forward_blocks(context->Q[h], context->K[h], context->V[h], T(shape.scale),
                                   shape.causal, tiles_, w % split, split, context->O[h],
                                   context->lse[h]);
    });
    O.resize(n, Q.cols());
    detail::exact_for(parallel, H, [&](Index h) { detail::set_head(O, h, context->O[h]); });
    return context;
  }

 private:
  exact::Tiles tiles_;

  class Context final : public AttentionContext<T> {
   public:
    Context(const AttentionShape& shape, const exact::Tiles& tiles) : shape(shape), tiles(tiles) {}

    /// Given dO (n x H d_h), assigns dQ, dK, dV by recomputation per head.
    void backward(const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      const Index H = shape.heads, n = Q[0].rows(), dh = Q[0].cols();
      require_shape(dO, n, H * dh, "dO");
      require_finite(dO, "dO");
      const Index blocks = (n + tiles.key - 1) / tiles.key;
      const bool parallel = detail::exact_worth_parallel(H, n, dh);
      const Index split = detail::exact_split(parallel, H, blocks);
      const T scale = T(shape.scale);
      std::vector<Matrix<T>> dO_h(H), dQ_h(H), dK_h(H), dV_h(H);
      std::vector<Matrix<T>> dQ_extra(H * (split - 1));  // per-thread dQ sums when a head is split
      std::vector<Vector<T>> delta(H);
      detail::exact_for(parallel, H, [&](Index h) {
        dO_h[h] = detail::head_of(dO, h, dh);
        delta[h] = O[h].cwiseProduct(dO_h[h]).rowwise().sum();  // (n) delta_i = dO_i . O_i
        dQ_h[h].setZero(n, dh);
        dK_h[h].resize(n, dh);
        dV_h[h].resize(n, dh);
        for (Index c = 1; c < split; ++c) dQ_extra[h * (split - 1) + c - 1].setZero(n, dh);
      });
      detail::exact_for(parallel, H * split, [&](Index w) {
        const Index h = w / split, part = w % split;
        Matrix<T>& dQ_sum = part == 0 ? dQ_h[h] : dQ_extra[h * (split - 1) + part - 1];
        detail::exact_backward_blocks(Q[h], K[h], V[h], dO_h[h], lse[h], delta[h], scale,
                                      shape.causal, tiles, part, split, dQ_sum, dK_h[h], dV_h[h]);
      });
      dQ.resize(n, H * dh);
      dK.resize(n, H * dh);
      dV.resize(n, H * dh);
      detail::exact_for(parallel, H, [&](Index h) {
        for (Index c = 1; c < split; ++c) dQ_h[h] += dQ_extra[h * (split - 1) + c - 1];
        dQ_h[h] *= scale;
        detail::set_head(dQ, h, dQ_h[h]);
        detail::set_head(dK, h, dK_h[h]);
        detail::set_head(dV, h, dV_h[h]);
      });
    }

    /// One plan per head: the exact path and its predicted cost (attention/plan.hpp).
    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out(std::size_t(shape.heads));
      for (HeadPlan& plan : out) {
        plan.n = Q[0].rows();
        plan.head_dim = Q[0].cols();
        plan.causal = shape.causal;
        plan.exact_cost = cost::exact(plan.n, plan.head_dim, shape.causal);
      }
      return out;
    }

    AttentionShape shape;
    exact::Tiles tiles;
    std::vector<Matrix<T>> Q, K, V, O;  // per head, each n x d_h
    std::vector<Vector<T>> lse;         // per head, n
  };
};

}  // namespace polygrad
