#pragma once
// Polynomial-method attention as an AttentionMethod (design.md sections 3-6): per head, a plan
// (bound, polynomial, rank, predicted costs), the chunked forward of poly_forward.hpp, and the
// backward route the options name. With PolyUse::when_cheaper a head whose polynomial plan would
// cost more than the exact path, or cannot be made at all, runs the exact path instead.

#include <optional>

#include "polygrad/attention/audit.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly_adjoint.hpp"
#include "polygrad/attention/poly_paper.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Which heads a PolyAttention runs the polynomial method on.
enum class PolyUse {
  every_head,    ///< every head, whatever it costs (the "poly" method of the programs)
  when_cheaper,  ///< per head, the polynomial plan or the exact path, whichever is predicted
                 ///< cheaper or, if no plan can be made, exact (the "auto" method)
};

/// Polynomial-method attention (design.md sections 3-6): per head a PolyApproximation of exp
/// planned from its queries and keys, the chunked forward pass and the backward route of the
/// options. With PolyUse::when_cheaper a head runs the exact kernels instead when they are
/// predicted to cost less or no polynomial plan can be made. Configuration only, like every
/// AttentionMethod.
template <class T>
class PolyAttention final : public AttentionMethod<T> {
 public:
  /// Plans every head with `options`; `use` says which heads run the polynomial method.
  explicit PolyAttention(PolyOptions options = {}, PolyUse use = PolyUse::every_head)
      : options_(std::move(options)), automatic_(use == PolyUse::when_cheaper) {}

