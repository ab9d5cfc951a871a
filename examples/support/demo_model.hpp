#pragma once
// The demo model's weights and data, shared by polygrad_demo and polygrad_long_context: the
// shape is TransformerConfig::demo(); the weights and inputs below make attention use its whole
// certified score interval, as the comment of init_demo_model explains.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "polygrad/layers/transformer.hpp"

namespace polygrad::examples {

/// How the demo model is initialised and its data drawn.
struct DemoSetup {
  Index vocab = 64;       // input tokens are drawn from this many random vectors (0: Gaussian)
  double init_std = 0;    // 0: 1/sqrt(fan_in) per Linear
  double qk_align = 0.9;  // Wk = a Wq + sqrt(1 - a^2) (fresh Gaussian)
  std::uint64_t seed = 1;

  /// --vocab, --init-std, --qk-align and --seed.
  void add(CLI::App& app) {
    app.add_option("--vocab", vocab,
                   "input rows are drawn from this many random vectors (0: every row Gaussian)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--init-std", init_std, "std of every Linear weight (default 0: 1/sqrt(fan_in))")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--qk-align", qk_align, "tie Wk to Wq: Wk = a Wq + sqrt(1 - a^2) noise")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--seed", seed, "random seed of weights and data")->capture_default_str();
  }
};

/// Re-initialises `model` for the demo. Why not Transformer::init's Normal(0, 0.02^2): with such
/// small weights each attention and MLP branch adds little to the residual stream, so the loss
/// and every gradient are dominated by the identity path. Here (1) each Linear weight gets std
/// 1/sqrt(fan_in) (or --init-std), which keeps every branch about as large as the stream;
/// (2) under QK normalisation the scale of Wq and Wk does not change the scores at all, only their
/// directions do: tying Wk to Wq (--qk-align) and drawing input rows from a small vocabulary
/// (--vocab) give a query a high cosine with the keys of its own token, which pushes scores out
/// towards +tau (at n = 2048 the 99th percentile is 1.8 against 1.5 with the 0.02 init), so the
/// polynomial is used over its whole certified interval. With tau = 2 a row's weights differ by
/// at most e^4, so over thousands of keys attention stays broad whatever the init; a larger
/// --qk-norm gives sharper patterns (and a higher degree). The diagnostics line measures it.
template <class T>
void init_demo_model(Transformer<T>& model, const DemoSetup& o) {
  model.init(o.seed, 1.0);
  std::mt19937_64 rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
  ParameterList<T> params = model.parameters();
  for (const auto& p : params) {
    if (p.shape.size() != 2) continue;  // biases and LayerNorm parameters stay as init() left them
    const double stddev = o.init_std > 0 ? o.init_std : 1.0 / std::sqrt(double(p.shape[1]));
    p.values() *= T(stddev);
  }
  const double a = o.qk_align, b = std::sqrt(std::max(0.0, 1 - a * a));
  for (Index layer = 0; layer < model.config().layers; ++layer) {
    const std::string prefix = "blocks." + std::to_string(layer) + ".attn.";
    const ParameterView<T>* q = nullptr;
    const ParameterView<T>* k = nullptr;
    for (const auto& p : params) {
      if (p.name == prefix + "q.weight") q = &p;
      if (p.name == prefix + "k.weight") k = &p;
    }
    require<Error>(q && k, "the model has no ", prefix, "q.weight or k.weight");
    k->values() = T(a) * q->values() + T(b) * k->values();
  }
}

/// The input (n x D): token ids uniform in [0, vocab), each row the id's fixed random vector
/// (Normal(0, 1) entries); with vocab 0 every row is fresh Gaussian noise. The target is Gaussian.
template <class T>
void make_demo_data(Index n, Index D, const DemoSetup& o, Matrix<T>& input, Matrix<T>& target) {
  std::mt19937_64 rng(o.seed + 1000003 * std::uint64_t(n));
  input.resize(n, D);
  if (o.vocab > 0) {
    std::mt19937_64 table_rng(o.seed + 7);  // the same vocabulary at every n
    Matrix<T> table(o.vocab, D);
    detail::fill_normal(table, table_rng, 1.0);
    std::uniform_int_distribution<Index> pick(0, o.vocab - 1);
    for (Index i = 0; i < n; ++i) input.row(i) = table.row(pick(rng));
  } else {
    detail::fill_normal(input, rng, 1.0);
  }
  target.resize(n, D);
  detail::fill_normal(target, rng, 1.0);
}

}  // namespace polygrad::examples
