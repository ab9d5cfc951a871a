#pragma once
// The "auto" method: per head, the polynomial method or exact attention, whichever is predicted
// faster on this host (design.md section 6: each path's cost over its kernel's measured rate),
// composed from PolyAttention and ExactAttention. A head whose polynomial plan cannot be made at
// all runs exact attention, and its plan says why. Each method runs once, on the columns of its
// heads.

#include <memory>
#include <optional>
#include <vector>

#include "polygrad/attention/calibration.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/attention/rates.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// Per head the faster of PolyAttention (planned with the options) and ExactAttention, by the
/// plan's predicted seconds: its costs (attention/plan.hpp) over the rates of the two kernels
/// (options.rates, or default_kernel_rates()). The plan of an exact head reports the polynomial
/// plan it was weighed against, or why none could be made. Configuration only, like every
/// AttentionMethod.
template <class T>
class AutoAttention final : public AttentionMethod<T> {
 public:
  /// Plans every head with `options`; exact heads run with `tiles`.
  explicit AutoAttention(PolyOptions options = {}, exact::Tiles tiles = exact::Tiles{})
      : exact_(tiles), poly_(std::move(options)) {}

  /// "auto".
  std::string name() const override { return "auto"; }
  /// The options every head is planned with.
  const PolyOptions& options() const { return poly_.options(); }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    if (shape.shard.split()) poly_.check_split(shape, Q, "automatic attention");
    return detail::abort_on_every_rank_if_split(shape, [&] {
      detail::check_attention_inputs(Q, K, V, shape);
      return forward_chosen(Q, K, V, shape, O);
    });
  }

  /// Refuses: the path of every head depends on the sequence length.
  std::unique_ptr<DecodingState<T>> decoding_state(const AttentionShape&, Index) const override {
    throw PlanError(
        "method auto chooses the path of every head from the sequence length, so it "
        "cannot decode one token at a time; decode with method poly or exact");
  }

 private:
  /// The heads one of the two methods runs, and what its forward() returned.
  struct Group {
    std::vector<Index> heads;  // in increasing order
    std::unique_ptr<AttentionContext<T>> context;

    /// `shape` for this group's heads only.
    AttentionShape shape_of(const AttentionShape& shape) const {
      AttentionShape part = shape;
      part.heads = Index(heads.size());
      part.inputs_checked = true;  // checked once for all heads
      return part;
    }
  };

  /// The columns of `heads` of X (n x H d_h), in that order: n x |heads| d_h. The whole of X
  /// when the group has every head (no copy).
  static const Matrix<T>& columns(const Matrix<T>& X, const Group& group, Index H, Index dh,
                                  Matrix<T>& copy) {
    if (Index(group.heads.size()) == H) return X;
    copy.resize(X.rows(), Index(group.heads.size()) * dh);
    for (std::size_t i = 0; i < group.heads.size(); ++i)
      copy.middleCols(Index(i) * dh, dh) = X.middleCols(group.heads[i] * dh, dh);
    return copy;
  }

  /// Writes `part` (n x |heads| d_h) to the columns of `heads` of X (n x H d_h); nothing when
  /// part is X itself.
  static void scatter(const Matrix<T>& part, const Group& group, Index dh, Matrix<T>& X) {
    if (&part == &X) return;
    for (std::size_t i = 0; i < group.heads.size(); ++i)
      X.middleCols(group.heads[i] * dh, dh) = part.middleCols(Index(i) * dh, dh);
  }

  class Context final : public AttentionContext<T> {
   public:
    Context(const AttentionShape& shape, Index n, Index width) : shape(shape), n(n), width(width) {}

    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      detail::abort_on_every_rank_if_split(shape, [&] {
        detail::prepare_backward(Q, K, V, O, dO, n, width, shape.inputs_checked, dQ, dK, dV);
        const Index H = shape.heads, dh = width / H;
        for (Group* group : {&exact, &poly}) {
          if (group->heads.empty()) continue;
          Matrix<T> q, k, v, o, d_o;
          Matrix<T> dq_part, dk_part, dv_part;
          const bool whole = Index(group->heads.size()) == H;
          Matrix<T>& dq = whole ? dQ : dq_part;
          Matrix<T>& dk = whole ? dK : dk_part;
          Matrix<T>& dv = whole ? dV : dv_part;
          group->context->backward(columns(Q, *group, H, dh, q), columns(K, *group, H, dh, k),
                                   columns(V, *group, H, dh, v), columns(O, *group, H, dh, o),
                                   columns(dO, *group, H, dh, d_o), dq, dk, dv);
          scatter(dq, *group, dh, dQ);
          scatter(dk, *group, dh, dK);
          scatter(dv, *group, dh, dV);
        }
      });
    }

    /// Per head, in head order: the plan of the method that ran it. An exact head's plan
    /// carries the polynomial plan it was weighed against.
    std::vector<HeadPlan> plans() const override {
      std::vector<HeadPlan> out = chosen;
      for (const Group* group : {&exact, &poly}) {
        if (group->heads.empty()) continue;
        const std::vector<HeadPlan> ran = group->context->plans();
        for (std::size_t i = 0; i < group->heads.size(); ++i) {
          HeadPlan& plan = out[std::size_t(group->heads[i])];
          if (group == &poly)
            plan = ran[i];
          else
            plan.threads = ran[i].threads;
        }
      }
      return out;
    }

    AttentionShape shape;
    Index n, width;
    std::vector<HeadPlan> chosen;  // per head, as chosen before the pass
    Group exact, poly;
  };

  /// Plans every head, runs each group with its method and returns the joint context.
  std::unique_ptr<AttentionContext<T>> forward_chosen(const Matrix<T>& Q, const Matrix<T>& K,
                                                      const Matrix<T>& V,
                                                      const AttentionShape& shape,
                                                      Matrix<T>& O) const {
    const Index n = Q.rows(), H = shape.heads, dh = Q.cols() / H;
    auto context = std::make_unique<Context>(shape, n, Q.cols());
    std::vector<std::optional<PolyApproximation>> candidates(static_cast<std::size_t>(H));
    std::vector<std::string> refusals(static_cast<std::size_t>(H));
    context->chosen.resize(std::size_t(H));
    const int threads =
        shape.shard.split() ? 1 : detail::threads_for(shape.threading, H, double(H * n * dh) * 16);
    detail::parallel_for(H, threads, [&](Index h) {
      candidates[std::size_t(h)] = plan_polynomial(
          Q.middleCols(h * dh, dh), K.middleCols(h * dh, dh), shape, refusals[std::size_t(h)]);
    });
    // Serially: a rate not known yet is measured here, on one thread of an otherwise idle pass.
    // A sequence split across processes is decided by the table, the same on every rank.
    const std::shared_ptr<const KernelRates> rates =
        shape.shard.split()     ? std::make_shared<TableRates>()
        : poly_.options().rates ? poly_.options().rates
                                : default_kernel_rates();
    for (Index h = 0; h < H; ++h) {
      context->chosen[std::size_t(h)] =
          choose(shape.shard.split() ? shape.shard.total : n, dh, shape, *rates,
                 candidates[std::size_t(h)], refusals[std::size_t(h)]);
    }
    std::vector<PolyApproximation> approximations;
    for (Index h = 0; h < H; ++h) {
      auto& candidate = candidates[std::size_t(h)];
      (candidate ? context->poly : context->exact).heads.push_back(h);
      if (candidate) approximations.push_back(std::move(*candidate));
    }
    require<PlanError>(!shape.shard.split() || context->exact.heads.empty(), "head plan: the ",
                       "exact path was chosen for a sequence split across processes, which ",
                       "polynomial attention cannot run; use ExactAttention for such heads, or ",
                       "method poly");
    O.resize(n, Q.cols());
    Matrix<T> q, k, v, o_part;
    for (Group* group : {&context->exact, &context->poly}) {
      if (group->heads.empty()) continue;
      const Matrix<T>& Qg = columns(Q, *group, H, dh, q);
      const Matrix<T>& Kg = columns(K, *group, H, dh, k);
      const Matrix<T>& Vg = columns(V, *group, H, dh, v);
      Matrix<T>& Og = Index(group->heads.size()) == H ? O : o_part;
      const AttentionShape part = group->shape_of(shape);
      group->context = group == &context->poly
                           ? poly_.forward_planned(std::move(approximations), Qg, Kg, Vg, part, Og)
                           : exact_.forward(Qg, Kg, Vg, part, Og);
      scatter(Og, *group, dh, O);
    }
    return context;
  }

  /// One head's polynomial plan, or none (with the reason in `refused`) when no plan meets the
  /// options. Runs on the heads in parallel.
  std::optional<PolyApproximation> plan_polynomial(const ConstMatrixRef<T>& q,
                                                   const ConstMatrixRef<T>& k,
                                                   const AttentionShape& shape,
                                                   std::string& refused) const {
    try {
      return make_poly_approximation(q, k, shape, poly_.options());
    } catch (const PlanError& e) {
      refused = e.what();
      return std::nullopt;
    }
  }

  /// The plan of one head of n rows: keeps `candidate` when its predicted seconds are below
  /// exact attention's; otherwise (or with no candidate) an exact plan that reports the
  /// polynomial plan weighed, or why none could be made.
  static HeadPlan choose(Index n, Index dh, const AttentionShape& shape, const KernelRates& rates,
                         std::optional<PolyApproximation>& candidate, const std::string& refused) {
    if (candidate) {
      predict_seconds(candidate->plan, sizeof(T), rates);
      if (candidate->plan.poly_seconds < candidate->plan.exact_seconds) return candidate->plan;
    }
    HeadPlan exact_plan;
    exact_plan.n = n;
    exact_plan.head_dim = dh;
    exact_plan.causal = shape.causal;
    exact_plan.exact_cost = cost::exact(n, dh, shape.causal);
    if (candidate) {
      exact_plan.route = candidate->plan.route;
      exact_plan.degree = candidate->plan.degree;
      exact_plan.rank = candidate->plan.rank;
      exact_plan.bound = candidate->plan.bound;
      exact_plan.poly_cost = candidate->plan.poly_cost;
      candidate.reset();
    }
    exact_plan.poly_refused = refused;
    predict_seconds(exact_plan, sizeof(T), rates);
    return exact_plan;
  }

  ExactAttention<T> exact_;
  PolyAttention<T> poly_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_AUTO_ATTENTION_INSTANCES(how, T) how class AutoAttention<T>;
POLYGRAD_INSTANCES(POLYGRAD_AUTO_ATTENTION_INSTANCES)

}  // namespace polygrad
