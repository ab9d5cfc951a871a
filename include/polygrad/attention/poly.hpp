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
    const Index n = Q.rows(), H = shape.heads;
    auto context = std::make_unique<Context>(shape, options_.chunk, n, Q.cols());
    std::vector<Head>& heads = context->heads;
    heads.resize(std::size_t(H));
    O.resize(n, Q.cols());
    // Plans first (O(n d_h) per head), so that the work of each head is known.
    const int plan_threads = detail::threads_for(shape.threading, H, double(H * n * dh) * 16);
    detail::parallel_for(H, plan_threads, [&](Index h) {
      Head& head = heads[std::size_t(h)];
      head.plan = plan_head(Q.middleCols(h * dh, dh), K.middleCols(h * dh, dh), shape,
                            head.approximation);
    });
    double work = 0;
    for (const Head& head : heads) work += head.approximation ? head.plan.poly_cost : head.plan.exact_cost;
    detail::parallel_for(H, detail::threads_for(shape.threading, H, work), [&](Index h) {
      Head& head = heads[std::size_t(h)];
      const auto q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh), v = V.middleCols(h * dh, dh);
      auto o = O.middleCols(h * dh, dh);
      head.normalisers.resize(n);  // lse (exact head) or z~ (polynomial head)
      if (!head.approximation) {  // contiguous copies for the tiles (detail::ExactHeads)
        const Matrix<T> qc = q, kc = k, vc = v;
        detail::exact_forward_blocks<T>(qc, kc, vc, T(shape.scale), shape.causal, exact::Tiles{},
                                        0, 1, o, head.normalisers);
        return;
      }
      poly::forward<T>(*head.approximation, q, k, v, shape.causal, options_.chunk, o,
                       head.normalisers);
      if (options_.audit_rows > 0) {
        const auto rows = audit_sample(n, options_.audit_rows, options_.audit_seed + std::uint64_t(h));
        head.plan.audit_rows = Index(rows.size());
        head.plan.audit_error = audit_relative_error<T>(q, k, v, shape.scale, shape.causal, o, rows);
      }
    });
    return context;
  }

 private:
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

  class Context final : public AttentionContext<T> {
   public:
    Context(AttentionShape shape, Index chunk, Index n, Index width)
        : shape_(shape), chunk_(chunk), n_(n), width_(width) {}

    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out;
      for (const Head& head : heads) out.push_back(head.plan);
      return out;
    }

    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      detail::prepare_backward(Q, K, V, O, dO, n_, width_, shape_.inputs_checked, dQ, dK, dV);
      const Index dh = width_ / shape_.heads;
      double work = 0;
      for (const Head& head : heads) work += head.approximation ? head.plan.poly_cost : head.plan.exact_cost;
      detail::parallel_for(shape_.heads, detail::threads_for(shape_.threading, shape_.heads, work),
                           [&](Index h) {
        const Head& head = heads[std::size_t(h)];
        const auto q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh), v = V.middleCols(h * dh, dh);
        const auto o = O.middleCols(h * dh, dh), dO_h = dO.middleCols(h * dh, dh);
        auto dq = dQ.middleCols(h * dh, dh), dk = dK.middleCols(h * dh, dh), dv = dV.middleCols(h * dh, dh);
        if (!head.approximation) {  // contiguous copies for the tiles (detail::ExactHeads)
          const Vector<T> delta = o.cwiseProduct(dO_h).rowwise().sum();  // (n) dO_i . O_i
          const Matrix<T> qc = q, kc = k, vc = v, dOc = dO_h;
          Matrix<T> dq_sum = Matrix<T>::Zero(n_, dh);
          detail::exact_backward_blocks<T>(qc, kc, vc, dOc, head.normalisers, delta, T(shape_.scale),
                                           shape_.causal, exact::Tiles{}, 0, 1, dq_sum, dk, dv);
          dq = T(shape_.scale) * dq_sum;
        } else if (head.approximation->plan.route == PolyRoute::adjoint) {
          poly::backward_adjoint<T>(*head.approximation, q, k, v, o, head.normalisers, dO_h,
                                    shape_.causal, chunk_, dq, dk, dv);
        } else {
          poly::backward_paper<T>(*head.approximation, q, k, v, o, head.normalisers, dO_h,
                                  shape_.causal, chunk_, dq, dk, dv);
        }
      });
    }

    std::vector<Head> heads;

   private:
    AttentionShape shape_;
    Index chunk_, n_, width_;
  };

  PolyOptions options_;
  bool automatic_;
};

}  // namespace polygrad
