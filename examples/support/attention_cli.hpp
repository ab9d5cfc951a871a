#pragma once
// The attention flags every example program shares, and the AttentionMethod they describe:
//
//   --attention exact|poly|auto   --route adjoint|paper   --family chebyshev|taylor
//   --degree g | --epsilon e      --bound R               --audit s
//
// "poly" runs the polynomial method in every head; "auto" lets each head choose between it and
// the exact path by predicted seconds (attention/auto.hpp). The polynomial flags are usage errors
// with --attention exact, so a typo cannot silently run the exact path.

#include <CLI/CLI.hpp>

#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "polygrad/attention/calibration.hpp"
#include "polygrad/attention/factory.hpp"
#include "polygrad/attention/poly_approximation.hpp"

namespace polygrad::examples {

/// Command-line attention options; add() them to an app, check() after parsing, then make<T>().
class AttentionCli {
 public:
  std::string method = "exact";          ///< exact, poly or auto
  std::string route = "adjoint";         ///< adjoint or paper
  std::string family = "chebyshev";      ///< chebyshev or taylor
  int degree = 0;                        ///< g; 0 chooses by epsilon
  double epsilon = 1e-3;                 ///< certified error target of the polynomial
  double bound = 0;                      ///< R fixed by the caller; 0: QK norm or Cauchy-Schwarz
  Index audit = -1;                      ///< rows per head the audit checks; -1: 32 for poly/auto
  bool allow_causal_data_bound = false;  ///< PolyOptions::allow_causal_data_bound

  /// The rows audited when --audit is not given and the method is poly or auto.
  static constexpr Index default_audit_rows = 32;

  /// Registers the flags on `app`. `with_method` false leaves out --attention and `with_route`
  /// false --route (for programs that choose the method or route themselves but take the
  /// polynomial settings).
  void add(CLI::App& app, bool with_method = true, bool with_route = true) {
    app_ = &app;
    if (with_method) {
      method_option_ = app.add_option("--attention", method,
                                      "attention method: exact, poly (polynomial in every head) or "
                                      "auto (per head, whichever is predicted faster)")
                           ->check(CLI::IsMember({"exact", "poly", "auto"}))
                           ->capture_default_str();
    }
    if (with_route)
      poly_options_.push_back(
          app.add_option("--route", route,
                         "polynomial backward route: adjoint (exact gradient of the approximate "
                         "forward) or paper (the paper's gradient formulas)")
              ->check(CLI::IsMember({"adjoint", "paper"}))
              ->capture_default_str());
    poly_options_.push_back(
        app.add_option("--family", family, "polynomial family approximating exp")
            ->check(CLI::IsMember({"chebyshev", "taylor"}))
            ->capture_default_str());
    CLI::Option* degree_option =
        app.add_option(
               "--degree", degree,
               "polynomial degree g (default: the smallest whose certified error is <= --epsilon)")
            ->check(CLI::Range(1, 64));
    CLI::Option* epsilon_option =
        app.add_option("--epsilon", epsilon,
                       "certified relative error of the polynomial against exp on [-R, R]")
            ->check(CLI::Range(1e-12, 0.5))
            ->capture_default_str();
    degree_option->excludes(epsilon_option);
    poly_options_.push_back(degree_option);
    poly_options_.push_back(epsilon_option);
    poly_options_.push_back(app.add_option("--bound", bound,
                                           "entry bound R fixed in advance (default: tau under QK "
                                           "normalisation, else Cauchy-Schwarz on the data)")
                                ->check(CLI::PositiveNumber));
    poly_options_.push_back(app.add_flag(
        "--allow-causal-data-bound", allow_causal_data_bound,
        "accept a causal model whose bound R comes from the whole sequence (then not exactly "
        "causal); without it such a model is refused: use --qk-norm or --bound instead"));
    poly_options_.push_back(app.add_option("--audit", audit,
                                           "query rows per head compared against exact attention "
                                           "(default 32 for poly/auto; 0 disables)")
                                ->check(CLI::NonNegativeNumber));
  }

