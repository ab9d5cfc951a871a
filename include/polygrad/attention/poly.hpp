#pragma once
// Polynomial-method attention as an AttentionMethod (design.md sections 3-6): per head, a plan
// (bound, polynomial, rank, predicted costs), the chunked forward of poly_forward.hpp, and the
// backward route the options name. AutoAttention (auto.hpp) composes it with exact attention.

#include <optional>
#include <vector>

#include "polygrad/attention/audit.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly_adjoint.hpp"
#include "polygrad/attention/poly_decoding.hpp"
#include "polygrad/attention/poly_paper.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Polynomial-method attention (design.md sections 3-6) on every head: a PolyApproximation of
/// exp planned from the head's queries and keys, the chunked forward pass and the backward route
/// of the options. Configuration only, like every AttentionMethod.
template <class T>
class PolyAttention final : public AttentionMethod<T> {
 public:
  /// Plans every head with `options`.
  explicit PolyAttention(PolyOptions options = {}) : options_(std::move(options)) {}

  /// "poly".
  std::string name() const override { return "poly"; }
  /// The options every head is planned with.
  const PolyOptions& options() const { return options_; }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    if (shape.shard.split()) check_split(shape, Q, "polynomial attention");
    return detail::abort_on_every_rank_if_split(shape, [&] {
      detail::check_attention_inputs(Q, K, V, shape);
      return forward_planned(plan_heads(Q, K, shape), Q, K, V, shape, O);
    });
  }

  /// The recurrent state of every head (poly_decoding.hpp). Throws PlanError when the bound
  /// would come from the data (neither PolyOptions::bound nor a score bound in `shape`).
  std::unique_ptr<DecodingState<T>> decoding_state(const AttentionShape& shape,
                                                   Index width) const override {
    return std::make_unique<poly::RecurrentState<T>>(shape, width, options_);
  }

  // ---- The two halves of forward(), for methods that compose this one (AutoAttention). ----

  /// One approximation per head of checked Q, K (n x H d_h), planned with options(); throws
  /// PlanError if one cannot be made. Split across processes, a collective (one thread).
  std::vector<PolyApproximation> plan_heads(const Matrix<T>& Q, const Matrix<T>& K,
                                            const AttentionShape& shape) const {
    const Index H = shape.heads, dh = Q.cols() / H, n = Q.rows();
    std::vector<std::optional<PolyApproximation>> planned(static_cast<std::size_t>(H));
    const int threads =
        shape.shard.split() ? 1 : detail::threads_for(shape.threading, H, double(H * n * dh) * 16);
    detail::parallel_for(H, threads, [&](Index h) {
      planned[std::size_t(h)] = make_poly_approximation(Q.middleCols(h * dh, dh),
                                                        K.middleCols(h * dh, dh), shape, options_);
    });
    std::vector<PolyApproximation> heads;
    for (auto& head : planned) heads.push_back(std::move(*head));
    return heads;
  }

  /// On every rank of a sequence split across processes: checks that the shards fit together
  /// (detail::check_shard) and that the options allow a split sequence. `what` names the caller.
  void check_split(const AttentionShape& shape, const Matrix<T>& Q, const char* what) const {
    detail::check_shard(shape, Q.rows(), Q.cols(), what);
    require<PlanError>(options_.audit_rows == 0, "the audit compares rows against exact ",
                       "attention over the whole sequence, which one shard does not hold: set ",
                       "audit_rows = 0 when the sequence is split across processes");
  }

  /// forward() with the approximation of every head given (plan_heads() or the caller's own
  /// choice), on checked Q, K, V; across processes, each head's scan joined to the other
  /// shards' (the caller ran check_split() and catches errors as forward() does).
  std::unique_ptr<AttentionContext<T>> forward_planned(
      std::vector<PolyApproximation> approximations, const Matrix<T>& Q, const Matrix<T>& K,
      const Matrix<T>& V, const AttentionShape& shape, Matrix<T>& O) const {
    const Index n = Q.rows(), H = shape.heads, dh = Q.cols() / H;
    require<ShapeError>(Index(approximations.size()) == H,
                        "polynomial attention: ", approximations.size(),
                        " head approximations for ", H, " heads");
    auto context = std::make_unique<Context>(shape, options_.chunk, n, Q.cols());
    std::vector<Head>& heads = context->heads;
    double work = 0;
    for (PolyApproximation& approximation : approximations) {
      work += approximation.plan.poly_cost;
      heads.push_back({std::move(approximation), Vector<T>()});
    }
    O.resize(n, Q.cols());
    detail::parallel_for(H, context->head_threads(work), [&](Index h) {
      Head& head = heads[std::size_t(h)];
      const auto q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh),
                 v = V.middleCols(h * dh, dh);
      auto o = O.middleCols(h * dh, dh);
      head.normalisers.resize(n);
      poly::forward<T>(head.approximation, q, k, v, shape.causal, options_.chunk, o,
                       head.normalisers, context->link(Pass::forward_keys, h));
      if (options_.audit_rows > 0) {
        HeadPlan& plan = head.approximation.plan;
        const auto rows =
            audit_sample(n, options_.audit_rows, options_.audit_seed + std::uint64_t(h));
        plan.audit_rows = Index(rows.size());
        plan.audit_error = audit_relative_error<T>(q, k, v, shape.scale, shape.causal, o, rows);
      }
    });
    return context;
  }

 private:
  struct Head {
    PolyApproximation approximation;  // its plan included
    Vector<T> normalisers;            // (n) z~, the normaliser of every row
  };

  /// The scan passes whose states travel between shards; each has its own message tags.
  enum class Pass { forward_keys = 0, backward_keys = 1, backward_queries = 2 };

  class Context final : public AttentionContext<T> {
   public:
    Context(AttentionShape shape, Index chunk, Index n, Index width)
        : shape_(shape), chunk_(chunk), n_(n), width_(width) {}

    /// How a pass of head h joins the other shards (unsharded: not at all).
    poly::ScanLink link(Pass pass, Index h) const {
      if (!shape_.shard.split()) return {};
      return {shape_.shard, int(2 * (Index(pass) * shape_.heads + h))};
    }

    /// The threads the heads may use for `work`: one when they exchange states with other
    /// processes and MPI does not allow several threads to do so at once.
    int head_threads(double work) const {
      if (shape_.shard.split() && !shape_.shard.group->threads_may_communicate()) return 1;
      return detail::threads_for(shape_.threading, shape_.heads, work);
    }

    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out;
      for (const Head& head : heads) out.push_back(head.approximation.plan);
      return out;
    }

    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      // As in forward(): split across processes, an error on one rank ends the program on all.
      detail::abort_on_every_rank_if_split(shape_,
                                           [&] { backward_heads(Q, K, V, O, dO, dQ, dK, dV); });
    }

    std::vector<Head> heads;

   private:
    void backward_heads(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                        const Matrix<T>& O, const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK,
                        Matrix<T>& dV) {
      detail::prepare_backward(Q, K, V, O, dO, n_, width_, shape_.inputs_checked, dQ, dK, dV);
      const Index dh = width_ / shape_.heads;
      double work = 0;
      for (const Head& head : heads) work += head.approximation.plan.poly_cost;
      // Causal shards late in the sequence run the query pass first: its start comes from the
      // shard after them, which has its own start soonest (design.md section 8). Not causal,
      // each pass waits for the sum over every shard, so every rank runs them in one order.
      const bool queries_first = shape_.causal && 2 * shape_.shard.rank() >= shape_.shard.size();
      detail::parallel_for(shape_.heads, head_threads(work), [&](Index h) {
        const Head& head = heads[std::size_t(h)];
        const auto q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh),
                   v = V.middleCols(h * dh, dh);
        const auto o = O.middleCols(h * dh, dh), dO_h = dO.middleCols(h * dh, dh);
        auto dq = dQ.middleCols(h * dh, dh), dk = dK.middleCols(h * dh, dh),
             dv = dV.middleCols(h * dh, dh);
        const poly::BackwardLinks links{link(Pass::backward_keys, h),
                                        link(Pass::backward_queries, h), queries_first};
        if (head.approximation.plan.route == PolyRoute::adjoint) {
          poly::backward_adjoint<T>(head.approximation, q, k, v, {o, head.normalisers}, dO_h,
                                    shape_.causal, chunk_, {dq, dk, dv}, links);
        } else {
          poly::backward_paper<T>(head.approximation, q, k, v, {o, head.normalisers}, dO_h,
                                  shape_.causal, chunk_, {dq, dk, dv}, links);
        }
      });
    }

    AttentionShape shape_;
    Index chunk_, n_, width_;
  };

  PolyOptions options_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_POLY_ATTENTION_INSTANCES(how, T) how class PolyAttention<T>;
POLYGRAD_INSTANCES(POLYGRAD_POLY_ATTENTION_INSTANCES)

}  // namespace polygrad
