#pragma once
// The polynomial approximation of one head's attention, fixed before the forward pass
// (design.md sections 3 and 6): the entry bound R, the polynomial p(t) ~ exp(R t), its
// symmetric features, and the scalings that map queries and keys into the unit ball.
//
// Scores are rewritten as S_ij = R t_ij + (a constant along row i) with t_ij = qh_i . kh_j,
// qh = q * q_scale and kh = (k - key_centre) * k_scale, so that |t_ij| <= 1 when certified.
// The row constant cancels in the softmax. The approximation is a constant of the backward
// pass: gradients are taken with R, the polynomial, the centre and the scalings held fixed.

#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "polygrad/approx/entry_bound.hpp"
#include "polygrad/approx/features.hpp"
#include "polygrad/approx/monomial_block.hpp"
#include "polygrad/approx/polynomial.hpp"
#include "polygrad/attention/method.hpp"
#include "polygrad/attention/plan.hpp"
#include "polygrad/attention/rates.hpp"
#include "polygrad/core/instances.hpp"

namespace polygrad {

/// How a refusal names the options of PolyOptions (and QK normalisation), so that it reaches
/// each caller in the terms it sets them in: the C++ names by default; the programs give their
/// flags (`--bound`), the Python module its keywords (`bound=R`). An empty name is an option
/// the caller cannot set, and a message leaves out the remedy that would need it.
struct OptionNames {
  std::string degree = "PolyOptions::degree";                                    ///< g
  std::string epsilon = "PolyOptions::epsilon";                                  ///< error target
  std::string max_degree = "PolyOptions::max_degree";                            ///< highest g
  std::string bound = "PolyOptions::bound";                                      ///< R, fixed
  std::string qk_norm = "TransformerConfig::qk_norm";                            ///< tau
  std::string allow_causal_data_bound = "PolyOptions::allow_causal_data_bound";  ///< opt-in
  std::string chunk = "PolyOptions::chunk";                                      ///< chunk rows
  std::string memory_budget = "PolyOptions::memory_budget";                      ///< bytes
};

/// What the caller asks of the polynomial method.
struct PolyOptions {
  /// The backward route (design.md section 4).
  PolyRoute route = PolyRoute::adjoint;
  /// How the polynomial approximates exp (approx/polynomial.hpp).
  PolynomialFamily family = PolynomialFamily::chebyshev;
  /// The degree g; 0 chooses the smallest degree whose certified error is <= epsilon.
  int degree = 0;
  /// Target certified relative error of P against exp on [-R, R], used when degree == 0.
  double epsilon = 1e-3;
  /// The highest degree the automatic choice may take.
  int max_degree = 24;
  /// R fixed by the caller (> 0). Otherwise the shape's score_bound (QK normalisation) is used,
  /// and without that R comes from Cauchy-Schwarz on the data (which, with a causal mask, lets
  /// row i depend weakly on later rows through R and the key centre: design.md section 3).
  double bound = 0;
  /// Centre the keys when R comes from the data (softmax is shift-invariant along a row).
  bool centre_keys = true;
  /// Causal attention whose R (and key centre) come from the data is refused: through them every
  /// row would depend on later rows (design.md section 3). Set this to accept such a model; its
  /// plans then report exactly_causal = false.
  bool allow_causal_data_bound = false;
  /// Rows per chunk in the causal routes (design.md section 5).
  Index chunk = 64;
  /// Largest memory, in bytes, the per-head feature states and chunk buffers may take.
  double memory_budget = 1024.0 * 1024.0 * 1024.0;
  /// Query rows per head the audit compares against exact attention (0: no audit).
  Index audit_rows = 0;
  /// Seed of the audit's row sample; head h draws with audit_seed + h.
  std::uint64_t audit_seed = 0x5eed;
  /// How refusals name these options (the caller's terms).
  OptionNames names;
  /// The kernel rates with which "auto" turns predicted costs into seconds (attention/rates.hpp);
  /// none: default_kernel_rates() (attention/calibration.hpp), measured on this host.
  std::shared_ptr<const KernelRates> rates;
};

/// The fixed approximation of one head.
struct PolyApproximation {
  ExpPolynomial polynomial;    ///< p(t) ~ exp(R t) on [-1, 1], R = plan.bound
  SymmetricFeatures features;  ///< phi and psi of d_h coordinates for p's coefficients
  Vector<double> pair_weight;  ///< (k) phi_f psi_f weight products, see monomial_block.hpp
  /// The scaled rows are qh = q q_scale and kh = (k - key_centre) k_scale, so that
  /// p(qh . kh) ~ exp(c q . (k - key_centre)) with |qh . kh| <= 1 when certified.
  ///@{
  double q_scale = 1, k_scale = 1;
  ///@}
  Vector<double> key_centre;  ///< (d_h); empty when keys are not centred
  HeadPlan plan;              ///< the head's plan: bound, degree, rank, errors, costs
};

namespace detail {

/// Bytes of state and chunk buffers a route needs per head with rank k (used by the budget).
inline double poly_memory(PolyRoute route, Index k, Index dh, Index chunk, std::size_t scalar) {
  const double state_cols = route == PolyRoute::paper ? double(dh * dh + 2 * dh) : double(dh + 1);
  return double(k) * state_cols * 2 * 8               // prefix and suffix states in double
         + double(k) * state_cols * scalar            // their working copy in T
         + 2.0 * double(chunk) * double(k) * scalar;  // a chunk's phi and psi rows
}

}  // namespace detail

namespace detail {

/// The polynomial of a plan whose n, head_dim, causal and bound are set: fits it (the given
/// degree, or the smallest certified for epsilon), fills degree, rank, the certified errors and
/// both costs, and checks the memory budget for scalars of `scalar_bytes`. PlanError when no
/// degree certifies epsilon or the rank does not fit.
inline ExpPolynomial fit_and_cost(HeadPlan& plan, const PolyOptions& options,
                                  std::size_t scalar_bytes) {
  const OptionNames& names = options.names;
  const Index n = plan.n, dh = plan.head_dim;
  ExpPolynomial polynomial =
      options.degree > 0 ? fit_exp(options.family, plan.bound, options.degree)
                         : fit_exp_for_error(options.family, plan.bound, options.epsilon,
                                             options.max_degree, names.epsilon, names.max_degree);
  // An explicitly requested degree may certify nothing (error >= 1): Taylor on concentrated
  // scores is often far better than its certificate (design.md section 3). The forward pass
  // then checks every normaliser, and the plan reports an unbounded output error.
  plan.degree = polynomial.degree;
  plan.rank = SymmetricFeatures::count(dh, polynomial.degree);
  plan.exp_error = polynomial.certified_error;
  plan.output_error = plan.exp_error < 1 ? 2 * plan.exp_error / (1 - plan.exp_error)
                                         : std::numeric_limits<double>::infinity();
  plan.exact_cost = cost::exact(n, dh, plan.causal);
  plan.poly_cost =
      options.route == PolyRoute::adjoint
          ? cost::poly_adjoint(n, dh, plan.degree, plan.rank, options.chunk, plan.causal)
          : cost::poly_paper(n, dh, plan.degree, plan.rank, options.chunk, plan.causal);
  const double bytes = poly_memory(options.route, plan.rank, dh, options.chunk, scalar_bytes);
  require<PlanError>(
      bytes <= options.memory_budget, "rank k = ", plan.rank, " (d_h = ", dh, ", degree ",
      plan.degree, ") needs ", bytes / (1 << 20), " MiB per head, over the budget of ",
      options.memory_budget / (1 << 20), " MiB: ",
      one_of({named("lower the degree", names.degree),
              named("raise the error target", names.epsilon), "bound the scores more tightly",
              named("raise the memory budget", names.memory_budget)}));
  return polynomial;
}

}  // namespace detail

/// The plan of one head of n rows of width d_h whose scores are bounded in advance by R (a fixed
/// bound or QK normalisation), made without its data: degree, rank, certified errors, costs and
/// both predicted seconds by `rates`. Programs use it to warn before a slow run. PlanError as
/// make_poly_approximation.
inline HeadPlan predict_plan(Index n, Index dh, bool causal, double R, const PolyOptions& options,
                             std::size_t scalar_bytes, const KernelRates& rates) {
  HeadPlan plan;
  plan.method = HeadMethod::poly;
  plan.n = n;
  plan.head_dim = dh;
  plan.causal = causal;
  plan.route = options.route;
  plan.family = options.family;
  plan.bound = R;
  plan.certified = true;
  detail::fit_and_cost(plan, options, scalar_bytes);
  predict_seconds(plan, scalar_bytes, rates);
  return plan;
}

/// Builds the approximation of one head from its queries and keys (n x d_h, matrices or views
/// of float or double), or throws PlanError saying what to change. Fills
/// plan.{bound, degree, rank, exp_error, costs, ...}. When shape.shard splits the sequence, the
/// rows are this process's shard and the plan is that of the whole sequence, the same on every
/// rank (its statistics are reduced over the group: a collective).
template <class DerivedQ, class DerivedK>
PolyApproximation make_poly_approximation(const Eigen::MatrixBase<DerivedQ>& Q,
                                          const Eigen::MatrixBase<DerivedK>& K,
                                          const AttentionShape& shape, const PolyOptions& options) {
  using T = typename DerivedQ::Scalar;
  const OptionNames& names = options.names;
  require<PlanError>(options.chunk >= 1, "the chunk size (", names.chunk,
                     ") must be at least 1, got ", options.chunk);
  require<PlanError>(options.degree >= 0, "the degree (", names.degree, ") must be >= 0, got ",
                     options.degree);
  require<PlanError>(options.bound >= 0 && std::isfinite(options.bound), "the bound R (",
                     names.bound, ") must be finite and >= 0 (0: automatic), got ", options.bound);
  const bool split = shape.shard.split();
  const Index n = split ? shape.shard.total : Q.rows(), dh = Q.cols();
  const double c = shape.scale;

  HeadPlan plan;
  plan.method = HeadMethod::poly;
  plan.n = n;
  plan.head_dim = dh;
  plan.causal = shape.causal;
  plan.route = options.route;
  plan.family = options.family;

  const bool fixed = options.bound > 0 || shape.score_bound > 0;
  const bool centre_keys = !fixed && options.centre_keys;
  const EntryBound cs = split ? cauchy_schwarz_bound(Q, K, c, centre_keys, *shape.shard.group)
                              : cauchy_schwarz_bound(Q, K, c, centre_keys);
  plan.cauchy_schwarz_bound = cs.R;

  double q_scale = 1, k_scale = 1;
  Vector<double> centre;
  if (fixed) {
    // R known in advance: t = c q.k / R needs no statistic of the sequence, so the model
    // stays exactly causal. It is certified when Cauchy-Schwarz confirms it on this data.
    plan.bound = options.bound > 0 ? options.bound : shape.score_bound;
    plan.bound_source = options.bound > 0 ? BoundSource::caller : BoundSource::qk_norm;
    plan.certified = cs.R <= plan.bound * (1 + 1e-6);
    q_scale = c / plan.bound;
  } else {
    require<PlanError>(!shape.causal || options.allow_causal_data_bound,
                       "causal polynomial attention with the bound R taken from the data ",
                       "(Cauchy-Schwarz over the whole sequence",
                       centre_keys ? ", keys centred on their mean" : "",
                       ") lets every row depend on later rows through R: use ",
                       detail::one_of({detail::named("QK normalisation", names.qk_norm),
                                       detail::named("a fixed bound", names.bound)}),
                       ", or set ", names.allow_causal_data_bound,
                       " to accept a model that is not exactly causal");
    plan.exactly_causal = !shape.causal;
    // R is kept away from 0 so that t = S / R still carries the score gradient when every
    // score is 0 (all queries zero, say).
    plan.bound = std::max(cs.R, 1e-3);
    plan.bound_source = BoundSource::cauchy_schwarz;
    plan.certified = true;
    plan.keys_centred = options.centre_keys;
    if (options.centre_keys) centre = cs.key_centre;
    // q_scale k_scale R = c, so |qh| = c q_max k_max / R <= 1 and |kh| <= 1.
    k_scale = cs.k_max > 0 ? 1.0 / cs.k_max : 1.0;
    q_scale = c / (plan.bound * k_scale);
  }

  ExpPolynomial polynomial = detail::fit_and_cost(plan, options, sizeof(T));
  SymmetricFeatures features(dh, polynomial.coeffs);
  Vector<double> weights = pair_weights(features, polynomial.coeffs);
  return PolyApproximation{
      std::move(polynomial), std::move(features), std::move(weights), q_scale, k_scale,
      std::move(centre),     std::move(plan)};
}

namespace detail {

/// qh = q * q_scale: (n, d_h).
template <class T>
Matrix<T> scaled_queries(const Matrix<T>& Q, const PolyApproximation& a) {
  return Q * T(a.q_scale);
}

/// kh = (k - key_centre) * k_scale: (n, d_h).
template <class T>
Matrix<T> scaled_keys(const Matrix<T>& K, const PolyApproximation& a) {
  if (a.key_centre.size() == 0) return K * T(a.k_scale);
  const RowVector<T> centre = a.key_centre.transpose().template cast<T>();
  return (K.rowwise() - centre) * T(a.k_scale);
}

}  // namespace detail
// Compiled instances (core/instances.hpp): the planner as PolyAttention calls it, on views.
#define POLYGRAD_POLY_APPROXIMATION_INSTANCES(how, T)                                           \
  how PolyApproximation make_poly_approximation<ConstMatrixRef<T>, ConstMatrixRef<T>>(          \
      const Eigen::MatrixBase<ConstMatrixRef<T>>&, const Eigen::MatrixBase<ConstMatrixRef<T>>&, \
      const AttentionShape&, const PolyOptions&);
POLYGRAD_INSTANCES(POLYGRAD_POLY_APPROXIMATION_INSTANCES)

}  // namespace polygrad
