#pragma once
// Polynomial-method attention as an AttentionMethod (DESIGN.md sections 3-6): per head, a plan
// (bound, polynomial, rank, predicted costs), the chunked forward of poly_forward.hpp, and the
// backward route the options name. In `automatic` mode a head whose polynomial plan would cost
// more than the exact path, or cannot be made at all, runs the exact path instead.

#include <optional>

#include "polygrad/attention/audit.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly_adjoint.hpp"
#include "polygrad/attention/poly_paper.hpp"
#include "polygrad/detail/heads.hpp"

namespace polygrad {

template <class T>
class PolyAttention final : public AttentionMethod<T> {
 public:
  /// `automatic`: choose per head between this polynomial plan and the exact path, by
  /// predicted cost (the "auto" method of the programs).
  explicit PolyAttention(PolyOptions options = {}, bool automatic = false)
      : options_(std::move(options)), automatic_(automatic) {}

  std::string name() const override { return automatic_ ? "auto" : "poly"; }
  const PolyOptions& options() const { return options_; }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    const Index dh = detail::check_attention_inputs(Q, K, V, shape);
    auto context = std::make_unique<Context>(shape, options_.chunk);
    context->heads.resize(std::size_t(shape.heads));
    O.resize(Q.rows(), Q.cols());
    detail::parallel_for(shape.heads, [&](Index h) {
      Head& head = context->heads[std::size_t(h)];
      const Matrix<T> q = detail::head_of(Q, h, dh), k = detail::head_of(K, h, dh);
      head.V = detail::head_of(V, h, dh);
      HeadPlan plan = plan_head(q, k, shape, head.approximation);
      if (plan.method == "exact") {
        head.Q = q;
        head.K = k;
        exact::forward<T>(head.Q, head.K, head.V, T(shape.scale), shape.causal, head.O, head.lse);
      } else {
        const PolyApproximation& a = *head.approximation;
        head.Q = detail::scaled_queries(q, a);
        head.K = detail::scaled_keys(k, a);
        poly::forward<T>(a, head.Q, head.K, head.V, shape.causal, options_.chunk, head.O, head.saved);
        if (options_.audit_rows > 0) {
          const auto rows = audit_sample(q.rows(), options_.audit_rows, options_.audit_seed + h);
          plan.audit_rows = Index(rows.size());
          plan.audit_error = audit_relative_error(q, k, head.V, shape.scale, shape.causal, head.O, rows);
        }
      }
      head.plan = plan;
      detail::set_head(O, h, head.O);
    });
    return context;
  }

 private:
  struct Head {
    std::optional<PolyApproximation> approximation;  // empty for an exact head
    HeadPlan plan;
    Matrix<T> Q, K, V, O;  // (n, d_h); Q and K scaled as the approximation says, if any
    Vector<T> lse;         // exact heads
    poly::ForwardSaved<T> saved;
  };

  /// The plan of one head; sets `approximation` when the head runs the polynomial method.
  HeadPlan plan_head(const Matrix<T>& q, const Matrix<T>& k, const AttentionShape& shape,
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

  class Context final : public AttentionContext<T> {
   public:
    Context(AttentionShape shape, Index chunk) : shape_(shape), chunk_(chunk) {}

    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out;
      for (const Head& head : heads) out.push_back(head.plan);
      return out;
    }

    void backward(const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      const Index n = heads.front().V.rows(), dh = heads.front().V.cols();
      require_shape(dO, n, dh * shape_.heads, "dO");
      require_finite(dO, "dO");
      dQ.resize(n, dh * shape_.heads);
      dK.resize(n, dh * shape_.heads);
      dV.resize(n, dh * shape_.heads);
      detail::parallel_for(shape_.heads, [&](Index h) {
        const Head& head = heads[std::size_t(h)];
        const Matrix<T> dO_h = detail::head_of(dO, h, dh);
        Matrix<T> dq, dk, dv;
        if (!head.approximation) {
          exact::backward<T>(head.Q, head.K, head.V, head.O, head.lse, dO_h, T(shape_.scale),
                             shape_.causal, dq, dk, dv);
        } else {
          const PolyApproximation& a = *head.approximation;
          if (a.plan.route == PolyRoute::adjoint) {
            poly::backward_adjoint<T>(a, head.Q, head.K, head.V, head.O, head.saved, dO_h,
                                      shape_.causal, chunk_, dq, dk, dv);
          } else {
            poly::backward_paper<T>(a, head.Q, head.K, head.V, head.O, head.saved, dO_h,
                                    shape_.causal, chunk_, dq, dk, dv);
          }
          // Back from the scaled coordinates: qh = q q_scale, kh = (k - centre) k_scale.
          dq *= T(a.q_scale);
          dk *= T(a.k_scale);
        }
        detail::set_head(dQ, h, dq);
        detail::set_head(dK, h, dk);
        detail::set_head(dV, h, dv);
      });
    }

    std::vector<Head> heads;

   private:
    AttentionShape shape_;
    Index chunk_;
  };

  PolyOptions options_;
  bool automatic_;
};

}  // namespace polygrad
