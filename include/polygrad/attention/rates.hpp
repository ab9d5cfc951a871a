#pragma once
// How fast each attention kernel runs, so that plans can predict seconds and "auto" can compare
// them (design.md section 6): the exact kernels and the polynomial routes run at different
// fractions of the machine's peak, so equal multiply-add counts are not equal times.
//
// A rate is multiply-adds (as cost:: counts them, attention/plan.hpp) per second of one thread,
// for one kernel class: the path, the scalar type, d_h and, for the polynomial routes, the
// degree. TableRates holds rates measured once on the project's machine; MeasuredRates
// (attention/calibration.hpp) measures them on the host, in the spirit of FFTW's wisdom.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "polygrad/attention/plan.hpp"

namespace polygrad {

/// The revision of the kernels' speed: kept rates (MeasuredRates) are filed under it, so that a
/// change that makes a kernel faster or slower, with this number raised, has them measured
/// again, and the table below is measured again with it. Revision 2: exact attention's
/// fixed-width kernels (exact_fixed_width.hpp), 1.45x the general ones at d_h 16.
inline constexpr int kernel_revision = 2;

/// A class of kernels that run at one rate.
struct KernelClass {
  HeadMethod method = HeadMethod::exact;  ///< exact tiled path, or a polynomial route
  PolyRoute route = PolyRoute::adjoint;   ///< the polynomial route (poly only)
  std::size_t scalar_bytes = 8;           ///< sizeof(T): 4 (float) or 8 (double)
  Index head_dim = 0;                     ///< d_h
  int degree = 0;                         ///< g (poly only)
  bool causal = true;                     ///< the causal mask

  /// e.g. "exact float dh=8 causal", "poly-adjoint float dh=8 g=7 causal".
  std::string key() const {
    std::string s = method == HeadMethod::exact ? "exact" : "poly-" + to_string(route);
    s += scalar_bytes == 4 ? " float" : " double";
    s += " dh=" + std::to_string(head_dim);
    if (method == HeadMethod::poly) s += " g=" + std::to_string(degree);
    return s + (causal ? " causal" : " full");
  }
};

/// Rates of kernel classes: multiply-adds per second of one thread.
class KernelRates {
 public:
  virtual ~KernelRates() = default;
  /// The rate of `kernel` (> 0).
  virtual double rate(const KernelClass& kernel) const = 0;
  /// Where the rates come from, for plans and progress output.
  virtual std::string source() const = 0;
};

/// Rates measured on the project's machine (AMD EPYC with AVX-512, g++ 12 -march=native, one
/// thread, float, causal; `polygrad_kernel_rates`, 2026-12-07, exact again on 2026-12-08 for
/// kernel revision 2), interpolated in log d_h (exact) and log k (polynomial routes, whatever
/// d_h), and held constant beyond the ends of the table. Exact attention at d_h 16, 32 and 64
/// runs the fixed-width kernels there, d_h 4, 8 and 128 the general ones; a width between two
/// of these that has no fixed-width kernel (12, 24) is predicted somewhat too fast.
/// Double is taken to run at half the float rate of its class (half as many lanes per vector).
/// The fallback where measuring is switched off (POLYGRAD_RATES=table), and the guess that
/// sizes a measurement.
class TableRates final : public KernelRates {
 public:
  double rate(const KernelClass& kernel) const override {
    const double scalar = kernel.scalar_bytes == 4 ? 1.0 : 0.5;
    if (kernel.method == HeadMethod::exact) {
      // (d_h, rate)
      static const std::vector<std::pair<double, double>> exact{
          {4, 1.0e10}, {8, 1.8e10}, {16, 4.07e10}, {32, 4.5e10}, {64, 4.4e10}, {128, 3.1e10}};
      return scalar * interpolate(exact, double(kernel.head_dim));
    }
    // (k = C(d_h + g, g), rate)
    static const std::vector<std::pair<double, double>> adjoint{
        {45, 1.04e10}, {495, 2.75e10}, {4845, 3.3e10}, {6435, 3.2e10}, {245157, 1.6e10}};
    static const std::vector<std::pair<double, double>> paper{
        {45, 1.64e10}, {495, 3.3e10}, {4845, 3.1e10}, {6435, 3.76e10}};
    return scalar * interpolate(kernel.route == PolyRoute::adjoint ? adjoint : paper,
                                rank_of(kernel.head_dim, kernel.degree));
  }
  std::string source() const override { return "the fixed table (attention/rates.hpp)"; }

 private:
  /// k = C(d + g, g), in double.
  static double rank_of(Index d, int g) {
    double k = 1;
    for (int i = 1; i <= g; ++i) k = k * double(d + i) / double(i);
    return k;
  }

  /// Piecewise linear in log x and log rate through the points (x increasing); constant beyond
  /// the ends.
  static double interpolate(const std::vector<std::pair<double, double>>& points, double at) {
    if (at <= points.front().first) return points.front().second;
    if (at >= points.back().first) return points.back().second;
    std::size_t i = 1;
    while (points[i].first < at) ++i;
    const auto [x0, y0] = points[i - 1];
    const auto [x1, y1] = points[i];
    const double t = std::log(at / x0) / std::log(x1 / x0);
    return std::exp(std::log(y0) + t * std::log(y1 / y0));
  }
};

/// Predicted seconds of forward + backward of one head on one thread: the plan's cost over the
/// rate of its kernel class. Fills plan.exact_seconds, and plan.poly_seconds when the plan has
/// a polynomial approximation (degree > 0).
inline void predict_seconds(HeadPlan& plan, std::size_t scalar_bytes, const KernelRates& rates) {
  KernelClass exact;
  exact.scalar_bytes = scalar_bytes;
  exact.head_dim = plan.head_dim;
  exact.causal = plan.causal;
  plan.exact_seconds = plan.exact_cost / rates.rate(exact);
  if (plan.degree > 0 && plan.poly_cost > 0) {
    KernelClass poly = exact;
    poly.method = HeadMethod::poly;
    poly.route = plan.route;
    poly.degree = plan.degree;
    plan.poly_seconds = plan.poly_cost / rates.rate(poly);
  }
  plan.rates_source = rates.source();
}

}  // namespace polygrad
