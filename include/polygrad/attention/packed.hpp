#pragma once
// Attention over a packed batch: several sequences of different lengths stacked into one matrix
// of rows, with their offsets (FlashAttention's cumulative sequence lengths). Attention never
// crosses a sequence boundary: any AttentionMethod runs on each (sequence, head) pair as on a
// sequence of its own, so each pair gets its own plan, and the pairs run in parallel.

#include <algorithm>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "polygrad/attention/method.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Where the sequences of a packed batch begin and end: offsets[0] = 0 < offsets[1] < ... <
/// offsets[B] = n, sequence b owning rows [offsets[b], offsets[b + 1]). Empty means one
/// sequence of all the rows.
using SequenceOffsets = std::vector<Index>;

/// The offsets of sequences of the given lengths, packed in order.
inline SequenceOffsets offsets_of_lengths(const std::vector<Index>& lengths) {
  SequenceOffsets offsets(lengths.size() + 1, 0);
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    require<ShapeError>(lengths[b] >= 1, "sequence ", b, " of the batch has length ", lengths[b],
                        "; every packed sequence needs at least one token");
    offsets[b + 1] = offsets[b] + lengths[b];
  }
  return offsets;
}

/// Throws ShapeError unless `offsets` is empty or splits n rows into sequences as
/// SequenceOffsets says; `what` names the caller.
inline void check_offsets(const SequenceOffsets& offsets, Index n, const char* what) {
  if (offsets.empty()) return;
  require<ShapeError>(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == n, what,
                      ": sequence offsets must run from 0 to the ", n, " rows of the batch (",
                      "offsets[0] = 0, offsets[B] = n), got ", offsets.size(), " offsets from ",
                      offsets.front(), " to ", offsets.back());
  for (std::size_t b = 0; b + 1 < offsets.size(); ++b) {
    require<ShapeError>(offsets[b + 1] > offsets[b], what, ": sequence ", b, " is empty or ",
                        "reversed (offsets ", offsets[b], " then ", offsets[b + 1], "); offsets ",
                        "must increase strictly (offsets_of_lengths makes them from lengths)");
  }
}

namespace detail {

/// The (sequence, head) pairs of a packed call, and the context each pair's call returned.
template <class T>
class PackedContext final : public AttentionContext<T> {
 public:
  PackedContext(const AttentionShape& shape, SequenceOffsets offsets, Index width)
      : shape_(shape), offsets_(std::move(offsets)), width_(width) {
    const Index B = Index(offsets_.size()) - 1;
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < shape.heads; ++h) pairs_.push_back({b, h});
    // Longest sequences first, so that the parallel loop ends with the short ones.
    std::stable_sort(pairs_.begin(), pairs_.end(), [&](const Pair& x, const Pair& y) {
      return length(x.sequence) > length(y.sequence);
    });
    contexts_.resize(pairs_.size());
  }

  /// Runs `method` on every pair: O gets each pair's output.
  void forward(const AttentionMethod<T>& method, const Matrix<T>& Q, const Matrix<T>& K,
               const Matrix<T>& V, Matrix<T>& O) {
    O.resize(Q.rows(), width_);
    for_pairs([&](std::size_t i, const AttentionShape& shape) {
      const Pair& p = pairs_[i];
      Matrix<T> Os;
      contexts_[i] = method.forward(block(Q, p), block(K, p), block(V, p), shape, Os);
      block_of(O, p) = Os;
    });
  }

