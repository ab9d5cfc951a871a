// BM_ModelGradient: the demo model (4 layers, d_model 64, 8 heads of d_h 8, MLP 256, QK
// normalisation tau = 2, causal), one full forward + MSE + backward in float, per attention
// method: exact, poly_adjoint, poly_paper (degree 7, the d_h = 8 plan of bench_attention.cpp).
//
// Checked once per (method, n) before timing, at min(n, 2048) tokens: the exact model against
// the same model with the naive dense attention, each polynomial model against the exact model,
// by the relative error of all parameter gradients together. Counter: tokens/s.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "bench_support.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"

namespace polygrad::bench {
namespace {

std::shared_ptr<const AttentionMethod<float>> make_method(const std::string& name) {
  if (name == "exact") return std::make_shared<ExactAttention<float>>();
  if (name == "naive") return std::make_shared<NaiveAttention<float>>();
  PolyOptions options;
  options.route = name == "poly_adjoint" ? PolyRoute::adjoint : PolyRoute::paper;
  options.degree = 7;
  return std::make_shared<PolyAttention<float>>(options);
}

/// One forward + MSE + backward; returns the loss. Gradients are zeroed first.
double gradient_step(Transformer<float>& model, const Matrix<float>& x, const Matrix<float>& target) {
  model.zero_grad();
  const LossResult<float> loss = mse_loss(model.forward(x), target);
  model.backward(loss.grad);
  return loss.value;
}

/// All parameter gradients of `model`, concatenated in parameter order.
Vector<float> all_gradients(Transformer<float>& model) {
  const ParameterList<float> params = model.parameters();
  Index total = 0;
  for (const auto& p : params) total += p.size();
  Vector<float> out(total);
  Index at = 0;
  for (const auto& p : params) {
    out.segment(at, p.size()) = p.grads();
    at += p.size();
  }
  return out;
}

/// Relative error of the gradients of `method` against those of `reference`, at n tokens.
double gradient_error(const std::string& method, const std::string& reference, Index n) {
  const Matrix<float> x = random_normal<float>(n, 64, 11), target = random_normal<float>(n, 64, 12);
  Transformer<float> a(TransformerConfig::demo(), make_method(method));
  Transformer<float> b(TransformerConfig::demo(), make_method(reference));
  gradient_step(a, x, target);
  gradient_step(b, x, target);
  return relative_error(all_gradients(a), all_gradients(b));
}

void model_benchmark(benchmark::State& state, std::string method) {
  const Index n = state.range(0);
  try {
    static std::map<std::pair<std::string, Index>, double> checked;
    const auto key = std::make_pair(method, n);
    if (!checked.count(key)) {
      const Index check_n = std::min<Index>(n, 2048);
      const bool poly = method != "exact";
      // Float rounding through four layers for exact; the degree-7 certificate (3e-4 on exp)
      // for the polynomial routes, with room for its growth through the layers.
      const double tol = poly ? 1e-2 : 1e-3;
      checked[key] = gradient_error(method, poly ? "exact" : "naive", check_n);
      if (!(checked[key] <= tol)) {
        state.SkipWithError(("gradients disagree with the " + std::string(poly ? "exact" : "naive") +
                             " model at n = " + std::to_string(check_n) + ": relative error " +
                             std::to_string(checked[key]))
                                .c_str());
        return;
      }
    }
    state.counters["check_err"] = checked[key];

    const Matrix<float> x = random_normal<float>(n, 64, 21), target = random_normal<float>(n, 64, 22);
    Transformer<float> model(TransformerConfig::demo(), make_method(method));
    double loss = 0, seconds = 0;
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      loss = gradient_step(model, x, target);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    benchmark::DoNotOptimize(loss);
    // Wall-clock, like the reported time (the library's rate counters divide by CPU time).
    state.counters["tokens/s"] = double(n) * double(state.iterations()) / seconds;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

void register_model_benchmarks() {
  for (const std::string method : {"exact", "poly_adjoint", "poly_paper"}) {
    for (int log_n = 8; log_n <= 14; ++log_n) {
      auto* b = benchmark::RegisterBenchmark(("BM_ModelGradient/" + method).c_str(),
                                             model_benchmark, method);
      b->ArgNames({"n"})->Arg(Index(1) << log_n)->UseRealTime()->Unit(benchmark::kMillisecond);
      if (log_n >= 13) b->Iterations(1);
    }
  }
}

}  // namespace polygrad::bench
