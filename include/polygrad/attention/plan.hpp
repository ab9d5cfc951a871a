#pragma once
// How one head's attention is computed, and what it is predicted to cost (design.md section 6).
//
// Every attention context reports one HeadPlan per head, so callers and programs can see which
// method ran, with which degree and rank, and what error bound it certifies.

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "polygrad/approx/polynomial.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// The backward route through the polynomial approximation (design.md section 4).
enum class PolyRoute {
  adjoint,  ///< exact gradient of the approximate forward, O(n k d_h)
  paper,    ///< the paper's formulas with f~ in place of f, O(n k d_h^2)
};

/// "adjoint" or "paper".
inline std::string to_string(PolyRoute route) {
  return route == PolyRoute::adjoint ? "adjoint" : "paper";
}

/// The route named "adjoint" or "paper"; PlanError for anything else.
inline PolyRoute parse_route(const std::string& name) {
  if (name == "adjoint") return PolyRoute::adjoint;
  if (name == "paper") return PolyRoute::paper;
  throw PlanError(
      detail::concat("unknown backward route '", name, "'; use \"adjoint\" or \"paper\""));
}

/// How one head's attention is computed.
enum class HeadMethod {
  exact,  ///< the tiled exact path (attention/exact_kernels.hpp)
  poly,   ///< the polynomial method (design.md section 3)
};

/// "exact" or "poly".
inline std::string to_string(HeadMethod method) {
  return method == HeadMethod::poly ? "poly" : "exact";
}

/// Where a polynomial plan's entry bound R came from (design.md section 3).
enum class BoundSource {
  none,            ///< no polynomial plan was made
  cauchy_schwarz,  ///< max |q| max |k| on the data (with the keys centred when asked)
  caller,          ///< PolyOptions::bound
  qk_norm,         ///< tau of QK normalisation, which bounds every score by construction
};

/// "none", "cauchy-schwarz", "caller" or "qk-norm".
inline std::string to_string(BoundSource source) {
  switch (source) {
    case BoundSource::cauchy_schwarz: return "cauchy-schwarz";
    case BoundSource::caller: return "caller";
    case BoundSource::qk_norm: return "qk-norm";
    case BoundSource::none: break;
  }
  return "none";
}

/// One head's plan. Costs are predicted multiply-adds of forward + backward.
struct HeadPlan {
  HeadMethod method = HeadMethod::exact;  ///< which path ran (or will run) this head
  /// n, the rows of the whole sequence, and d_h, the head width.
  ///@{
  Index n = 0, head_dim = 0;
  ///@}
  bool causal = false;  ///< the causal mask was applied
  /// Under the causal mask, whether row i depends on rows <= i only: false when R or the key
  /// centre came from the whole sequence (PolyOptions::allow_causal_data_bound).
  bool exactly_causal = true;
  // The fields below describe the polynomial approximation; for an exact head they describe
  // the approximation that was considered (when a choice was made) or stay at their defaults.
  PolyRoute route = PolyRoute::adjoint;                   ///< the backward route
  PolynomialFamily family = PolynomialFamily::chebyshev;  ///< how P was fitted
  BoundSource bound_source = BoundSource::none;           ///< where R came from
  double bound = 0;                 ///< R: the scores used lie in [-R, R] when `certified`
  double cauchy_schwarz_bound = 0;  ///< what Cauchy-Schwarz gives on this data (O(n d) check)
  bool certified = false;           ///< the data provably satisfies |scores| <= R
  bool keys_centred = false;        ///< keys centred on their mean (R from the data, centre_keys)
  int degree = 0;                   ///< g
  Index rank = 0;                   ///< k = C(d_h + g, g)
  double exp_error = 0;             ///< certified max |P(s)/exp(s) - 1| on [-R, R]
  double output_error = 0;          ///< certified |O~_i - O_i| <= this (design.md section 3)
  double exact_cost = 0;            ///< predicted multiply-adds, exact tiled path
  double poly_cost = 0;             ///< predicted multiply-adds, polynomial route
  /// Predicted seconds of forward + backward of this head on one thread, each path's cost over
  /// its kernel's rate (attention/rates.hpp); 0 where not predicted. "auto" compares these.
  ///@{
  double exact_seconds = 0, poly_seconds = 0;
  ///@}
  std::string rates_source;  ///< where the rates behind the predicted seconds came from
  /// Why no polynomial plan could be made for this head ("auto" then runs it exactly); empty
  /// when one was made or none was asked for.
  std::string poly_refused;
  Index threads = 1;     ///< threads that ran this head's work in its last pass
  Index audit_rows = 0;  ///< rows sampled by the audit (0: no audit)
  double audit_error = std::numeric_limits<double>::quiet_NaN();  ///< measured relative error

