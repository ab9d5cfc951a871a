#pragma once
// Polynomials p(t) ~ exp(R t) on [-1, 1] with a proved bound on the relative error
// (design.md section 3, "Polynomial"). With S = R t this is P(s) = p(s / R) ~ exp(s) on [-R, R].
//
// Two families:
//   chebyshev  interpolation of exp(R t) at the g + 1 Chebyshev extreme points cos(pi k / g),
//              converted to monomial coefficients. Of the Chebyshev variants this one has the
//              smallest *relative* error: it is exact at t = -1, where exp(R t) is smallest and
//              the relative error of the others peaks (measured at R = 8, g = 20: truncated series
//              8.9e-4, first-kind nodes 7.3e-4, extreme points 3.2e-4).
//   taylor     b_j = R^j / j!. Better when the scores crowd near 0 (design.md section 3).
//
// certified_error bounds max_{|t|<=1} |p(t) e^{-R t} - 1| for the polynomial whose coefficients
// are the stored doubles b_j, in exact arithmetic (rounding while evaluating p, by Horner or by
// the features, is not included). How it is proved:
//   taylor     exactly, from f(s) = p(s) e^{-s}, f'(s) = -s^g e^{-s} / g! (taylor_exp_error), plus
//              sum_j |b_j - R^j/j!| e^R for storing b_j in double.
//   chebyshev  a grid plus a derivative bound (design.md section 3 allows either): h(t) = p(t)
//              e^{-R t} - 1 is evaluated in extended precision on a grid of spacing delta, and
//              between grid points |h| grows by at most delta/2 max|h'|; h' = e^{-R t} (E' - R E)
//              with E = p - exp(R t), and E is bounded through the Chebyshev series of exp, whose
//              coefficients are 2 I_j(R) (certify_chebyshev_interpolant). It assumes only that
//              the C library's long double exp and cos are within a few ulps (glibc: <= 2).
// Storing b_j in double sets a floor of about 1e-16 e^{2R} (1e-9 at R = 8): the monomial form
// cannot do better in double, whatever the degree.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "polygrad/core/error.hpp"

namespace polygrad {

/// Which approximation of exp the polynomial method uses.
enum class PolynomialFamily { chebyshev, taylor };

/// p(t) = sum_j coeffs[j] t^j ~ exp(bound t) on [-1, 1], with its certificate.
struct ExpPolynomial {
  PolynomialFamily family = PolynomialFamily::chebyshev;  ///< how the coefficients were chosen
  double bound = 0.0;                                     ///< R: p approximates exp(R t)
  int degree = 0;                                         ///< g
  std::vector<double> coeffs;                             ///< b_0..b_g, monomial coefficients
  double certified_error = 0.0;  ///< proved bound of max_{|t|<=1} |p(t) e^{-R t} - 1|

  /// p(t), by Horner's rule.
  double operator()(double t) const {
    double acc = 0.0;
    for (auto b = coeffs.rbegin(); b != coeffs.rend(); ++b) acc = acc * t + *b;
    return acc;
  }

