#pragma once
// Exact multi-head attention (design.md section 2) as an AttentionMethod: the tiled kernels of
// exact_kernels.hpp on every head, and ring attention (exact_ring.hpp) when the sequence is split
// across processes.

#include <memory>
#include <string>
#include <vector>

#include "polygrad/attention/exact_decoding.hpp"
#include "polygrad/attention/exact_kernels.hpp"
#include "polygrad/attention/exact_ring.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Exact multi-head attention with the tiled kernels of polygrad::exact. Heads run in parallel;
/// when there are fewer heads than threads, each head's tile rows are split between threads
/// too. The context keeps lse per head (n numbers each): O(n d) memory in all. A sequence split
/// across processes (AttentionShape::shard) runs as ring attention (exact_ring.hpp).
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

  /// Assigns O (n x H d_h) and returns a context holding lse per head.
  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    if (!shape.shard.split()) {
      detail::check_attention_inputs(Q, K, V, shape);
      auto context = std::make_unique<Context>(shape, tiles_, Q.rows(), Q.cols());
      exact::detail::forward_heads(Q, K, V, pass_of(shape, tiles_), O, context->lse,
                                   context->threads);
      return context;
    }
    // Split across processes: checked on every rank at once, then an error on one rank ends
    // the program on all (the others would wait for its blocks).
    std::vector<Index> rows_of = detail::check_shard(shape, Q.rows(), Q.cols(), "exact attention");
    return detail::abort_on_every_rank_if_split(
        shape, [&]() -> std::unique_ptr<AttentionContext<T>> {
          detail::check_attention_inputs(Q, K, V, shape);
          auto context = std::make_unique<Context>(shape, tiles_, Q.rows(), Q.cols());
          context->rows_of = std::move(rows_of);
          exact::detail::ring_forward(Q, K, V, shape, context->rows_of, tiles_, O, context->lse,
                                      context->threads);
          return context;
        });
  }

  /// A cache of keys and values (exact_decoding.hpp).
  std::unique_ptr<DecodingState<T>> decoding_state(const AttentionShape& shape,
                                                   Index width) const override {
    return std::make_unique<exact::KeyValueCache<T>>(shape, width);
  }

 private:
  /// The kernels' description of a pass of `shape` with `tiles`.
  static exact::detail::HeadsPass<T> pass_of(const AttentionShape& shape,
                                             const exact::Tiles& tiles) {
    return {shape.heads, {T(shape.scale), shape.causal, tiles}, shape.threading};
  }

  exact::Tiles tiles_;

  class Context final : public AttentionContext<T> {
   public:
    Context(const AttentionShape& shape, const exact::Tiles& tiles, Index n, Index width)
        : shape(shape), tiles(tiles), n(n), width(width) {}

    /// Given dO (n x H d_h), assigns dQ, dK, dV by recomputation per head.
    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      if (!shape.shard.split()) {
        detail::prepare_backward(Q, K, V, O, dO, n, width, shape.inputs_checked, dQ, dK, dV);
        exact::detail::backward_heads(Q, K, V, O, lse, dO, pass_of(shape, tiles), dQ, dK, dV,
                                      threads);
        return;
      }
      detail::abort_on_every_rank_if_split(shape, [&] {
        detail::prepare_backward(Q, K, V, O, dO, n, width, shape.inputs_checked, dQ, dK, dV);
        exact::detail::ring_backward(Q, K, V, O, lse, dO, shape, rows_of, tiles, dQ, dK, dV,
                                     threads);
      });
    }

    /// One plan per head: the exact path and its predicted cost (attention/plan.hpp) for the
    /// whole sequence.
    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out(std::size_t(shape.heads));
      for (std::size_t h = 0; h < out.size(); ++h) {
        HeadPlan& plan = out[h];
        plan.n = shape.shard.split() ? shape.shard.total : n;
        plan.head_dim = width / shape.heads;
        plan.causal = shape.causal;
        plan.exact_cost = cost::exact(plan.n, plan.head_dim, shape.causal);
        plan.threads = threads[h];
      }
      return out;
    }

    AttentionShape shape;
    exact::Tiles tiles;
    Index n, width;
    std::vector<Vector<T>> lse;  // per head, n
    std::vector<Index> threads;  // per head, of the last pass
    std::vector<Index> rows_of;  // split across processes: the rows of every rank
  };
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_EXACT_ATTENTION_INSTANCES(how, T) how class ExactAttention<T>;
POLYGRAD_INSTANCES(POLYGRAD_EXACT_ATTENTION_INSTANCES)

}  // namespace polygrad
