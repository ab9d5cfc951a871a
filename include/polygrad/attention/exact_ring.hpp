#pragma once
// Exact attention over a sequence split across processes: ring attention (Liu, Zaharia, Abbeel
// 2023, arXiv 2310.01889) on the tiled kernels of exact.hpp. docs/sequence_parallel.md says how
// it is scheduled and what it sends.
//
// Every rank keeps its queries; the keys and values travel, head by head contiguous (RingBlock).
// Forward: at step s rank r holds the block of rank r - s, runs its queries against it (online
// softmax within the block) and merges that partial result into its running one by their
// log-sum-exps. Backward: a block travels with the accumulators of its dK and dV; each rank adds
// what its own queries contribute, keeps its dQ, and hands block and accumulators on until they
// are back at the rank that owns them.
//
// Not causal, the blocks go round the whole ring. Causal, only the ranks after a block's owner
// see it, so a block travels owner -> owner + 1 -> ... -> P - 1 and its accumulators return from
// rank P - 1 to the owner: rank r does r + 1 blocks of work, the last rank the most.

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "polygrad/attention/exact_kernels.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad::exact::detail {

/// Message tags of the ring, above those of the polynomial scans (2 per pass and head, 6 H in
/// all) and below MPI's guaranteed MPI_TAG_UB of 32767.
enum RingTag : int {
  ring_forward_tag = 30000,
  ring_backward_tag = 30001,
  ring_returned_tag = 30002
};

/// The keys and values of one shard, each head's rows x d_h contiguous (the layout the tiles
/// read), and in the backward pass the accumulators of their gradients after them:
/// K of every head, V of every head (, dK of every head, dV of every head).
template <class T>
class RingBlock {
 public:
  /// Sizes the block for `rows` rows and `parts` parts (2: K, V; 4: K, V, dK, dV).
  void resize(Index rows, Index heads, Index dh, Index parts) {
    rows_ = rows;
    heads_ = heads;
    dh_ = dh;
    data_.resize(std::size_t(rows * heads * dh * parts));
  }
  /// Copies head h of K and V (n x H d_h) in; zeroes the accumulators if the block has them.
  void fill(const Matrix<T>& K, const Matrix<T>& V) {
    for (Index h = 0; h < heads_; ++h) {
      part(0, h) = K.middleCols(h * dh_, dh_);
      part(1, h) = V.middleCols(h * dh_, dh_);
    }
    std::fill(data_.begin() + std::ptrdiff_t(2 * part_size()), data_.end(), T(0));
  }
  /// Part p (0 K, 1 V, 2 dK, 3 dV) of head h: rows x d_h.
  Eigen::Map<Matrix<T>> part(Index p, Index h) {
    return {data_.data() + (p * heads_ + h) * rows_ * dh_, rows_, dh_};
  }
  Index rows() const { return rows_; }
  T* data() { return data_.data(); }
  /// Scalars in one part of every head.
  Index part_size() const { return rows_ * heads_ * dh_; }
  /// Scalars in the whole block.
  Index size() const { return Index(data_.size()); }

 private:
  Index rows_ = 0, heads_ = 0, dh_ = 0;
  std::vector<T> data_;
};

/// Which block a rank holds at each step of the ring, and where blocks go.
struct RingSchedule {
  int rank = 0, size = 1;
  bool causal = false;

  /// Steps of this rank: causal, one per block it sees (its own and the r before it).
  int steps() const { return causal ? rank + 1 : size; }
  /// The rank whose block this rank holds at step s.
  int source(int s) const { return (rank - s + size) % size; }
  int next() const { return (rank + 1) % size; }
  int previous() const { return (rank - 1 + size) % size; }
  /// Whether the block held at step s goes on to next(): causal, to every later rank; not
  /// causal, until every rank has had it (the backward's last hop is the accumulators' return).
  bool hands_on(int s) const { return causal ? rank + 1 < size : s + 1 < size; }
  /// Whether a block arrives for step s + 1.
  bool receives_after(int s) const { return s + 1 < steps(); }
  /// Step 0 holds this rank's own block: its keys meet its queries under the causal mask.
  bool diagonal(int s) const { return causal && s == 0; }
};

/// How one step's work is shared between threads: heads x parts work items, each part a set of
/// interleaved tiles of `tile_rows` rows (query rows forward, key rows backward) of `tile` each.
inline WorkSplit ring_split(const Threading& threading, Index heads, Index tile_rows, Index tile,
                            Index queries, Index keys, Index dh) {
  const Index blocks = std::max<Index>((tile_rows + tile - 1) / tile, 1);
  const double work = double(heads) * 4.0 * double(queries) * double(keys) * double(dh);
  WorkSplit split;
  split.threads = threads_for(threading, heads * blocks, work);
  if (split.threads > 1) split.parts = std::min(blocks, (split.threads + heads - 1) / heads);
  return split;
}