  /// p'(t), by Horner's rule on j b_j t^{j-1}.
  double derivative(double t) const {
    double acc = 0.0;
    for (std::size_t j = coeffs.size(); j-- > 1;)
      acc = acc * t + static_cast<double>(j) * coeffs[j];
    return acc;
  }
};

/// The highest degree fit_exp accepts; far beyond any useful feature count C(d + g, g).
inline constexpr int max_polynomial_degree = 64;

namespace detail {

using Wide = long double;  // the conversions run in extended precision where the platform has it

inline constexpr Wide wide_unit_roundoff = std::numeric_limits<Wide>::epsilon() / 2;

/// I_j(x) for x >= 0 from its power series sum_k (x/2)^{2k+j} / (k! (k+j)!); all terms are
/// positive. `relative_error` receives a bound on |computed - exact| / exact.
inline Wide bessel_i(int j, Wide x, Wide* relative_error = nullptr) {
  const Wide half = x / 2;
  Wide term = 1;  // (x/2)^j / j!, 2j roundings
  for (int i = 1; i <= j; ++i) term = term * half / i;
  Wide sum = term;
  const Wide q = half * half;
  int k = 0;
  Wide remainder = 0;
  if (q > 0) {
    for (;;) {
      ++k;
      term = term * q / (static_cast<Wide>(k) * (k + j));  // 3 roundings per term
      sum += term;
      // Ratio of later terms is below r, so what is left is below term r / (1 - r).
      const Wide r = q / (static_cast<Wide>(k + 1) * (k + 1 + j));
      if (r <= 0.5L) {
        remainder = term * r / (1 - r);
        if (remainder <= wide_unit_roundoff * sum) break;
      }
    }
  }
  if (relative_error) {
    if (sum == 0) {  // underflow: a zero term contributes nothing to any bound
      *relative_error = 0;
      return 0;
    }
    // First-order bound: each term carries at most (2j + 3k + 2) roundings, the sum k more,
    // plus the dropped remainder; doubled for second-order slack.
    *relative_error = 2 * (2 * j + 4 * k + 4) * wide_unit_roundoff + 2 * remainder / sum;
  }
  return sum + remainder;  // the midpoint would do; taking the upper end keeps tails upper bounds
}

/// Proved upper bound of sum_{j>g} 2 I_j(x) j^power for x >= 0 and power 0 or 2: the tail of
/// the Chebyshev series of exp(x t), and of that series' derivative bound (|T_j'| <= j^2).
inline Wide chebyshev_exp_tail(int g, Wide x, int power) {
  if (x == 0) return 0;
  // Termwise in the series, I_{j+1}(x) <= I_j(x) x / (2 (j + 1)), so the terms shrink by at most
  // r = x / (2 (j + 1)) ((j + 1) / j)^power; once r is below 1/2 the rest is below term r/(1-r).
  Wide sum = 0, error = 0;
  for (int j = g + 1;; ++j) {
    Wide rel = 0;
    const Wide weight = power == 0 ? Wide(1) : static_cast<Wide>(j) * j;
    const Wide term = 2 * bessel_i(j, x, &rel) * weight;
    sum += term;
    error += 2 * rel * term;
    const Wide growth = power == 0 ? Wide(1) : (j + Wide(1)) * (j + 1) / (static_cast<Wide>(j) * j);
    const Wide r = x / (2 * static_cast<Wide>(j + 1)) * growth;
    if (r <= 0.5L) {
      const Wide rest = term * r / (1 - r);
      if (rest <= 1e-3L * sum || term == 0) {
        return (sum + rest + error) * (1 + 64 * wide_unit_roundoff);
      }
    }
  }
}

/// Exact max relative error of the degree-g Taylor polynomial of exp on [-x, x], as a proved
/// upper bound. With f(s) = p_g(s) e^{-s}, f'(s) = -s^g e^{-s} / g!, so |f(s) - 1| =
/// |int_0^s u^g e^{-u} du| / g!, which grows with |s| and is larger for s < 0. Hence the maximum is
/// at s = -x: int_0^x v^g e^v dv / g! = sum_{m>=0} x^{g+1+m} / (g! m! (g+1+m)), a positive series.
inline Wide taylor_exp_error(int g, Wide x) {
  if (x == 0) return 0;
  Wide base = 1;  // x^{g+1} / g!
  for (int i = 1; i <= g; ++i) base = base * x / i;
  base *= x;
  Wide power = base;  // x^{g+1+m} / (g! m!)
  Wide sum = power / (g + 1);
  int ops = 2 * g + 3;
  for (int m = 1;; ++m) {
    power = power * x / m;
    const Wide term = power / (g + 1 + m);
    sum += term;
    ops += 4;
    // Later terms shrink by less than r = x / (m + 1) each.
    const Wide r = x / (m + 1);
    if (r <= 0.5L) {
      const Wide rest = term * r / (1 - r);
      if (rest <= wide_unit_roundoff * sum || term == 0) {
        return (sum + rest) * (1 + 2 * ops * wide_unit_roundoff);
      }
    }
  }
}

/// Rounds the wide coefficients to double and returns a proved bound of
/// sum_j |b_j(double) - b_j(exact)| given per-coefficient bounds of |b_j(wide) - b_j(exact)|.
inline Wide store_coefficients(const std::vector<Wide>& wide, const std::vector<Wide>& wide_error,
                               std::vector<double>& out) {
  out.resize(wide.size());
  Wide total = 0;
  for (std::size_t j = 0; j < wide.size(); ++j) {
    out[j] = static_cast<double>(wide[j]);
    total += std::fabs(static_cast<Wide>(out[j]) - wide[j]) + wide_error[j];
  }
  return total * (1 + 64 * wide_unit_roundoff);
}

/// Rounds a wide upper bound up to a double upper bound.
inline double round_up(Wide x) {
  const double d = static_cast<double>(x);
  return static_cast<Wide>(d) >= x ? d : std::nextafter(d, std::numeric_limits<double>::infinity());
}

/// The degree-g Chebyshev interpolant of exp(x t) at the extreme points cos(pi k / g) (g >= 1),
/// as wide monomial coefficients b. The computed b equal those of the exact interpolant plus
/// sum_m dc_m T_m with |dc_m| <= *c_err, plus monomial errors |db_j| <= b_err[j].
inline void chebyshev_interpolant(int g, Wide x, std::vector<Wide>& b, std::vector<Wide>& b_err,
                                  Wide* c_err) {
  const Wide pi = 3.141592653589793238462643383279502884L;
  std::vector<Wide> f(g + 1);  // exp(x cos(pi k / g))
  Wide f_sum = 0;
  for (int k = 0; k <= g; ++k) {
    f[k] = std::exp(x * std::cos(pi * k / g));
    f_sum += f[k];
  }
  // c_m = (2/g) sum''_k f_k cos(pi m k / g), '' halving the k = 0, g terms; c_0, c_g halved too.
  // The angle is reduced mod 2 pi exactly (integer m k mod 2g) to keep cos accurate.
  std::vector<Wide> c(g + 1);
  for (int m = 0; m <= g; ++m) {
    Wide sum = 0;
    for (int k = 0; k <= g; ++k) {
      const Wide end = (k == 0 || k == g) ? Wide(0.5) : Wide(1);
      const long reduced = (static_cast<long>(m) * k) % (2L * g);
      sum += end * f[k] * std::cos(pi * reduced / g);
    }
    c[m] = sum * 2 / g * ((m == 0 || m == g) ? Wide(0.5) : Wide(1));
  }
  // |c_m - exact| <= (2/g) sum_k f_k (relative error of f_k: the node's rounding times x, and
  // exp's own; absolute error of cos; g + 4 roundings in the sum), generously rounded up.
  *c_err = 2 / static_cast<Wide>(g) * f_sum * (8 * x + 2 * g + 48) * wide_unit_roundoff;
  // Monomial coefficients: b_j = sum_m c_m a_{m,j}, a_{m,j} those of T_m (integers, from
  // T_{m+1} = 2 t T_m - T_{m-1}).
  std::vector<Wide> prev(g + 1, 0), cur(g + 1, 0), next(g + 1, 0), abs_sum(g + 1, 0);
  b.assign(g + 1, 0);
  for (int m = 0; m <= g; ++m) {
    if (m == 0) {
      cur[0] = 1;
    } else if (m == 1) {
      prev = cur;
      std::fill(cur.begin(), cur.end(), Wide(0));
      cur[1] = 1;
    } else {
      for (int j = 0; j <= g; ++j) next[j] = (j > 0 ? 2 * cur[j - 1] : Wide(0)) - prev[j];
      prev.swap(cur);
      cur.swap(next);
    }
    for (int j = 0; j <= m; ++j) {
      b[j] += c[m] * cur[j];
      abs_sum[j] += std::fabs(c[m] * cur[j]);
    }
  }
  // Dot-product rounding (a_{m,j} carry at most g roundings where above 2^digits), doubled for
  // second-order slack.
  b_err.resize(g + 1);
  for (int j = 0; j <= g; ++j) b_err[j] = 2 * (4 * g + 8) * wide_unit_roundoff * abs_sum[j];
}

/// |p(t) e^{-x t} - 1| for the stored coefficients, evaluated in extended precision, with its
/// rounding added (side = +1: an upper bound of the exact value) or subtracted (side = -1).
inline Wide point_error(const std::vector<double>& coeffs, Wide abs_b, Wide x, Wide t, int side,
                        Wide* weight = nullptr) {
  const int g = static_cast<int>(coeffs.size()) - 1;
  Wide p = 0;
  for (int j = g; j >= 0; --j) p = p * t + static_cast<Wide>(coeffs[j]);
  const Wide w = std::exp(-x * t);
  const Wide h = std::fabs(p * w - 1);
  // Horner's rounding (at most 2(g+1) u sum|b_j| for |t| <= 1), relative to exp(x t); exp (a few
  // ulps, plus x u from rounding its argument) and the product, relative to h + 1.
  const Wide rounding = (2 * (g + 2) * abs_b * w + (16 + 2 * x) * (h + 1)) * wide_unit_roundoff;
  if (weight) *weight = w;
  return h + side * rounding;
}

/// A lower bound of max_{|t|<=1} |p(t) e^{-x t} - 1| from M + 1 equally spaced points.
inline Wide sampled_error(const std::vector<double>& coeffs, Wide x, long M) {
  Wide abs_b = 0;
  for (double b : coeffs) abs_b += std::fabs(static_cast<Wide>(b));
  Wide worst = 0;
  for (long i = 0; i <= M; ++i) {
    worst = std::max(worst, point_error(coeffs, abs_b, x, static_cast<Wide>(2 * i - M) / M, -1));
  }
  return worst;
}

/// Certificate of a Chebyshev interpolant p by grid plus derivative bound (top of this file). The
/// stored coefficients differ from the exact interpolant's by sum_m dc_m T_m, |dc_m| <= c_err,
/// plus monomial terms |db_j| <= b_err[j].
inline Wide certify_chebyshev_interpolant(const std::vector<double>& coeffs, Wide x,
                                          const std::vector<Wide>& b_err, Wide c_err) {
  const int g = static_cast<int>(coeffs.size()) - 1;
  // Exact interpolant at the extreme points: T_j (j > g) agrees on the nodes with T_{j'},
  // j' <= g (cos(j pi k / g) = cos(j' pi k / g) for j = 2 m g +- j'), so E = sum_{j>g} c_j
  // (T_{j'} - T_j): |E| <= 2 tail0, |E'| <= 2 tail2 (Markov: |T_j'| <= j^2 on [-1, 1]).
  const Wide tail0 = chebyshev_exp_tail(g, x, 0), tail2 = chebyshev_exp_tail(g, x, 2);
  // Those differences shift E by at most stored_value and E' by at most stored_slope (|T_m| <= 1,
  // |T_m'| <= m^2). The grid evaluates the stored p itself, so they matter only between points.
  Wide stored_value = 0, stored_slope = 0;
  for (int j = 0; j <= g; ++j) {
    stored_value += b_err[j] + c_err;
    stored_slope += j * b_err[j] + static_cast<Wide>(j) * j * c_err;
  }
  // |h'(t)| = e^{-R t} |E' - R E| <= e^{-R t} B on [-1, 1].
  const Wide B = 2 * tail2 + 2 * x * tail0 + stored_slope + x * stored_value;
  // On [a, b], |h| <= max(|h(a)|, |h(b)|) + (b - a)/2 e^{-R a} B. Steps grow like e^{R (a + 1)}
  // so that this slack stays level: it is delta0 / 2 e^R B, about 2% of the peak of |h|
  // (~ e^R tail0, with |h'| ~ e^R (tail2 + x tail0) there), from about 50 (tail2/tail0 + x) / R
  // points instead of a uniform grid's 50 (tail2/tail0 + x).
  // delta0 is kept >= 1e-4 (at most ~20000 points): that only loosens certificates that are
  // already at the rounding floor, where the derivative bound is dominated by rounding terms.
  const Wide ratio = tail0 > 0 ? tail2 / tail0 + x : Wide(0);
  const Wide delta0 = 2 / std::min<Wide>(20000, std::max<Wide>(64, 50 * ratio));
  const Wide delta_max = Wide(1) / 32;
  Wide abs_b = 0;
  for (double b : coeffs) abs_b += std::fabs(static_cast<Wide>(b));
  Wide a = -1, w_a = 0, w_b = 0;
  Wide h_a = point_error(coeffs, abs_b, x, a, +1, &w_a), worst = h_a;
  const Wide exp_slack = 1 + (32 + 2 * x) * wide_unit_roundoff;  // exp's rounding in w_a
  const Wide e_x = std::exp(x);
  while (a < 1) {
    const Wide step = std::min(delta_max, delta0 * e_x / w_a);  // delta0 e^{x (a + 1)}
    const Wide b = std::min<Wide>(1, a + step);
    if (!(b > a)) return std::numeric_limits<Wide>::infinity();  // no progress: claim nothing
    const Wide h_b = point_error(coeffs, abs_b, x, b, +1, &w_b);
    const Wide slack = (b - a) / 2 * w_a * B * exp_slack;
    worst = std::max(worst, std::max(h_a, h_b) + slack);
    a = b;
    h_a = h_b;
    w_a = w_b;
  }
  return worst * (1 + 16 * wide_unit_roundoff);
}

}  // namespace detail

/// The degree-`degree` polynomial of `family` for exp(R t) on [-1, 1], with its certificate.
inline ExpPolynomial fit_exp(PolynomialFamily family, double R, int degree) {
  require<NumericError>(std::isfinite(R), "fit_exp: the score bound R is ", R,
                        "; it must be finite (check the inputs for NaN or infinity)");
  require<PlanError>(R >= 0, "fit_exp: the score bound R must be >= 0, got ", R);
  require<PlanError>(R <= 700, "fit_exp: the score bound R = ", R, " is too large: exp(R) ",
                     "overflows double. Use QK normalisation or a smaller scale");
  require<PlanError>(degree >= 0 && degree <= max_polynomial_degree, "fit_exp: degree ", degree,
                     " is outside [0, ", max_polynomial_degree, "]; choose a degree in that range");
  using detail::Wide;
  const Wide x = R;
  const int g = degree;
  ExpPolynomial p;
  p.family = family;
  p.bound = R;
  p.degree = g;
  Wide certified = 0;
  if (family == PolynomialFamily::taylor) {
    std::vector<Wide> b(g + 1), b_err(g + 1);
    Wide term = 1;
    for (int j = 0; j <= g; ++j) {
      if (j > 0) term = term * x / j;
      b[j] = term;
      b_err[j] = 4 * (j + 1) * detail::wide_unit_roundoff * term;  // 2j roundings, with slack
    }
    const Wide coefficient_abs = detail::store_coefficients(b, b_err, p.coeffs);
    // |p(t) - p_exact(t)| <= sum_j |delta b_j| for |t| <= 1; relative to exp(R t) >= e^{-R}.
    certified = detail::taylor_exp_error(g, x) +
                coefficient_abs * std::exp(x) * (1 + 8 * detail::wide_unit_roundoff);
  } else if (g == 0) {
    // One node, t = 0: p = 1, and max |e^{-R t} - 1| = e^R - 1 at t = -1.
    p.coeffs = {1.0};
    certified = std::expm1(x) * (1 + 8 * detail::wide_unit_roundoff);
  } else {
    std::vector<Wide> b, b_err;
    Wide c_err = 0;
    detail::chebyshev_interpolant(g, x, b, b_err, &c_err);
    p.coeffs.resize(g + 1);
    for (int j = 0; j <= g; ++j) {
      p.coeffs[j] = static_cast<double>(b[j]);
      b_err[j] += std::fabs(static_cast<Wide>(p.coeffs[j]) - b[j]);
    }
    certified = detail::certify_chebyshev_interpolant(p.coeffs, x, b_err, c_err);
  }
  p.certified_error = detail::round_up(certified * (1 + 4 * detail::wide_unit_roundoff));
  return p;
}

/// The lowercase name of a family ("chebyshev", "taylor").
inline std::string to_string(PolynomialFamily family) {
  return family == PolynomialFamily::taylor ? "taylor" : "chebyshev";
}

/// The family named "chebyshev" or "taylor"; PlanError for anything else.
inline PolynomialFamily parse_family(const std::string& name) {
  if (name == "chebyshev") return PolynomialFamily::chebyshev;
  if (name == "taylor") return PolynomialFamily::taylor;
  throw PlanError(
      detail::concat("unknown polynomial family '", name, "'; use \"chebyshev\" or \"taylor\""));
}

/// The lowest degree g <= max_degree whose certified_error is <= eps. PlanError if there is
/// none, saying what to change; the message names eps and max_degree as `eps_name` and
/// `max_degree_name` (the caller's terms, OptionNames), leaving out an empty one.
inline ExpPolynomial fit_exp_for_error(PolynomialFamily family, double R, double eps,
                                       int max_degree = 24, const std::string& eps_name = "eps",
                                       const std::string& max_degree_name = "max_degree") {
  require<PlanError>(std::isfinite(eps) && eps > 0, "fit_exp_for_error: eps must be positive, got ",
                     eps);
  require<PlanError>(max_degree >= 0 && max_degree <= max_polynomial_degree,
                     "fit_exp_for_error: max_degree ", max_degree, " is outside [0, ",
                     max_polynomial_degree, "]");
  ExpPolynomial best = fit_exp(family, R, 0);
  if (best.certified_error <= eps) return best;
  for (int g = 1; g <= max_degree; ++g) {
    if (family == PolynomialFamily::chebyshev) {
      // The Chebyshev certificate costs a fine grid; skip degrees that a coarse grid (a lower
      // bound of the true error) already rules out.
      std::vector<detail::Wide> b, b_err;
      detail::Wide c_err = 0;
      detail::chebyshev_interpolant(g, R, b, b_err, &c_err);
      std::vector<double> coarse(b.begin(), b.end());
      const double lower = detail::sampled_error(coarse, R, 8L * (g + 1));
      if (lower > eps) {
        if (lower < best.certified_error) {  // report the degree that came closest
          best.certified_error = lower;
          best.degree = g;
        }
        continue;
      }
    }
    ExpPolynomial p = fit_exp(family, R, g);
    if (p.certified_error <= eps) return p;
    if (p.certified_error < best.certified_error) best = std::move(p);
  }
  // Tell apart "more degree would do" from "double coefficients cannot get there at this R":
  // storing b_j ~ R^j / j! in double moves p(-1) ~ e^{-R} by about 1e-16 e^R.
  const double floor = std::numeric_limits<double>::epsilon() / 2 * std::exp(2 * R);
  const bool rounding_floor = eps < 10 * floor;
  throw PlanError(detail::concat(
      "cannot certify a relative error of ", eps, " for exp on [-R, R] with R = ", R, " using a ",
      to_string(family), " polynomial of degree <= ", max_degree, " (best: ", best.certified_error,
      " at degree ", best.degree, "). ",
      rounding_floor
          ? "Rounding the coefficients to double limits this R to about 1e-16 e^(2R); use " +
                detail::one_of({"a smaller R (QK normalisation or a smaller scale)",
                                detail::named("a larger error target", eps_name)})
          : "Use " +
                detail::one_of({detail::named("a larger error target", eps_name),
                                "a smaller R (QK normalisation or a smaller scale)",
                                detail::named("a higher maximum degree", max_degree_name),
                                family == PolynomialFamily::taylor ? "the chebyshev family" : ""}),
      "."));
}

}  // namespace polygrad