  void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
    const Index n = offsets_.back();
    prepare_backward(Q, K, V, O, dO, n, width_, shape_.inputs_checked, dQ, dK, dV);
    for_pairs([&](std::size_t i, const AttentionShape&) {
      const Pair& p = pairs_[i];
      Matrix<T> dQs, dKs, dVs;
      contexts_[i]->backward(block(Q, p), block(K, p), block(V, p), block(O, p), block(dO, p), dQs,
                             dKs, dVs);
      block_of(dQ, p) = dQs;
      block_of(dK, p) = dKs;
      block_of(dV, p) = dVs;
    });
  }

  /// B H plans, sequence by sequence, each sequence's heads in order.
  std::vector<HeadPlan> plans() const override {
    std::vector<HeadPlan> out(pairs_.size());
    for (std::size_t i = 0; i < pairs_.size(); ++i) {
      if (!contexts_[i]) continue;
      const auto one = contexts_[i]->plans();
      if (!one.empty())
        out[std::size_t(pairs_[i].sequence * shape_.heads + pairs_[i].head)] = one[0];
    }
    return out;
  }

  std::string describe() const override {
    std::string out;
    const auto all = plans();
    for (std::size_t i = 0; i < all.size(); ++i) {
      out += (i ? "\n" : "") + std::string("sequence ") + std::to_string(Index(i) / shape_.heads) +
             ", head " + std::to_string(Index(i) % shape_.heads) + ": " + all[i].describe();
    }
    return out;
  }

 private:
  struct Pair {
    Index sequence, head;
  };

  Index length(Index b) const { return offsets_[std::size_t(b + 1)] - offsets_[std::size_t(b)]; }
  Index dh() const { return width_ / shape_.heads; }

  /// A contiguous copy of pair p's rows and head columns of X (the methods take whole matrices).
  Matrix<T> block(const Matrix<T>& X, const Pair& p) const {
    return X.block(offsets_[std::size_t(p.sequence)], p.head * dh(), length(p.sequence), dh());
  }
  auto block_of(Matrix<T>& X, const Pair& p) const {
    return X.block(offsets_[std::size_t(p.sequence)], p.head * dh(), length(p.sequence), dh());
  }

  /// Calls body(pair, shape of a one-head call) for every pair. With at least as many pairs as
  /// threads the pairs run in parallel, one thread each; otherwise one after another, each with
  /// all the threads.
  template <class Body>
  void for_pairs(Body&& body) const {
    AttentionShape one = shape_;
    one.heads = 1;
    one.inputs_checked = true;  // checked once for the whole batch
    double work = 0;
    for (const Pair& p : pairs_)
      work += double(length(p.sequence)) * double(length(p.sequence)) * double(dh());
    const int threads = threads_for(shape_.threading, Index(pairs_.size()), work);
    const bool across_pairs = threads > 1 && Index(pairs_.size()) >= threads;
    if (across_pairs) one.threading = Threading::serial();
    parallel_for(
        Index(pairs_.size()), across_pairs ? threads : 1,
        [&](Index i) { body(std::size_t(i), one); }, Schedule::next_free);
  }

  AttentionShape shape_;
  SequenceOffsets offsets_;
  Index width_;
  std::vector<Pair> pairs_;
  std::vector<std::unique_ptr<AttentionContext<T>>> contexts_;
};

}  // namespace detail

/// Runs `method` on a packed batch -- Q, K, V (n x H d_h) holding the sequences `offsets`
/// delimits -- as on each sequence alone: O (assigned, n x H d_h) row i attends only to rows of
/// its own sequence. Every (sequence, head) pair is a one-head call of its own, with its own
/// plan where the method plans from the data; the pairs run in parallel on shape.threading.
/// Returns the context whose backward() does the same for the gradients; its plans() are B H
/// plans, sequence by sequence. Empty offsets or a single sequence call the method directly.
template <class T>
std::unique_ptr<AttentionContext<T>> attention_forward_packed(
    const AttentionMethod<T>& method, const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
    const AttentionShape& shape, const SequenceOffsets& offsets, Matrix<T>& O) {
  if (offsets.size() <= 2) {
    check_offsets(offsets, Q.rows(), "packed attention");
    return method.forward(Q, K, V, shape, O);
  }
  require<PlanError>(!shape.shard.split(), "packed attention: a batch of several sequences ",
                     "cannot also be split across processes; split one long sequence, or pack ",
                     "sequences on each process without a shard");
  detail::check_attention_inputs(Q, K, V, shape);
  check_offsets(offsets, Q.rows(), "packed attention");
  auto context = std::make_unique<detail::PackedContext<T>>(shape, offsets, Q.cols());
  context->forward(method, Q, K, V, O);
  return context;
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_PACKED_INSTANCES(how, T)                                              \
  how class detail::PackedContext<T>;                                                  \
  how std::unique_ptr<AttentionContext<T>> attention_forward_packed<T>(                \
      const AttentionMethod<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>&, \
      const AttentionShape&, const SequenceOffsets&, Matrix<T>&);
POLYGRAD_INSTANCES(POLYGRAD_PACKED_INSTANCES)

}  // namespace polygrad
