#pragma once
// The kernels of exact attention, FlashAttention-2 style: tiles of B_q query rows against B_k key
// rows, online softmax, and a backward pass that recomputes the probabilities instead of storing
// them. Memory O(n d): no n x n buffer exists at any time. ExactAttention (exact.hpp) runs them
// on every head, in one process or over a ring of them (exact_ring.hpp).
//
// Formulas: design.md section 2. The naive reference (naive.hpp) computes the same quantities
// densely; tests/attention/test_exact.cpp compares the two.

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "polygrad/attention/exact_fixed_width.hpp"
#include "polygrad/attention/exact_tiles.hpp"
#include "polygrad/attention/method.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Exact attention on one head, in O(n d) memory: the tiled kernels and their tile sizes
/// (design.md section 2). ExactAttention runs them on every head.
namespace exact {

/// The helpers of the exact kernels below and of ring attention (exact_ring.hpp).
namespace detail {

using namespace polygrad::detail;  // the library's shared helpers, unqualified as elsewhere

/// Sets the entries of a transposed tile (rows: keys j0.., columns: queries i0..) that the causal
/// mask hides to `value`: query i0 + r sees key j0 + c only if j0 + c <= i0 + r.
template <class T>
void mask_tile(Eigen::Map<Matrix<T>>& tile, Index i0, Index j0, T value) {
  for (Index c = 0; c < tile.rows(); ++c) {
    tile.row(c).head(std::clamp<Index>(j0 + c - i0, 0, tile.cols())).setConstant(value);
  }
}

/// Checks the inputs of the single-head kernels: Q, K, V of one shape n x d_h (n, d_h >= 1),
/// finite values unless the caller checked them, a finite positive scale and positive tiles.
template <class Derived>
void check_inputs(const Eigen::MatrixBase<Derived>& Q, const Eigen::MatrixBase<Derived>& K,
                  const Eigen::MatrixBase<Derived>& V, double scale, const exact::Tiles& tiles,
                  bool inputs_checked) {
  require<ShapeError>(Q.rows() >= 1 && Q.cols() >= 1, "exact attention needs Q with at least one ",
                      "row and one column, got ", Q.rows(), " x ", Q.cols());
  require_shape(K, Q.rows(), Q.cols(), "K");
  require_shape(V, Q.rows(), Q.cols(), "V");
  if (!inputs_checked) {
    require_finite(Q, "Q");
    require_finite(K, "K");
    require_finite(V, "V");
  }
  require<Error>(std::isfinite(scale) && scale > 0,
                 "attention scale must be finite and positive, got ", scale);
  require<PlanError>(tiles.query >= 1 && tiles.key >= 1, "exact attention tiles must be at least ",
                     "1 x 1, got ", tiles.query, " x ", tiles.key);
}

/// Forward pass over the query blocks of `share` (design.md section 2), on Eigen's products for
/// any head width: forward_blocks below without the choice of kernel.
template <class T>
void forward_blocks_general(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                            const Pass<T>& pass, Share share, MatrixRef<T> O, VectorRef<T> lse);

/// Backward pass over the key blocks of `share` (design.md section 2), on Eigen's products for
/// any head width: backward_blocks below without the choice of kernel.
template <class T>
void backward_blocks_general(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                             ConstMatrixRef<T> dO, ConstVectorRef<T> lse, ConstVectorRef<T> delta,
                             const Pass<T>& pass, Share share, Gradients<T> out);

/// Forward pass over the query blocks of `share` (design.md section 2): assigns their rows of
/// O (n x d_h) and lse (n). Q: n x d_h; K, V: m x d_h, m = n when causal (query i sees key
/// j <= i), any m >= 1 otherwise (another shard's keys: attention/exact_ring.hpp). Calls with
/// the same stride and different firsts touch disjoint rows and may run in parallel.
/// The fixed-width kernels (exact_fixed_width.hpp) run heads of width 8 to 64 where the SIMD
/// packet allows; the general ones, on Eigen's products, the rest, including values of another
/// width than the queries and keys (V and O: m x d_v and n x d_v).
template <class T>
void forward_blocks(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                    const Pass<T>& pass, Share share, MatrixRef<T> O, VectorRef<T> lse) {
  if (V.cols() == Q.cols() && fixed_width_applies<T>(Q.cols(), pass.tiles)) {
    with_fixed_width<T>(Q.cols(), [&](auto width) {
      forward_blocks_fixed<T, decltype(width)::value>(Q, K, V, pass, share, O, lse);
    });
  } else {
    forward_blocks_general<T>(Q, K, V, pass, share, O, lse);
  }
}

template <class T>
void forward_blocks_general(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                            const Pass<T>& pass, Share share, MatrixRef<T> O, VectorRef<T> lse) {
  const T scale = pass.scale;
  const bool causal = pass.causal;
  const Tiles& tiles = pass.tiles;
  const Index first = share.first, stride = share.stride;
  const Index n = Q.rows(), m_keys = K.rows(), dv = V.cols();
  const Index Bq = std::min(tiles.query, n), Bk = std::min(tiles.key, m_keys);
  const Index blocks = (n + Bq - 1) / Bq;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  Matrix<T> st_buffer(Bk, Bq);   // (B_k, B_q) scores S^T, then unnormalised probabilities
  Matrix<T> acc_buffer(Bq, dv);  // (B_q, d_v) sum_j exp(c S_ij - m_i) v_j
  RowVector<T> m(Bq), z(Bq);     // running row max and row sum of the online softmax
  RowVector<T> m_new(Bq), alpha(Bq);

  for (Index b = first; b < blocks; b += stride) {
    const Index i0 = b * Bq, bq = std::min(Bq, n - i0);
    const auto Qi = Q.middleRows(i0, bq);
    Eigen::Map<Matrix<T>> acc(acc_buffer.data(), bq, dv);
    // With the mask, keys after the block's last row are invisible: tiles above the diagonal are
    // skipped and the diagonal tile is cut at that key.
    const Index key_end = causal ? i0 + bq : m_keys;
    for (Index j0 = 0; j0 < key_end; j0 += Bk) {
      const Index bk = std::min(Bk, key_end - j0);
      Eigen::Map<Matrix<T>> St(st_buffer.data(), bk, bq);
      St.noalias() = K.middleRows(j0, bk) * Qi.transpose();
      const bool diagonal = causal && j0 + bk - 1 > i0;
      if (diagonal) mask_tile(St, i0, j0, minus_inf);  // kept out of the row max
      // Every query row sees key 0, so after the first tile m is finite and no -inf - -inf occurs.
      // Row by row of St, each the scores of one key for the block's queries: packets along the
      // queries (measured twice as fast as column by column at B_q = 64). A single query (a
      // decoding step, exact_decoding.hpp) has one contiguous column instead, which runs on
      // packets along the keys.
      auto mb = m_new.head(bq);
      if (bq == 1) {
        mb[0] = St.maxCoeff();
      } else {
        mb = St.row(0);
        for (Index c = 1; c < bk; ++c) mb = mb.cwiseMax(St.row(c));
      }
      mb *= scale;
      if (j0 > 0) mb = mb.cwiseMax(m.head(bq));
      if (bq == 1) {
        St = (scale * St.array() - mb[0]).exp();
      } else {
        for (Index c = 0; c < bk; ++c) St.row(c) = (scale * St.row(c).array() - mb.array()).exp();
      }
      // Masked entries are zeroed explicitly: Eigen's vectorised exp(-inf) is not 0.
      if (diagonal) mask_tile(St, i0, j0, T(0));
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

/// Backward pass over the key blocks of `share` (design.md section 2, the FlashAttention-2 loop
/// order: a key block's dK, dV accumulate in a small buffer while all query blocks that see it
/// stream past). Assigns those blocks' rows of out.dK and out.dV, and adds sum_j dS_ij k_j
/// (dQ / c) into out.dQ for every query row. delta_i = dO_i . O_i. Calls with the same stride
/// and different firsts write disjoint rows of dK and dV, and need separate out.dQ sums to run
/// in parallel. Q, dO, out.dQ: n x d_h; K, V, out.dK, out.dV: m x d_h, with m = n when causal
/// (as in forward_blocks); values of another width run on the general kernels (V, dO, out.dV:
/// d_v columns).
/// The kernels are chosen as in forward_blocks.
template <class T>
void backward_blocks(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                     ConstMatrixRef<T> dO, ConstVectorRef<T> lse, ConstVectorRef<T> delta,
                     const Pass<T>& pass, Share share, Gradients<T> out) {
  if (V.cols() == Q.cols() && fixed_width_applies<T>(Q.cols(), pass.tiles)) {
    with_fixed_width<T>(Q.cols(), [&](auto width) {
      backward_blocks_fixed<T, decltype(width)::value>(Q, K, V, dO, lse, delta, pass, share, out);
    });
  } else {
    backward_blocks_general<T>(Q, K, V, dO, lse, delta, pass, share, out);
  }
}

template <class T>
void backward_blocks_general(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                             ConstMatrixRef<T> dO, ConstVectorRef<T> lse, ConstVectorRef<T> delta,
                             const Pass<T>& pass, Share share, Gradients<T> out) {
  const T scale = pass.scale;
  const bool causal = pass.causal;
  const Tiles& tiles = pass.tiles;
  const Index first = share.first, stride = share.stride;
  MatrixRef<T>& dQ_sum = out.dQ;
  MatrixRef<T>& dK = out.dK;
  MatrixRef<T>& dV = out.dV;
  const Index n = Q.rows(), m_keys = K.rows(), d = Q.cols(), dv = V.cols();
  const Index Bq = std::min(tiles.query, n), Bk = std::min(tiles.key, m_keys);
  const Index blocks = (m_keys + Bk - 1) / Bk;
  Matrix<T> pt_buffer(Bk, Bq);   // (B_k, B_q) recomputed probabilities P^T
  Matrix<T> dst_buffer(Bk, Bq);  // (B_k, B_q) dP^T, then dS^T
  Matrix<T> dk_buffer(Bk, d);    // (B_k, d_h) dK of the key block, before the factor c
  Matrix<T> dv_buffer(Bk, dv);   // (B_k, d_v)

  for (Index b = first; b < blocks; b += stride) {
    const Index j0 = b * Bk, bk = std::min(Bk, m_keys - j0);
    const auto Kj = K.middleRows(j0, bk);
    const auto Vj = V.middleRows(j0, bk);
    Eigen::Map<Matrix<T>> dK_acc(dk_buffer.data(), bk, d), dV_acc(dv_buffer.data(), bk, dv);
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
      if (diagonal) mask_tile(Pt, i0, j0, T(0));
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

/// How H heads of `blocks` tile rows each are shared out: `threads` threads, and each head's
/// blocks dealt into `parts` interleaved parts, so that H heads keep every thread busy even
/// when H is smaller than the thread count.
struct WorkSplit {
  int threads = 1;
  Index parts = 1;
};

inline WorkSplit work_split(const Threading& threading, Index heads, Index blocks, Index n,
                            Index dh, bool causal) {
  const double work = double(heads) * cost::exact(n, dh, causal);
  WorkSplit split;
  split.threads = threads_for(threading, heads * blocks, work);
  if (split.threads > 1) split.parts = std::min(blocks, (split.threads + heads - 1) / heads);
  return split;
}

/// The number of different values among ran_on[h parts .. (h + 1) parts).
inline Index distinct_threads(const std::vector<int>& ran_on, Index h, Index parts) {
  std::vector<int> mine(ran_on.begin() + std::ptrdiff_t(h * parts),
                        ran_on.begin() + std::ptrdiff_t((h + 1) * parts));
  std::sort(mine.begin(), mine.end());
  return Index(std::unique(mine.begin(), mine.end()) - mine.begin());
}

/// One head's columns of Q, K, V (and dO), copied contiguous for the duration of a call. The
/// tiles then read rows of d_h packed scalars; views into the n x H d_h matrices read a d_h-wide
/// piece of every H d_h-wide row, a cache line per row for 32 bytes of it at d_h 8, and measured
/// 15% slower (n 65536, 8 heads of d_h 8). The polynomial routes read rows chunk by chunk and
/// take views.
template <class T>
struct Heads {
  explicit Heads(Index heads)
      : Q(std::size_t(heads)),
        K(std::size_t(heads)),
        V(std::size_t(heads)),
        dO(std::size_t(heads)) {}
  /// to[h] = head h of `from`.
  static void copy(const Matrix<T>& from, std::vector<Matrix<T>>& to, Index h, Index dh) {
    to[std::size_t(h)] = from.middleCols(h * dh, dh);
  }
  std::vector<Matrix<T>> Q, K, V, dO;  // per head, (n, d_h)
};

/// Forward pass of H heads (columns [h d_h, (h + 1) d_h) of Q, K, V, O): assigns O and lse[h]
/// (n each), and threads[h], the threads that ran head h.
template <class T>
void forward_heads(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                   const HeadsPass<T>& all, Matrix<T>& O, std::vector<Vector<T>>& lse,
                   std::vector<Index>& threads) {
  const Index heads = all.heads;
  const bool causal = all.pass.causal;
  const Tiles& tiles = all.pass.tiles;
  const Threading& threading = all.threading;
  const Index n = Q.rows(), dh = Q.cols() / heads;
  const Index blocks = (n + std::min(tiles.query, n) - 1) / std::min(tiles.query, n);
  const WorkSplit split = work_split(threading, heads, blocks, n, dh, causal);
  O.resize(n, Q.cols());
  lse.resize(std::size_t(heads));
  Heads<T> in(heads);
  parallel_for(heads, split.threads, [&](Index h) {
    in.copy(Q, in.Q, h, dh);
    in.copy(K, in.K, h, dh);
    in.copy(V, in.V, h, dh);
    lse[std::size_t(h)].resize(n);
  });
  std::vector<int> ran_on(std::size_t(heads * split.parts));
  parallel_for(heads * split.parts, split.threads, [&](Index w) {
    const std::size_t h = std::size_t(w / split.parts);
    forward_blocks<T>(in.Q[h], in.K[h], in.V[h], all.pass, {w % split.parts, split.parts},
                      O.middleCols(Index(h) * dh, dh), lse[h]);
    ran_on[std::size_t(w)] = current_thread();
  });
  threads.resize(std::size_t(heads));
  for (Index h = 0; h < heads; ++h)
    threads[std::size_t(h)] = distinct_threads(ran_on, h, split.parts);
}

/// Backward pass of H heads given what forward_heads returned: assigns dQ, dK, dV
/// (n x H d_h, sized by prepare_backward) and threads[h].
template <class T>
void backward_heads(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                    const std::vector<Vector<T>>& lse, const Matrix<T>& dO, const HeadsPass<T>& all,
                    Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV, std::vector<Index>& threads) {
  const Index heads = all.heads;
  const T scale = all.pass.scale;
  const bool causal = all.pass.causal;
  const Tiles& tiles = all.pass.tiles;
  const Threading& threading = all.threading;
  const Index n = Q.rows(), width = Q.cols(), dh = width / heads;
  const Index blocks = (n + std::min(tiles.key, n) - 1) / std::min(tiles.key, n);
  const WorkSplit split = work_split(threading, heads, blocks, n, dh, causal);
  // delta_i = dO_i . O_i per head; each part sums its dQ in a buffer of its own.
  Heads<T> in(heads);
  std::vector<Vector<T>> delta(static_cast<std::size_t>(heads));
  std::vector<Matrix<T>> dQ_parts(std::size_t(heads * split.parts));
  parallel_for(heads, split.threads, [&](Index h) {
    in.copy(Q, in.Q, h, dh);
    in.copy(K, in.K, h, dh);
    in.copy(V, in.V, h, dh);
    in.copy(dO, in.dO, h, dh);
    delta[std::size_t(h)] =
        O.middleCols(h * dh, dh).cwiseProduct(dO.middleCols(h * dh, dh)).rowwise().sum();
    for (Index c = 0; c < split.parts; ++c)
      dQ_parts[std::size_t(h * split.parts + c)].setZero(n, dh);
  });
  std::vector<int> ran_on(std::size_t(heads * split.parts));
  parallel_for(heads * split.parts, split.threads, [&](Index w) {
    const std::size_t h = std::size_t(w / split.parts);
    backward_blocks<T>(in.Q[h], in.K[h], in.V[h], in.dO[h], lse[h], delta[h], all.pass,
                       {w % split.parts, split.parts},
                       {dQ_parts[std::size_t(w)], dK.middleCols(Index(h) * dh, dh),
                        dV.middleCols(Index(h) * dh, dh)});
    ran_on[std::size_t(w)] = current_thread();
  });
  parallel_for(heads, split.threads, [&](Index h) {
    Matrix<T>& sum = dQ_parts[std::size_t(h * split.parts)];
    for (Index c = 1; c < split.parts; ++c) sum += dQ_parts[std::size_t(h * split.parts + c)];
    dQ.middleCols(h * dh, dh) = scale * sum;
  });
  threads.resize(std::size_t(heads));
  for (Index h = 0; h < heads; ++h)
    threads[std::size_t(h)] = distinct_threads(ran_on, h, split.parts);
}

}  // namespace detail

/// Forward pass of one head: O = softmax(c Q K^T) V (causal: j <= i) and the per-row log-sum-exp
/// lse_i = log sum_j exp(c q_i . k_j) over the visible j, which is all that backward() needs
/// besides Q, K, V, O. Q, K, V: n x d_h. Tiled with online softmax (design.md section 2); the
/// query blocks are split between threads as `threading` allows.
/// Throws ShapeError / NumericError / Error / PlanError on bad shapes, non-finite input, a bad
/// scale or empty tiles.
template <class T>
void forward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, T scale, bool causal,
             Matrix<T>& O, Vector<T>& lse, const Tiles& tiles = Tiles{},
             const Threading& threading = Threading{}) {
  detail::check_inputs(Q, K, V, scale, tiles, false);
  std::vector<Vector<T>> lse_heads;
  std::vector<Index> threads;
  detail::forward_heads(Q, K, V, {1, {scale, causal, tiles}, threading}, O, lse_heads, threads);
  lse = std::move(lse_heads.front());
}

/// Backward pass of one head: assigns dQ, dK, dV (n x d_h) given dO and what forward() returned
/// (O, lse), recomputing the probabilities tile by tile (design.md section 2). Key blocks are
/// split between threads as `threading` allows, each part summing its dQ in its own buffer.
/// Throws ShapeError / NumericError on bad shapes or a non-finite dO (and as forward() does).
template <class T>
void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
              const Vector<T>& lse, const Matrix<T>& dO, T scale, bool causal, Matrix<T>& dQ,
              Matrix<T>& dK, Matrix<T>& dV, const Tiles& tiles = Tiles{},
              const Threading& threading = Threading{}) {
  detail::check_inputs(Q, K, V, scale, tiles, false);
  require<ShapeError>(lse.size() == Q.rows(), "lse must have ", Q.rows(),
                      " entries (one per query row, as forward() returns it), got ", lse.size());
  detail::prepare_backward(Q, K, V, O, dO, Q.rows(), Q.cols(), false, dQ, dK, dV);
  std::vector<Index> threads;
  detail::backward_heads(Q, K, V, O, std::vector<Vector<T>>{lse}, dO,
                         {1, {scale, causal, tiles}, threading}, dQ, dK, dV, threads);
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_EXACT_KERNELS_INSTANCES(how, T)                                                 \
  how void detail::forward_blocks<T>(ConstMatrixRef<T>, ConstMatrixRef<T>, ConstMatrixRef<T>,    \
                                     const detail::Pass<T>&, detail::Share, MatrixRef<T>,        \
                                     VectorRef<T>);                                              \
  how void detail::backward_blocks<T>(ConstMatrixRef<T>, ConstMatrixRef<T>, ConstMatrixRef<T>,   \
                                      ConstMatrixRef<T>, ConstVectorRef<T>, ConstVectorRef<T>,   \
                                      const detail::Pass<T>&, detail::Share,                     \
                                      detail::Gradients<T>);                                     \
  how void detail::forward_blocks_general<T>(ConstMatrixRef<T>, ConstMatrixRef<T>,               \
                                             ConstMatrixRef<T>, const detail::Pass<T>&,          \
                                             detail::Share, MatrixRef<T>, VectorRef<T>);         \
  how void detail::backward_blocks_general<T>(                                                   \
      ConstMatrixRef<T>, ConstMatrixRef<T>, ConstMatrixRef<T>, ConstMatrixRef<T>,                \
      ConstVectorRef<T>, ConstVectorRef<T>, const detail::Pass<T>&, detail::Share,               \
      detail::Gradients<T>);                                                                     \
  how void detail::forward_heads<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&,        \
                                    const detail::HeadsPass<T>&, Matrix<T>&,                     \
                                    std::vector<Vector<T>>&, std::vector<Index>&);               \
  how void detail::backward_heads<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&,       \
                                     const Matrix<T>&, const std::vector<Vector<T>>&,            \
                                     const Matrix<T>&, const detail::HeadsPass<T>&, Matrix<T>&,  \
                                     Matrix<T>&, Matrix<T>&, std::vector<Index>&);               \
  how void forward<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&, T, bool, Matrix<T>&, \
                      Vector<T>&, const Tiles&, const Threading&);                               \
  how void backward<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>&,   \
                       const Vector<T>&, const Matrix<T>&, T, bool, Matrix<T>&, Matrix<T>&,      \
                       Matrix<T>&, const Tiles&, const Threading&);
POLYGRAD_INSTANCES(POLYGRAD_EXACT_KERNELS_INSTANCES)

}  // namespace exact

}  // namespace polygrad
