// polygrad_kernel_rates: the rates of the attention kernels on this host (multiply-adds per second
// of one thread, attention/rates.hpp) beside the fixed table's, and where the polynomial adjoint
// route overtakes exact attention: measured (one head on one thread, forward + backward, float,
// causal, unit query and key rows with scale 2) and as "auto" predicts it from the rates.
//
//   polygrad_kernel_rates [--crossover-only] [--max-log-n 17]
//
// The rates are measured in memory (the rate file is neither read nor written). The crossover
// lines are the benchmark for "auto": the predicted crossover should lie within 10% of the
// measured one.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "polygrad/attention/auto.hpp"
#include "polygrad/attention/calibration.hpp"
#include "polygrad/attention/rates.hpp"

using namespace polygrad;

namespace {

KernelClass exact_class(Index dh) {
  KernelClass c;
  c.scalar_bytes = sizeof(float);
  c.head_dim = dh;
  return c;
}

KernelClass poly_class(Index dh, int g) {
  KernelClass c = exact_class(dh);
  c.method = HeadMethod::poly;
  c.degree = g;
  return c;
}

/// Seconds of the fastest of three forward + backward passes (after a warm-up) on one head of
/// n rows on one thread, and the plan of the last.
double seconds_of(const AttentionMethod<float>& method, Index n, Index dh, HeadPlan& plan) {
  std::mt19937_64 random(std::uint64_t(n * 31 + dh));
  std::normal_distribution<float> normal;
  const auto draw = [&](bool unit_rows) {
    Matrix<float> X(n, dh);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < dh; ++j) X(i, j) = normal(random);
      if (unit_rows) X.row(i).normalize();
    }
    return X;
  };
  const Matrix<float> Q = draw(true), K = draw(true), V = draw(false), dO = draw(false);
  AttentionShape shape(1, true, 2.0, 2.0);
  shape.threading.threads = 1;
  Matrix<float> O, dQ, dK, dV;
  double fastest = 1e300;
  for (int run = 0; run < 4; ++run) {
    const auto start = std::chrono::steady_clock::now();
    auto context = method.forward(Q, K, V, shape, O);
    context->backward(Q, K, V, O, dO, dQ, dK, dV);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (run > 0) fastest = std::min(fastest, took.count());
    plan = context->plans().front();
  }
  return fastest;
}

/// The measured crossover of (d_h, g) and the one predicted from `rates`.
void crossover(Index dh, int g, int max_log_n, const KernelRates& rates) {
  PolyOptions options;
  options.degree = g;
  const PolyAttention<float> poly(options);
  const ExactAttention<float> exact;
  std::printf("\ncrossover d_h %lld g %d (one head, one thread, float, causal):\n",
              static_cast<long long>(dh), g);
  std::printf("%8s %12s %12s %10s\n", "n", "exact s", "poly s", "poly/exact");
  double previous_ratio = 0, previous_n = 0, measured = 0;
  HeadPlan plan;
  for (int log_n = 10; log_n <= max_log_n; ++log_n) {
    const Index n = Index(1) << log_n;
    const double te = seconds_of(exact, n, dh, plan);
    const double tp = seconds_of(poly, n, dh, plan);
    const double ratio = tp / te;
    std::printf("%8lld %12.4f %12.4f %10.3f\n", static_cast<long long>(n), te, tp, ratio);
    std::fflush(stdout);
    if (ratio < 1 && previous_ratio >= 1) {
      // log(ratio) is close to linear in log n (poly/exact ~ 1/n): interpolate its zero.
      const double t = std::log(previous_ratio) / (std::log(previous_ratio) - std::log(ratio));
      measured = previous_n * std::pow(double(n) / previous_n, t);
      break;
    }
    previous_ratio = ratio;
    previous_n = double(n);
  }
  // Predicted: exact_cost(n) / r_exact = poly_cost(n) / r_poly, both costs from the plan (poly
  // is linear in n, exact quadratic).
  predict_seconds(plan, sizeof(float), rates);
  const double per_row_seconds = plan.poly_seconds / double(plan.n);
  const double exact_per_n2 = plan.exact_seconds / (double(plan.n) * double(plan.n));
  const double predicted = per_row_seconds / exact_per_n2;
  if (measured > 0) {
    std::printf("measured crossover n = %.0f, predicted from %s: n = %.0f (%.2fx)\n", measured,
                rates.source().c_str(), predicted, predicted / measured);
  } else {
    std::printf("no crossover up to n = 2^%d; predicted from %s: n = %.0f\n", max_log_n,
                rates.source().c_str(), predicted);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool crossover_only = false;
  int max_log_n = 17;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--crossover-only") == 0) {
      crossover_only = true;
    } else if (std::strcmp(argv[i], "--max-log-n") == 0 && i + 1 < argc) {
      max_log_n = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: polygrad_kernel_rates [--crossover-only] [--max-log-n 17]\n");
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  const MeasuredRates measured("", 0.02);
  const TableRates table;
  std::printf("host: %s\n", MeasuredRates::host().c_str());
  if (!crossover_only) {
    std::printf("%-34s %14s %14s\n", "kernel class (float, one thread)", "measured MA/s",
                "table MA/s");
    std::vector<KernelClass> classes;
    for (Index dh : {4, 8, 16, 32, 64, 128}) classes.push_back(exact_class(dh));
    for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
      for (auto [dh, g] : {std::pair<Index, int>{8, 2}, {8, 4}, {8, 7}, {16, 4}, {16, 7}}) {
        if (route == PolyRoute::paper && dh == 16 && g == 7) continue;  // minutes per run
        classes.push_back(poly_class(dh, g));
        classes.back().route = route;
      }
    }
    for (const KernelClass& c : classes) {
      std::printf("%-34s %14.3g %14.3g\n", c.key().c_str(), measured.rate(c), table.rate(c));
      std::fflush(stdout);
    }
  }
  crossover(8, 7, max_log_n, measured);
  crossover(16, 4, max_log_n, measured);
  return 0;
}