  /// One line, e.g. "poly adjoint chebyshev g=7 k=6435 R=2 (qk-norm) eps<=3.3e-04 ...".
  std::string describe() const {
    std::ostringstream s;
    s.precision(3);
    if (method == HeadMethod::exact) {
      s << "exact (tiled)";
      if (exact_seconds > 0) s << " predicted " << exact_seconds << " s";
      if (poly_seconds > 0)
        s << " (poly " << to_string(route) << " g=" << degree << " k=" << rank << " predicted "
          << poly_seconds << " s)";
      else if (poly_cost > 0)
        s << " (poly would cost " << poly_cost / exact_cost << "x: k=" << rank << ")";
      if (!poly_refused.empty()) s << " (no polynomial plan: " << poly_refused << ")";
      return s.str();
    }
    s << "poly " << to_string(route) << ' ' << to_string(family) << " g=" << degree << " k=" << rank
      << " R=" << bound << " (" << to_string(bound_source)
      << (certified ? "" : ", NOT certified: Cauchy-Schwarz gives ");
    if (!certified) s << cauchy_schwarz_bound;
    if (!exactly_causal) s << ", NOT exactly causal: R from the whole sequence";
    s << ") exp-error<=" << exp_error << " output-error<=" << output_error << "*max|v|"
      << " cost " << poly_cost / exact_cost << "x exact";
    if (poly_seconds > 0)
      s << " predicted " << poly_seconds << " s (exact " << exact_seconds << " s)";
    if (audit_rows > 0) s << " audit(" << audit_rows << " rows)=" << audit_error;
    return s.str();
  }
};

/// Predicted multiply-adds of one head's forward and backward passes (design.md section 6).
namespace cost {

/// Exact tiled attention, forward + backward: 2 n^2 d_h forward and 5 n^2 d_h backward
/// (design.md section 2), halved by the causal mask.
inline double exact(Index n, Index dh, bool causal) {
  const double full = 7.0 * double(n) * double(n) * double(dh);
  return causal ? full / 2 : full;
}

/// The dense scores inside causal chunks of C rows: per row about C/2 scores, each with a
/// d_h dot product, a Horner evaluation of degree g and a row of V; the backward pass repeats
/// them and adds the score gradient products.
inline double poly_diagonal(Index n, Index dh, int g, Index chunk, bool causal) {
  if (!causal) return 0;
  return double(n) * double(chunk) / 2 * (7.0 * double(dh) + 2.0 * g);
}

/// Polynomial forward + adjoint backward, counted from poly_forward.hpp and poly_adjoint.hpp:
/// 6 monomial builds (one multiply per monomial, leaves formed where they are used), 2
/// Jacobian sweeps (about 2 k each), and 7 products of n x k monomials with k x (d_h + 1)
/// states: 2 reading states, 3 adding to them, 2 forming the monomials' gradients.
inline double poly_adjoint(Index n, Index dh, int g, Index k, Index chunk, bool causal) {
  const double nk = double(n) * double(k);
  return nk * (6 + 4) + nk * 7 * (double(dh) + 1) + poly_diagonal(n, dh, g, chunk, causal);
}

/// Polynomial forward + paper backward, counted from poly_paper.hpp: 6 feature-row builds,
/// the forward's 2 products with k x (d_h + 1) states, 2 with k x (d_h^2 + d_h) and 2 with
/// k x (d_h^2 + 2 d_h).
inline double poly_paper(Index n, Index dh, int g, Index k, Index chunk, bool causal) {
  const double nk = double(n) * double(k), d = double(dh);
  return nk * 6 + 2 * nk * (d + 1) + 4 * nk * d * d + 6 * nk * d +
         poly_diagonal(n, dh, g, chunk, causal);
}

}  // namespace cost
}  // namespace polygrad