/// Forward pass of H heads on this rank's rows (Q, K, V: n_r x H d_h) against every block its
/// queries see: assigns O (n_r x H d_h), lse[h] (n_r each) and threads[h]. rows_of: every
/// rank's row count (check_shard). A collective: every rank of shape.shard calls it.
template <class T>
void ring_forward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                  const AttentionShape& shape, const std::vector<Index>& rows_of,
                  const exact::Tiles& tiles, Matrix<T>& O, std::vector<Vector<T>>& lse,
                  std::vector<Index>& threads) {
  SequenceGroup& group = *shape.shard.group;
  const RingSchedule ring{group.rank(), group.size(), shape.causal};
  const Index n = Q.rows(), H = shape.heads, dh = Q.cols() / H;
  const T scale = T(shape.scale);
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();

  Heads<T> in(H);
  std::vector<Matrix<T>> O_step(
      static_cast<std::size_t>(H));  // (n_r, d_h) per head: one block's result
  std::vector<Vector<T>> lse_step(static_cast<std::size_t>(H));
  std::vector<Matrix<T>> O_run(static_cast<std::size_t>(H));  // (n_r, d_h) per head: merged so far
  lse.assign(std::size_t(H), Vector<T>::Constant(n, minus_inf));
  for (Index h = 0; h < H; ++h) {
    in.copy(Q, in.Q, h, dh);
    O_step[std::size_t(h)].resize(n, dh);
    lse_step[std::size_t(h)].resize(n);
    O_run[std::size_t(h)].setZero(n, dh);
  }
  threads.assign(std::size_t(H), 1);

  RingBlock<T> held, arriving;
  held.resize(n, H, dh, 2);
  held.fill(K, V);
  for (int s = 0; s < ring.steps(); ++s) {
    std::unique_ptr<PendingMessage> sent, received;
    if (ring.hands_on(s))
      sent = group.send(ring.next(), ring_forward_tag, held.data(), held.size());
    if (ring.receives_after(s)) {
      arriving.resize(rows_of[std::size_t(ring.source(s + 1))], H, dh, 2);
      received = group.receive(ring.previous(), ring_forward_tag, arriving.data(), arriving.size());
    }
    const Index m = held.rows();
    if (n > 0 && m > 0) {
      const bool diagonal = ring.diagonal(s);
      const WorkSplit split = ring_split(shape.threading, H, n, tiles.query, n, m, dh);
      std::vector<int> ran_on(std::size_t(H * split.parts));
      parallel_for(H * split.parts, split.threads, [&](Index w) {
        const Index h = w / split.parts;
        forward_blocks<T>(in.Q[std::size_t(h)], held.part(0, h), held.part(1, h),
                          {scale, diagonal, tiles}, {w % split.parts, split.parts},
                          O_step[std::size_t(h)], lse_step[std::size_t(h)]);
        ran_on[std::size_t(w)] = current_thread();
      });
      // Merge by log-sum-exp: O = (e^{lse_a} O_a + e^{lse_b} O_b) / (e^{lse_a} + e^{lse_b}).
      parallel_for(H, split.threads, [&](Index h) {
        Vector<T>& l = lse[std::size_t(h)];
        const Vector<T>& l_new = lse_step[std::size_t(h)];
        for (Index i = 0; i < n; ++i) {
          const T top = std::max(l[i], l_new[i]);
          const T a = l[i] == minus_inf ? T(0) : std::exp(l[i] - top);
          const T b = std::exp(l_new[i] - top);
          const T sum = a + b;
          O_run[std::size_t(h)].row(i) =
              (a / sum) * O_run[std::size_t(h)].row(i) + (b / sum) * O_step[std::size_t(h)].row(i);
          l[i] = top + std::log(sum);
        }
        threads[std::size_t(h)] =
            std::max(threads[std::size_t(h)], distinct_threads(ran_on, h, split.parts));
      });
    }
    if (received) received->wait();
    if (sent) sent->wait();
    if (received) std::swap(held, arriving);
  }
  O.resize(n, Q.cols());
  for (Index h = 0; h < H; ++h) O.middleCols(h * dh, dh) = O_run[std::size_t(h)];
}