  /// Throws CLI::ValidationError (a usage error) if polynomial flags were given with
  /// --attention exact. Call after parsing.
  void check() const {
    if (method != "exact" || !method_option_) return;
    for (const CLI::Option* option : poly_options_) {
      if (option->count() > 0)
        throw CLI::ValidationError(
            option->get_name(),
            "applies to the polynomial method only; add --attention poly or --attention auto");
    }
  }

  /// Whether the chosen method may run the polynomial path.
  bool polynomial() const { return method != "exact"; }

  /// The audit rows that will be used.
  Index audit_rows() const { return polynomial() ? (audit < 0 ? default_audit_rows : audit) : 0; }

  /// The PolyOptions the flags describe.
  PolyOptions poly_options() const {
    PolyOptions o;
    o.route = parse_route(route);
    o.family = parse_family(family);
    o.allow_causal_data_bound = allow_causal_data_bound;
    o.degree = degree;
    o.epsilon = epsilon;
    o.bound = bound;
    o.audit_rows = audit_rows();
    o.names = option_names();
    return o;
  }

  /// How refusals name the options here: by these flags, and not at all where the program has
  /// no flag (the maximum degree, the chunk size and the memory budget; --qk-norm in programs
  /// whose model fixes it).
  OptionNames option_names() const {
    OptionNames n;
    n.degree = "--degree";
    n.epsilon = "--epsilon";
    n.max_degree = "";
    n.bound = "--bound";
    n.qk_norm = app_ && app_->get_option_no_throw("--qk-norm") ? "--qk-norm" : "";
    n.allow_causal_data_bound = "--allow-causal-data-bound";
    n.chunk = "";
    n.memory_budget = "";
    return n;
  }

  /// The attention method the flags describe.
  template <class T>
  std::shared_ptr<const AttentionMethod<T>> make() const {
    return make_attention<T>(method, poly_options());
  }

  /// With --attention poly: a note on `out` when the plan of a head of n rows and width d_h,
  /// its scores bounded by R in advance (--bound, or the model's QK norm; 0: none), predicts
  /// the polynomial path at least `factor` times slower than exact attention, naming the flags
  /// that avoid it. Nothing for the other methods, without a bound, or when no plan can be made
  /// (the run then says why).
  template <class T>
  void warn_if_much_slower(Index n, Index dh, bool causal, double R, std::ostream& out,
                           double factor = 4) const {
    const double fixed = bound > 0 ? bound : R;
    if (method != "poly" || !(fixed > 0)) return;
    HeadPlan plan;
    try {
      plan = predict_plan(n, dh, causal, fixed, poly_options(), sizeof(T), *default_kernel_rates());
    } catch (const PlanError&) {
      return;
    }
    const double slower = plan.poly_seconds / plan.exact_seconds;
    if (!(slower >= factor)) return;
    std::ostringstream s;
    s.precision(3);
    s << "note: --attention poly is predicted " << slower << "x slower than exact attention at n "
      << n << ", d_h " << dh << " (degree " << plan.degree << ", k = " << plan.rank << ": "
      << plan.poly_seconds << " s against " << plan.exact_seconds
      << " s per head on one thread, rates " << plan.rates_source
      << "); --attention auto chooses per head, --attention exact avoids it\n";
    out << s.str() << std::flush;
  }

  /// One line for reports, e.g. "poly adjoint chebyshev eps=0.001 audit=32".
  std::string summary() const {
    if (method == "exact") return "exact";
    std::ostringstream s;
    s << method << ' ' << route << ' ' << family;
    if (degree > 0) {
      s << " g=" << degree;
    } else {
      s << " eps=" << epsilon;
    }
    if (bound > 0) s << " R=" << bound;
    s << " audit=" << audit_rows();
    return s.str();
  }

 private:
  const CLI::App* app_ = nullptr;
  CLI::Option* method_option_ = nullptr;
  std::vector<CLI::Option*> poly_options_;
};

}  // namespace polygrad::examples
