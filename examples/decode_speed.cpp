// polygrad_decode_speed: the time of one decoding step after a context of n tokens, with the
// polynomial state and with exact attention's key and value cache (inference/decoder.hpp).
//
//   polygrad_decode_speed [--contexts 1024,16384,131072] [--steps 32] [--layers 2] [--threads 0]
//
// The model is the demo's width (d_model 64, 8 heads of d_h 8, MLP 256, QK normalisation
// tau = 2, causal) with `--layers` blocks and a vocabulary of 256, its weights random: the time
// of a step does not depend on them. For every context n the decoder first reads n random tokens
// in one pass (prefill; its time is printed too), then takes `--steps` steps, and the median
// step time is reported. A polynomial step costs O(k d_h) per head whatever n; an exact one
// O(n d_h). The heads of a step run in parallel (Threading::min_parallel_work = 0).
//
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <random>
#include <vector>

#include "polygrad/attention/poly.hpp"
#include "polygrad/inference/decoder.hpp"
#include "support/program.hpp"

namespace {

using namespace polygrad;

constexpr const char* program_name = "polygrad_decode_speed";

struct SpeedOptions {
  std::vector<Index> contexts = {1024, 16384, 131072};
  int steps = 32;
  Index layers = 2;
  int threads = 0;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Prefill seconds and median step seconds after `context` tokens.
std::pair<double, double> measure(LanguageModel<float>& model, Index context, int steps) {
  std::mt19937_64 rng{static_cast<std::uint64_t>(context)};
  std::vector<int> ids(static_cast<std::size_t>(context));
  for (int& id : ids) id = int(rng() % 256);
  Decoder<float> decoder(model);
  auto start = std::chrono::steady_clock::now();
  Vector<float> logits = decoder.prefill(ids);
  const double prefill = seconds_since(start);
  std::vector<double> times;
  for (int s = 0; s < steps; ++s) {
    Index next = 0;
    logits.maxCoeff(&next);
    start = std::chrono::steady_clock::now();
    logits = decoder.step(int(next));
    times.push_back(seconds_since(start));
  }
  std::nth_element(times.begin(), times.begin() + std::ptrdiff_t(times.size() / 2), times.end());
  return {prefill, times[times.size() / 2]};
}

void run(const SpeedOptions& o) {
  LanguageModelConfig config;
  config.vocab = 256;
  config.context = *std::max_element(o.contexts.begin(), o.contexts.end()) + o.steps;
  config.transformer = TransformerConfig::demo();
  config.transformer.layers = o.layers;
  LanguageModel<float> model(config);
  // A step is a few hundred thousand multiply-adds per layer, below Threading's default
  // threshold, but reading the states (megabytes) is what takes its time, and two cores do it
  // nearly three times as fast as one here: every step runs its heads in parallel.
  Threading threading{o.threads};
  threading.min_parallel_work = 0;
  model.set_threading(threading);
  const auto poly = std::make_shared<PolyAttention<float>>(PolyOptions{});
  const auto exact = std::make_shared<ExactAttention<float>>();
  std::cout
      << "context  poly step ms  exact step ms  exact/poly  poly prefill s  exact prefill s\n";
  for (Index context : o.contexts) {
    model.set_attention(poly);
    const auto [poly_prefill, poly_step] = measure(model, context, o.steps);
    model.set_attention(exact);
    const auto [exact_prefill, exact_step] = measure(model, context, o.steps);
    std::cout << std::setw(7) << context << std::fixed << std::setprecision(3) << std::setw(14)
              << 1e3 * poly_step << std::setw(15) << 1e3 * exact_step << std::defaultfloat
              << std::setprecision(3) << std::setw(12) << exact_step / poly_step << std::fixed
              << std::setprecision(1) << std::setw(16) << poly_prefill << std::setw(17)
              << exact_prefill << "\n"
              << std::flush;
  }
  model.set_attention(poly);
  Decoder<float> decoder(model);
  const HeadPlan& plan = decoder.plan(0, 0);
  std::cout << std::defaultfloat << "polynomial state per head: k = " << plan.rank
            << " features (degree " << plan.degree << ", R = " << plan.bound
            << ") x (d_h + 1) = " << plan.rank * (plan.head_dim + 1) << " numbers\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Time one decoding step after contexts of several lengths, polynomial state "
      "against exact attention's cache",
      program_name};
  SpeedOptions o;
  app.add_option("--contexts", o.contexts, "context lengths")
      ->delimiter(',')
      ->check(CLI::Range(Index(1), Index(1) << 24))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "steps timed after each context")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--layers", o.layers, "Transformer blocks")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: OpenMP's default)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  const int parsed = examples::parse_command_line(app, argc, argv, [] {});
  if (parsed >= 0) return parsed;
  return examples::run_program(program_name, [&] { run(o); });
}