  std::string name() const override { return automatic_ ? "auto" : "poly"; }
  /// The options every head is planned with.
  const PolyOptions& options() const { return options_; }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    if (!shape.shard.split()) return forward_heads(Q, K, V, shape, O);
    // Split across processes: an error on one rank would leave the others waiting for its
    // states, so it ends the program on every rank, with its message.
    detail::check_shard(shape, Q.rows(), Q.cols(), "polynomial attention");
    require<PlanError>(options_.audit_rows == 0, "the audit compares rows against exact ",
                       "attention over the whole sequence, which one shard does not hold: set ",
                       "audit_rows = 0 when the sequence is split across processes");
    std::unique_ptr<AttentionContext<T>> context;
    try {
      context = forward_heads(Q, K, V, shape, O);
    } catch (const std::exception& e) {
      shape.shard.group->abort(e.what());
    }
    return context;
  }

 private:
  /// forward() for every head; across processes, each head's scan joined to the other shards'.
  std::unique_ptr<AttentionContext<T>> forward_heads(const Matrix<T>& Q, const Matrix<T>& K,
                                                     const Matrix<T>& V,
                                                     const AttentionShape& shape,
                                                     Matrix<T>& O) const {
    const Index dh = detail::check_attention_inputs(Q, K, V, shape);
    const Index n = Q.rows(), H = shape.heads;
    const bool split = shape.shard.split();
    auto context = std::make_unique<Context>(shape, options_.chunk, n, Q.cols());
    std::vector<Head>& heads = context->heads;
    heads.resize(std::size_t(H));
    O.resize(n, Q.cols());
    // Plans first (O(n d_h) per head), so that the work of each head is known. Split across
    // processes, they reduce statistics over the group: collectives, made from one thread.
    const int plan_threads =
        split ? 1 : detail::threads_for(shape.threading, H, double(H * n * dh) * 16);
    detail::parallel_for(H, plan_threads, [&](Index h) {
      Head& head = heads[std::size_t(h)];
      head.plan =
          plan_head(Q.middleCols(h * dh, dh), K.middleCols(h * dh, dh), shape, head.approximation);
    });
    for (const Head& head : heads) {
      require<PlanError>(!split || head.approximation, "head plan: the exact path was chosen ",
                         "for a sequence split across processes, which polynomial attention ",
                         "cannot run; use ExactAttention for such heads, or method poly");
    }
    double work = 0;
    for (const Head& head : heads)
      work += head.approximation ? head.plan.poly_cost : head.plan.exact_cost;
    detail::parallel_for(H, context->head_threads(work), [&](Index h) {
      Head& head = heads[std::size_t(h)];
      const auto q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh),
                 v = V.middleCols(h * dh, dh);
      auto o = O.middleCols(h * dh, dh);
      head.normalisers.resize(n);  // lse (exact head) or z~ (polynomial head)
      if (!head.approximation) {   // contiguous copies for the tiles (detail::ExactHeads)
        const Matrix<T> qc = q, kc = k, vc = v;
        exact::detail::forward_blocks<T>(qc, kc, vc, T(shape.scale), shape.causal, exact::Tiles{},
                                         0, 1, o, head.normalisers);
        return;
      }
      poly::forward<T>(*head.approximation, q, k, v, shape.causal, options_.chunk, o,
                       head.normalisers, context->link(Pass::forward_keys, h));
      if (options_.audit_rows > 0) {
        const auto rows =
            audit_sample(n, options_.audit_rows, options_.audit_seed + std::uint64_t(h));
        head.plan.audit_rows = Index(rows.size());
        head.plan.audit_error =
            audit_relative_error<T>(q, k, v, shape.scale, shape.causal, o, rows);
      }
    });
    return context;
  }

  struct Head {
    std::optional<PolyApproximation> approximation;  // empty for an exact head
    HeadPlan plan;
    Vector<T> normalisers;  // (n) lse of an exact head, z~ of a polynomial one
  };

  /// The plan of one head; sets `approximation` when the head runs the polynomial method.
  HeadPlan plan_head(const ConstMatrixRef<T>& q, const ConstMatrixRef<T>& k,
                     const AttentionShape& shape,
                     std::optional<PolyApproximation>& approximation) const {
    if (!automatic_) {
      approximation = make_poly_approximation(q, k, shape, options_);
      return approximation->plan;
    }
    HeadPlan exact_plan;
    exact_plan.n = q.rows();
    exact_plan.head_dim = q.cols();
    exact_plan.causal = shape.causal;
    exact_plan.exact_cost = cost::exact(q.rows(), q.cols(), shape.causal);
    try {
      PolyApproximation candidate = make_poly_approximation(q, k, shape, options_);
      if (candidate.plan.poly_cost < candidate.plan.exact_cost) {
        approximation = std::move(candidate);
        return approximation->plan;
      }
      exact_plan.route = candidate.plan.route;
      exact_plan.degree = candidate.plan.degree;
      exact_plan.rank = candidate.plan.rank;
      exact_plan.bound = candidate.plan.bound;
      exact_plan.poly_cost = candidate.plan.poly_cost;
    } catch (const PlanError&) {
      // No polynomial plan meets the request: the exact path is the only choice.
    }
    return exact_plan;
  }

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
      for (const Head& head : heads) out.push_back(head.plan);
      return out;
    }

    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      if (!shape_.shard.split()) return backward_heads(Q, K, V, O, dO, dQ, dK, dV);
      try {  // as in forward(): an error on one rank ends the program on all
        backward_heads(Q, K, V, O, dO, dQ, dK, dV);
      } catch (const std::exception& e) {
        shape_.shard.group->abort(e.what());
      }
    }

    std::vector<Head> heads;

   private:
    void backward_heads(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                        const Matrix<T>& O, const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK,
                        Matrix<T>& dV) {
      detail::prepare_backward(Q, K, V, O, dO, n_, width_, shape_.inputs_checked, dQ, dK, dV);
      const Index dh = width_ / shape_.heads;
      double work = 0;
      for (const Head& head : heads)
        work += head.approximation ? head.plan.poly_cost : head.plan.exact_cost;
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
        if (!head.approximation) {  // contiguous copies for the tiles (detail::ExactHeads)
          const Vector<T> delta = o.cwiseProduct(dO_h).rowwise().sum();  // (n) dO_i . O_i
          const Matrix<T> qc = q, kc = k, vc = v, dOc = dO_h;
          Matrix<T> dq_sum = Matrix<T>::Zero(n_, dh);
          exact::detail::backward_blocks<T>(qc, kc, vc, dOc, head.normalisers, delta,
                                            T(shape_.scale), shape_.causal, exact::Tiles{}, 0, 1,
                                            dq_sum, dk, dv);
          dq = T(shape_.scale) * dq_sum;
        } else {
          const poly::BackwardLinks links{link(Pass::backward_keys, h),
                                          link(Pass::backward_queries, h), queries_first};
          if (head.approximation->plan.route == PolyRoute::adjoint) {
            poly::backward_adjoint<T>(*head.approximation, q, k, v, o, head.normalisers, dO_h,
                                      shape_.causal, chunk_, dq, dk, dv, links);
          } else {
            poly::backward_paper<T>(*head.approximation, q, k, v, o, head.normalisers, dO_h,
                                    shape_.causal, chunk_, dq, dk, dv, links);
          }
        }
      });
    }

    AttentionShape shape_;
    Index chunk_, n_, width_;
  };

  PolyOptions options_;
  bool automatic_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_POLY_ATTENTION_INSTANCES(how, T) how class PolyAttention<T>;
POLYGRAD_INSTANCES(POLYGRAD_POLY_ATTENTION_INSTANCES)

}  // namespace polygrad
