#pragma once
// The attention policy: how MultiHeadAttention computes softmax(c Q K^T) V and its gradients.
//
// An AttentionMethod is configuration only (const, shareable between layers and threads). Its
// forward() computes the output of all heads and returns an AttentionContext that holds what the
// backward pass needs; the layer keeps that context until backward(). Exact and polynomial
// methods implement this one interface, so layers never change when a method is added.

#include <memory>
#include <string>
#include <vector>

#include "polygrad/attention/plan.hpp"
#include "polygrad/core/error.hpp"
#include "polygrad/core/threading.hpp"
#include "polygrad/core/types.hpp"
#include "polygrad/parallel/group.hpp"

namespace polygrad {

/// What a multi-head attention call looks like, apart from the data.
struct AttentionShape {
  Index heads = 1;      ///< H; the head size is d_h = columns / H
  bool causal = false;  ///< mask j > i
  double scale = 1.0;   ///< c in S = c Q K^T
  /// If > 0, every score is known to lie in [-score_bound, score_bound] by construction
  /// (QK normalisation: |q| = |k| = 1 and c = tau give score_bound = tau). Methods that need an
  /// entry bound use it instead of estimating one from the data, which keeps a causal model
  /// exactly causal (design.md section 3).
  double score_bound = 0.0;
  /// The threads this call may use (core/threading.hpp).
  Threading threading;
  /// True when the caller has already checked that Q, K, V (and, in backward, dO) are finite,
  /// as a model does once where data enters it; a method called on its own checks them.
  bool inputs_checked = false;
  /// The part of the sequence that Q, K, V hold, when it is split across processes (design.md
  /// section 8); by default the whole sequence. Methods that cannot run split say so.
  SequenceShard shard;

  AttentionShape() = default;
  /// The shape of a call; threading and inputs_checked keep their defaults.
  AttentionShape(Index heads, bool causal, double scale, double score_bound = 0.0)
      : heads(heads), causal(causal), scale(scale), score_bound(score_bound) {}
};

/// What forward() saved for backward(): per head the normalisers or log-sum-exps and the plan,
/// O(n H) numbers. Q, K, V and O are not copied: the caller keeps them and passes them again.
template <class T>
class AttentionContext {
 public:
  virtual ~AttentionContext() = default;
  /// Given the Q, K, V that forward() received, the O it assigned and dO (each n x H d_h),
  /// assigns dQ, dK, dV (n x H d_h; Eigen's resize keeps the storage of a matrix that already
  /// has n x H d_h entries, so buffers that the caller keeps are reused).
  virtual void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                        const Matrix<T>& O, const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK,
                        Matrix<T>& dV) = 0;
  /// How each head was computed (method, degree, rank, bound, predicted cost, audit).
  virtual std::vector<HeadPlan> plans() const { return {}; }
  /// One line per head, from plans(): "head 0: poly adjoint chebyshev g=7 ...".
  virtual std::string describe() const {
    std::string out;
    const auto all = plans();
    for (std::size_t h = 0; h < all.size(); ++h)
      out += (h ? "\n" : "") + std::string("head ") + std::to_string(h) + ": " + all[h].describe();
    return out;
  }
};

/// What a method keeps to run causal attention one token at a time (inference/decoder.hpp):
/// the keys and values seen so far (exact attention) or a recurrent state of fixed size
/// (polynomial attention). It starts at position 0; its tokens come in order, as a whole prompt
/// (remember) or one at a time (step).
template <class T>
class DecodingState {
 public:
  virtual ~DecodingState() = default;
  /// Back to position 0: forgets every token.
  virtual void reset() = 0;
  /// Takes in the keys and values (n x H d_h each) of the next n tokens, whose attention output
  /// the caller computed with the method's forward() (a prompt).
  virtual void remember(const Matrix<T>& K, const Matrix<T>& V) = 0;
  /// Assigns o (1 x H d_h): the attention output of the next token from its q, k, v (1 x H d_h
  /// each) over every token so far and itself; then takes in its key and value.
  virtual void step(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) = 0;
  /// Whether the state has a fixed size (recurrent) rather than growing with every token.
  virtual bool recurrent() const = 0;
  /// One plan per head: how a step attends (degree, rank and bound of a recurrent state).
  virtual std::vector<HeadPlan> plans() const = 0;
};

/// An attention algorithm. Q, K, V and O are n x (H d_h); head h owns columns
/// [h d_h, (h + 1) d_h).
template <class T>
class AttentionMethod {
 public:
  virtual ~AttentionMethod() = default;
  /// The method's short name: "exact", "poly", "auto" or "naive".
  virtual std::string name() const = 0;
  /// Assigns O (its storage reused when it has the size already) and returns the state that backward() needs.
  virtual std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                                       const Matrix<T>& V,
                                                       const AttentionShape& shape,
                                                       Matrix<T>& O) const = 0;
  /// An empty state that decodes causal attention of `shape` (H heads, scale, bound, threads)
  /// and width H d_h one token at a time, the same function as forward() on the whole sequence.
  /// Throws PlanError, saying why, for a method that cannot decode so (the default).
  virtual std::unique_ptr<DecodingState<T>> decoding_state(const AttentionShape& shape,
                                                           Index width) const {
    (void)shape;
    (void)width;
    throw PlanError(detail::concat("method ", name(), " cannot decode one token at a time; ",
                                   "decode with method poly or exact"));
  }
};