/// Backward pass of H heads on this rank's rows given what ring_forward returned: assigns dQ, dK,
/// dV (n_r x H d_h, sized by prepare_backward) and threads[h]. A collective.
template <class T>
void ring_backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                   const std::vector<Vector<T>>& lse, const Matrix<T>& dO,
                   const AttentionShape& shape, const std::vector<Index>& rows_of,
                   const exact::Tiles& tiles, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV,
                   std::vector<Index>& threads) {
  SequenceGroup& group = *shape.shard.group;
  const RingSchedule ring{group.rank(), group.size(), shape.causal};
  const Index n = Q.rows(), H = shape.heads, dh = Q.cols() / H;
  const T scale = T(shape.scale);

  // The most parts any step splits a head into, so that each part has its own dQ buffer.
  Index max_parts = 1;
  for (int s = 0; s < ring.steps(); ++s) {
    const Index m = rows_of[std::size_t(ring.source(s))];
    max_parts = std::max(max_parts, ring_split(shape.threading, H, m, tiles.key, n, m, dh).parts);
  }
  Heads<T> in(H);
  std::vector<Vector<T>> delta(static_cast<std::size_t>(H));    // (n_r) dO_i . O_i
  std::vector<Matrix<T>> dQ_parts(std::size_t(H * max_parts));  // (n_r, d_h) sums of dS K
  std::vector<Matrix<T>> dK_step(static_cast<std::size_t>(H));  // (m, d_h) per head
  std::vector<Matrix<T>> dV_step(static_cast<std::size_t>(H));
  for (Index h = 0; h < H; ++h) {
    in.copy(Q, in.Q, h, dh);
    in.copy(dO, in.dO, h, dh);
    delta[std::size_t(h)] =
        O.middleCols(h * dh, dh).cwiseProduct(dO.middleCols(h * dh, dh)).rowwise().sum();
    for (Index p = 0; p < max_parts; ++p) dQ_parts[std::size_t(h * max_parts + p)].setZero(n, dh);
  }
  threads.assign(std::size_t(H), 1);

  RingBlock<T> held, arriving;
  held.resize(n, H, dh, 4);
  held.fill(K, V);
  RingBlock<T> own_gradients;  // dK, dV of this rank's block, when they come back
  own_gradients.resize(n, H, dh, 2);
  std::unique_ptr<PendingMessage> returning;  // this rank's gradients on their way back
  const int last = ring.size - 1;
  if (ring.causal ? ring.rank != last : true) {
    returning = group.receive(ring.causal ? last : ring.previous(), ring_returned_tag,
                              own_gradients.data(), own_gradients.size());
  }
  for (int s = 0; s < ring.steps(); ++s) {
    const int source = ring.source(s);
    std::unique_ptr<PendingMessage> sent, received;
    if (ring.receives_after(s)) {
      arriving.resize(rows_of[std::size_t(ring.source(s + 1))], H, dh, 4);
      received =
          group.receive(ring.previous(), ring_backward_tag, arriving.data(), arriving.size());
    }
    const Index m = held.rows();
    if (n > 0 && m > 0) {
      const WorkSplit split = ring_split(shape.threading, H, m, tiles.key, n, m, dh);
      const bool diagonal = ring.diagonal(s);
      for (Index h = 0; h < H; ++h) {
        dK_step[std::size_t(h)].resize(m, dh);
        dV_step[std::size_t(h)].resize(m, dh);
      }
      std::vector<int> ran_on(std::size_t(H * split.parts));
      parallel_for(H * split.parts, split.threads, [&](Index w) {
        const Index h = w / split.parts, p = w % split.parts;
        backward_blocks<T>(in.Q[std::size_t(h)], held.part(0, h), held.part(1, h),
                           in.dO[std::size_t(h)], lse[std::size_t(h)], delta[std::size_t(h)],
                           {scale, diagonal, tiles}, {p, split.parts},
                           {dQ_parts[std::size_t(h * max_parts + p)], dK_step[std::size_t(h)],
                            dV_step[std::size_t(h)]});
        ran_on[std::size_t(w)] = current_thread();
      });
      for (Index h = 0; h < H; ++h) {
        held.part(2, h) += dK_step[std::size_t(h)];
        held.part(3, h) += dV_step[std::size_t(h)];
        threads[std::size_t(h)] =
            std::max(threads[std::size_t(h)], distinct_threads(ran_on, h, split.parts));
      }
    }
    // The block goes on with its accumulators, or the accumulators go home.
    T* gradients = held.data() + 2 * held.part_size();
    if (ring.hands_on(s)) {
      sent = group.send(ring.next(), ring_backward_tag, held.data(), held.size());
    } else if (source != ring.rank) {
      sent = group.send(ring.causal ? source : ring.next(), ring_returned_tag, gradients,
                        2 * held.part_size());
    } else {  // the last rank's own block, causal: no one else sees it
      std::copy(gradients, gradients + 2 * held.part_size(), own_gradients.data());
    }
    if (received) received->wait();
    if (sent) sent->wait();
    if (received) std::swap(held, arriving);
  }
  if (returning) returning->wait();
  for (Index h = 0; h < H; ++h) {
    Matrix<T>& sum = dQ_parts[std::size_t(h * max_parts)];
    for (Index p = 1; p < max_parts; ++p) sum += dQ_parts[std::size_t(h * max_parts + p)];
    dQ.middleCols(h * dh, dh) = scale * sum;
    dK.middleCols(h * dh, dh) = own_gradients.part(0, h);
    dV.middleCols(h * dh, dh) = own_gradients.part(1, h);
  }
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_EXACT_RING_INSTANCES(how, T)                                                      \
  how void ring_forward<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&,                   \
                           const AttentionShape&, const std::vector<Index>&, const exact::Tiles&,  \
                           Matrix<T>&, std::vector<Vector<T>>&, std::vector<Index>&);              \
  how void ring_backward<T>(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&,                  \
                            const Matrix<T>&, const std::vector<Vector<T>>&, const Matrix<T>&,     \
                            const AttentionShape&, const std::vector<Index>&, const exact::Tiles&, \
                            Matrix<T>&, Matrix<T>&, Matrix<T>&, std::vector<Index>&);
POLYGRAD_INSTANCES(POLYGRAD_EXACT_RING_INSTANCES)

}  // namespace polygrad::exact::detail
