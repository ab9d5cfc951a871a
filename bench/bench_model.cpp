// BM_ModelGradient: the demo model (4 layers, d_model 64, 8 heads of d_h 8, MLP 256, QK
// normalisation tau = 2, causal), one full forward + MSE + backward in float, per attention
// method: exact, poly_adjoint, poly_paper (degree 7, the d_h = 8 plan of bench_attention.cpp).
//
// Checked once per (method, n) before timing, at min(n, 2048) tokens: the exact model against
// the same model with the naive dense attention, each polynomial model against the exact model,
// by the relative error of all parameter gradients together. Counter: tokens/s.
//
// BM_BatchGradient/exact/{packed,loop}: the same model on a batch of `batch`
// sequences of n tokens each, one forward + MSE + backward for the whole batch: packed into one
// matrix with its offsets (attention/packed.hpp), or one sequence after another with the
// gradients accumulated. Checked once before timing: the packed gradients against the loop's.
// Counter: tokens/s (all sequences).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "bench_support.hpp"
#include "polygrad/attention/factory.hpp"
#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/packed.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"

namespace polygrad::bench {
namespace {

/// The method of a benchmark label: "naive" (the dense reference of the gradient check, not a
/// method of the library), "exact", or "poly_<route>" at degree 7 (the d_h = 8 plan of
/// bench_attention.cpp).
std::shared_ptr<const AttentionMethod<float>> make_method(const std::string& label) {
  if (label == "naive") return std::make_shared<NaiveAttention<float>>();
  const std::size_t underscore = label.find('_');
  PolyOptions options;
  options.degree = 7;
  if (underscore != std::string::npos) options.route = parse_route(label.substr(underscore + 1));
  return make_attention<float>(label.substr(0, underscore), options);
}

/// One forward + MSE + backward; returns the loss. Gradients are zeroed first.
double gradient_step(Transformer<float>& model, const Matrix<float>& x,
                     const Matrix<float>& target) {
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
        state.SkipWithError(("gradients disagree with the " +
                             std::string(poly ? "exact" : "naive") +
                             " model at n = " + std::to_string(check_n) + ": relative error " +
                             std::to_string(checked[key]))
                                .c_str());
        return;
      }
    }
    state.counters["check_err"] = checked[key];

    const Matrix<float> x = random_normal<float>(n, 64, 21),
                        target = random_normal<float>(n, 64, 22);
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

/// One forward + MSE + backward of a batch of equal-length sequences stacked in x; packed in
/// one pass, or one pass per sequence. Returns the summed loss. Gradients are zeroed first.
double batch_step(Transformer<float>& model, const Matrix<float>& x, const Matrix<float>& target,
                  const SequenceOffsets& offsets, bool packed) {
  model.zero_grad();
  if (packed) {
    const LossResult<float> loss = mse_loss(model.forward(x, offsets), target);
    model.backward(loss.grad);
    return loss.value;
  }
  double total = 0;
  const Index B = Index(offsets.size()) - 1;
  for (Index b = 0; b < B; ++b) {
    const Index begin = offsets[std::size_t(b)], rows = offsets[std::size_t(b + 1)] - begin;
    // mse_loss is a sum over rows: the batch's is the sum of the sequences'.
    const LossResult<float> loss = mse_loss(model.forward(x.middleRows(begin, rows)),
                                            Matrix<float>(target.middleRows(begin, rows)));
    model.backward(loss.grad);
    total += loss.value;
  }
  return total;
}

void batch_benchmark(benchmark::State& state, std::string method, bool packed) {
  const Index batch = state.range(0), n = state.range(1);
  try {
    const SequenceOffsets offsets = offsets_of_lengths(std::vector<Index>(std::size_t(batch), n));
    const Matrix<float> x = random_normal<float>(batch * n, 64, 31);
    const Matrix<float> target = random_normal<float>(batch * n, 64, 32);
    Transformer<float> model(TransformerConfig::demo(), make_method(method));
    static std::map<std::pair<std::string, Index>, double> checked;
    const auto key = std::make_pair(method, batch * n);
    if (!checked.count(key)) {
      batch_step(model, x, target, offsets, true);
      const Vector<float> packed_gradients = all_gradients(model);
      batch_step(model, x, target, offsets, false);
      checked[key] = relative_error(packed_gradients, all_gradients(model));
    }
    state.counters["check_err"] = checked[key];
    if (!(checked[key] <= 1e-4)) {  // float sums in another order
      state.SkipWithError(("packed and per-sequence gradients disagree: relative error " +
                           std::to_string(checked[key]))
                              .c_str());
      return;
    }
    double loss = 0, seconds = 0;
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      loss = batch_step(model, x, target, offsets, packed);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    benchmark::DoNotOptimize(loss);
    state.counters["tokens/s"] = double(batch * n) * double(state.iterations()) / seconds;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

void register_model_benchmarks() {
  // Exact only: at 256 tokens the polynomial rank (6,435 at degree 7) exceeds n.
  for (const std::string method : {"exact"}) {
    for (const bool packed : {true, false}) {
      const std::string name = "BM_BatchGradient/" + method + (packed ? "/packed" : "/loop");
      benchmark::RegisterBenchmark(name.c_str(), batch_benchmark, method, packed)
          ->ArgNames({"batch", "n"})
          ->Args({8, 256})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
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