namespace detail {

/// Checks that Q, K, V have one shape, finite values and a column count divisible by H;
/// returns d_h.
template <class T>
Index check_attention_inputs(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                             const AttentionShape& shape) {
  require<ShapeError>(shape.heads >= 1, "attention needs at least one head, got ", shape.heads);
  require<ShapeError>(Q.cols() % shape.heads == 0, "attention width ", Q.cols(),
                      " is not divisible by the number of heads ", shape.heads);
  require<ShapeError>(Q.rows() >= 1 || shape.shard.split(), "attention needs at least one token");
  require_shape(K, Q.rows(), Q.cols(), "K");
  require_shape(V, Q.rows(), Q.cols(), "V");
  if (!shape.inputs_checked) {
    require_finite(Q, "Q");
    require_finite(K, "K");
    require_finite(V, "V");
  }
  require<Error>(std::isfinite(shape.scale) && shape.scale > 0,
                 "attention scale must be finite and positive, got ", shape.scale);
  return Q.cols() / shape.heads;
}

/// body(), whose result it returns. Split across processes, an error on one rank would leave
/// the others waiting for its messages, so there it ends the program on every rank instead,
/// with the error's message.
template <class Body>
auto abort_on_every_rank_if_split(const AttentionShape& shape, Body&& body) -> decltype(body()) {
  if (!shape.shard.split()) return body();
  try {
    return body();
  } catch (const std::exception& e) {
    shape.shard.group->abort(e.what());
    throw;  // not reached: abort() does not return
  }
}

/// Throws PlanError if the sequence is split across processes: for methods that need all of it.
inline void require_whole_sequence(const AttentionShape& shape, const char* method) {
  require<PlanError>(!shape.shard.split(), method, " needs the whole sequence in one process; ",
                     "it does not run on a sequence split across processes (PolyAttention does)");
}

/// Checks, on every rank of a split sequence at once (three collectives), that the shards fit
/// together -- `rows` on this rank, contiguous in rank order, adding up to shard.total -- and
/// that every rank calls `what` with the same length, heads, width, mask, scale and bound.
/// Throws the same ShapeError on every rank otherwise, so that none waits for the others.
/// Returns the rows of every rank, in rank order.
inline std::vector<Index> check_shard(const AttentionShape& shape, Index rows, Index width,
                                      const char* what) {
  const SequenceShard& shard = shape.shard;
  SequenceGroup& group = *shard.group;
  require<ShapeError>(shard.outbox != nullptr, what, ": a split SequenceShard needs an outbox ",
                      "for the states it hands on; make it with shard_of()");
  // What the ranks must agree on, each with its largest and (negated) smallest value over the
  // ranks in one maximum.
  const char* names[] = {
      "length of the sequence", "heads", "width", "causal mask", "scale", "score bound"};
  const double values[] = {double(shard.total),      double(shape.heads), double(width),
                           shape.causal ? 1.0 : 0.0, shape.scale,         shape.score_bound};
  constexpr std::size_t agreed = sizeof(values) / sizeof(values[0]);
  double extremes[2 * agreed];
  for (std::size_t i = 0; i < agreed; ++i) {
    extremes[2 * i] = values[i];
    extremes[2 * i + 1] = -values[i];
  }
  group.max(extremes, Index(2 * agreed));
  for (std::size_t i = 0; i < agreed; ++i) {
    if (extremes[2 * i] != -extremes[2 * i + 1]) {
      throw ShapeError(concat(what, ": the ranks disagree on the ", names[i], " (rank ",
                              group.rank(), " has ", values[i], "; the ranks range from ",
                              -extremes[2 * i + 1], " to ", extremes[2 * i], ")"));
    }
  }
  std::vector<double> counts(std::size_t(group.size()), 0.0);  // rows per rank
  counts[std::size_t(group.rank())] = double(rows);
  group.sum(counts.data(), Index(counts.size()));
  double before = 0, all = 0;
  std::vector<Index> rows_of(counts.size());
  for (int r = 0; r < group.size(); ++r) {
    if (r < group.rank()) before += counts[std::size_t(r)];
    all += counts[std::size_t(r)];
    rows_of[std::size_t(r)] = Index(counts[std::size_t(r)]);
  }
  require_on_every_rank<ShapeError>(
      group, double(shard.begin) == before && all == double(shard.total), what,
      ": the shards do not make up the sequence: this rank ", "holds ", rows, " rows from row ",
      shard.begin, " of ", shard.total, ", the ranks hold ", all, " rows in all; give ",
      "each rank the rows shard_of() names");
  return rows_of;
}

/// Checks what a context's backward() receives -- Q, K, V, O and dO all n x `width` as in the
/// forward pass, and dO finite unless the caller checked it -- and sizes dQ, dK, dV.
template <class T>
void prepare_backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                      const Matrix<T>& O, const Matrix<T>& dO, Index n, Index width,
                      bool inputs_checked, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) {
  require_shape(Q, n, width, "Q passed to attention backward (it must be forward's Q)");
  require_shape(K, n, width, "K passed to attention backward (it must be forward's K)");
  require_shape(V, n, width, "V passed to attention backward (it must be forward's V)");
  require_shape(O, n, width, "O passed to attention backward (it must be what forward assigned)");
  require_shape(dO, n, width, "dO");
  if (!inputs_checked) require_finite(dO, "dO");
  dQ.resize(n, width);
  dK.resize(n, width);
  dV.resize(n, width);
}

}  // namespace detail
}  // namespace polygrad
