// polygrad_long_context: the demo model's whole gradient -- every parameter and the input -- on
// one long sequence (2^20 tokens by default), through the polynomial routes, measured; the
// exact path measured at sizes it can reach here and extrapolated to the long one from an n^2
// fit, labelled so.
//
//   polygrad_long_context                    (no arguments, no files needed; about half an hour)
//   polygrad_long_context -n 65536 --routes adjoint --exact-sizes 14 15 16
//
// For each run it prints a progress line per layer and pass on stderr, and a table row: wall
// time, the attention methods' share of it, CPU time over wall time, and the peak resident
// memory of the run, measured by the program itself. Writes long_context.csv to --out-dir.
//
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"
#include "support/attention_cli.hpp"
#include "support/csv.hpp"
#include "support/demo_model.hpp"
#include "support/format.hpp"
#include "support/program.hpp"
#include "support/progress.hpp"
#include "support/resources.hpp"

namespace {

using namespace polygrad;
using examples::Progress;
using examples::Stopwatch;

constexpr const char* program_name = "polygrad_long_context";

struct Options {
  Index tokens = Index(1) << 20;
  std::vector<std::string> routes = {"adjoint", "paper"};
  std::vector<int> exact_sizes = {15, 16, 17};  // log2 n of the measured exact runs
  bool recompute = true;
  double qk_norm = 2.0;
  std::string dtype = "float";
  int threads = 0;
  examples::DemoSetup setup;
  examples::AttentionCli poly;  // --family, --degree | --epsilon, --bound, --audit
  std::string out_dir = "polygrad_long_context_out";
  bool quiet = false;
};

/// One measured forward + MSE + backward pass of the whole model.
struct Run {
  std::string method;
  Index n = 0;
  double seconds = 0, forward_seconds = 0, attention_seconds = 0, cpu_seconds = 0;
  double peak_mib = 0, loss = 0, audit = std::nan("");
  int degree = 0;
  Index rank = 0;
};

std::string power_of_two(Index n) {
  const int e = int(std::lround(std::log2(double(n))));
  return (Index(1) << e) == n ? "2^" + std::to_string(e) : std::to_string(n);
}

template <class T>
Run measure(Transformer<T>& model, const std::shared_ptr<const AttentionMethod<T>>& method,
            const std::string& label, Index n, const Options& o, Progress& progress) {
  examples::reset_peak_memory();
  Matrix<T> input, target;
  examples::make_demo_data(n, model.config().d_model, o.setup, input, target);
  model.set_attention(method);
  model.zero_grad();
  const std::string what = label + ", n = " + power_of_two(n);
  model.set_observer([&](const LayerEvent& e) {
    progress.update(what + ": " + (e.backward ? "backward" : "forward") + " layer " +
                        std::to_string(e.layer + 1) + "/" + std::to_string(e.layers) + " " +
                        examples::fixed(e.seconds, 1) + " s (attention " +
                        examples::fixed(e.attention_seconds, 1) + " s), peak " +
                        examples::fixed(examples::peak_memory_mib(), 0) + " MiB",
                    true);
  });
  Run run;
  run.method = label;
  run.n = n;
  const double cpu_start = examples::cpu_seconds();
  Stopwatch clock;
  Matrix<T> output = model.forward(input);
  run.forward_seconds = clock.seconds();
  LossResult<T> loss = mse_loss(output, target, model.threading());
  output.resize(0, 0);  // what backward needs is the loss gradient; free the rest first
  target.resize(0, 0);
  const Matrix<T> grad_input = model.backward(loss.grad);
  run.seconds = clock.seconds();
  run.cpu_seconds = examples::cpu_seconds() - cpu_start;
  run.peak_mib = examples::peak_memory_mib();
  model.set_observer(nullptr);
  const auto [forward_attention, backward_attention] = model.attention_seconds();
  run.attention_seconds = forward_attention + backward_attention;
  run.loss = loss.value;
  require<NumericError>(grad_input.allFinite(), what, ": the input gradient is not finite");
  for (const auto& p : model.parameters())
    require<NumericError>(p.grads().allFinite(), what, ": the gradient of ", p.name,
                          " is not finite");
  for (const auto& layer : model.attention_plans()) {
    for (const HeadPlan& plan : layer) {
      if (plan.method != HeadMethod::poly) continue;
      run.degree = std::max(run.degree, plan.degree);
      run.rank = std::max(run.rank, plan.rank);
      if (plan.audit_rows > 0 && !(run.audit >= plan.audit_error)) run.audit = plan.audit_error;
    }
  }
  return run;
}

/// c in t = c n^2 by least squares on log t - 2 log n, and the free exponent of log t against
/// log n, over the measured runs.
struct QuadraticFit {
  double c = 0, exponent = 0;
};

QuadraticFit fit_quadratic(const std::vector<Run>& runs) {
  double sum = 0, mx = 0, my = 0;
  for (const Run& r : runs) {
    sum += std::log(r.seconds) - 2 * std::log(double(r.n));
    mx += std::log(double(r.n));
    my += std::log(r.seconds);
  }
  const double k = double(runs.size());
  mx /= k;
  my /= k;
  double sxy = 0, sxx = 0;
  for (const Run& r : runs) {
    const double dx = std::log(double(r.n)) - mx;
    sxy += dx * (std::log(r.seconds) - my);
    sxx += dx * dx;
  }
  return {std::exp(sum / k), sxx > 0 ? sxy / sxx : 2.0};
}

template <class T>
void run_all(const Options& o) {
  TransformerConfig config = TransformerConfig::demo();
  config.qk_norm = o.qk_norm;
  Transformer<T> model(config);
  examples::init_demo_model(model, o.setup);
  model.set_recompute(o.recompute);
  Threading threading;
  threading.threads = o.threads;
  model.set_threading(threading);
  Progress progress(o.quiet, 10.0);

  std::cout << "Model: " << examples::count_of(config.layers, "layer") << ", d_model "
            << config.d_model << ", " << config.heads << " heads (d_h " << config.head_dim()
            << "), MLP " << config.d_ff << ", causal, QK normalisation tau = " << o.qk_norm
            << "; MSE loss; " << o.dtype << "; "
            << (o.recompute ? "recomputation on" : "recomputation off") << "; "
            << detail::thread_count(threading) << " threads\n";

  std::vector<Run> runs, exact_runs;
  for (const std::string& route : o.routes) {
    examples::AttentionCli cli = o.poly;
    cli.route = route;
    PolyOptions options = cli.poly_options();
    runs.push_back(measure<T>(model, std::make_shared<PolyAttention<T>>(options), "poly " + route,
                              o.tokens, o, progress));
  }
  for (int e : o.exact_sizes) {
    exact_runs.push_back(measure<T>(model, std::make_shared<ExactAttention<T>>(), "exact",
                                    Index(1) << e, o, progress));
  }
  progress.done();

  std::cout << "\n"
            << std::left << std::setw(14) << "method" << std::right << std::setw(9) << "n"
            << std::setw(11) << "wall s" << std::setw(13) << "attention s" << std::setw(12)
            << "wall/attn" << std::setw(10) << "CPU/wall" << std::setw(11) << "peak MiB"
            << std::setw(11) << "audit"
            << "\n";
  examples::CsvWriter csv({"method", "n", "seconds", "attention_seconds", "cpu_seconds", "peak_mib",
                           "measured", "degree", "rank", "audit", "dtype", "recompute"});
  auto row =
      [&](const Run& r) {
        std::cout << std::left << std::setw(14) << r.method << std::right << std::setw(9) << power_of_two(r.n) << std::setw(11) << examples::fixed(r.seconds, 1) << std::setw(13) << examples::fixed(r.attention_seconds, 1) << std::setw(12) << examples::fixed(r.seconds / r.attention_seconds, 3) << std::setw(10) << examples::fixed(r.cpu_seconds / r.seconds, 2) << std::setw(11) << examples::fixed(r.peak_mib, 0) << std::setw(11) << (std::isnan(r.audit) ? std::string("-") : [&] {
          std::ostringstream s;
          s << std::scientific << std::setprecision(1) << r.audit;
          return s.str();
        }()) << "\n";
        csv.row()
            .cell(r.method)
            .cell(static_cast<long long>(r.n))
            .cell(r.seconds)
            .cell(r.attention_seconds)
            .cell(r.cpu_seconds)
            .cell(r.peak_mib)
            .cell("yes")
            .cell(r.degree)
            .cell(static_cast<long long>(r.rank))
            .cell(r.audit)
            .cell(o.dtype)
            .cell(o.recompute ? "on" : "off");
      };
  for (const Run& r : runs) row(r);
  for (const Run& r : exact_runs) row(r);
  if (!exact_runs.empty()) {
    const QuadraticFit fit = fit_quadratic(exact_runs);
    const double predicted = fit.c * double(o.tokens) * double(o.tokens);
    std::cout << std::left << std::setw(14) << "exact" << std::right << std::setw(9)
              << power_of_two(o.tokens) << std::setw(11) << examples::fixed(predicted, 0)
              << "  EXTRAPOLATED, not measured: t = c n^2 fitted to the exact runs above "
              << "(their free exponent: " << examples::fixed(fit.exponent, 3) << ")\n";
    csv.row()
        .cell("exact")
        .cell(static_cast<long long>(o.tokens))
        .cell(predicted)
        .cell("")
        .cell("")
        .cell("")
        .cell("extrapolated")
        .cell(0)
        .cell(0LL)
        .cell("")
        .cell(o.dtype)
        .cell(o.recompute ? "on" : "off");
    for (const Run& r : runs) {
      std::cout << "  " << r.method << " is " << examples::fixed(predicted / r.seconds, 1)
                << "x faster than exact's extrapolated time at n = " << power_of_two(o.tokens)
                << "\n";
    }
  }
  std::cout << "\nwall/attn: the whole pass over the attention methods' own time in it; "
               "CPU/wall: busy cores on average; peak: resident memory of the run; audit: the "
               "largest measured relative error of sampled attention output rows.\n";
  std::filesystem::create_directories(o.out_dir);
  const std::string csv_path = (std::filesystem::path(o.out_dir) / "long_context.csv").string();
  csv.write(csv_path);
  std::cout << "wrote " << csv_path << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "The demo model's full gradient on one long sequence: polynomial routes measured, "
      "exact measured at smaller sizes and extrapolated. Runs with no arguments.",
      program_name};
  Options o;
  app.add_option("--tokens,-n", o.tokens, "sequence length of the polynomial runs")
      ->check(CLI::Range(Index(1), Index(1) << 26))
      ->capture_default_str();
  app.add_option("--routes", o.routes, "polynomial backward routes to run (none: --routes none)")
      ->check(CLI::IsMember({"adjoint", "paper", "none"}))
      ->capture_default_str();
  app.add_option("--exact-sizes", o.exact_sizes,
                 "log2 n of the measured exact runs, fitted by t = c n^2 (none: --exact-sizes 0)")
      ->check(CLI::Range(0, 24))
      ->capture_default_str();
  app.add_flag("--recompute,!--no-recompute", o.recompute,
               "keep only the block inputs and attention outputs, recompute the rest in backward "
               "(default on)");
  app.add_option("--qk-norm", o.qk_norm, "QK normalisation temperature tau (the certified bound R)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "scalar type")
      ->check(CLI::IsMember({"float", "double"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: OMP_NUM_THREADS or every core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  o.setup.add(app);
  o.poly.method = "poly";
  o.poly.add(app, /*with_method=*/false, /*with_route=*/false);
  app.add_option("--out-dir", o.out_dir, "where long_context.csv goes")->capture_default_str();
  app.add_flag("--quiet,-q", o.quiet, "no progress lines on stderr");

  const int parsed = examples::parse_command_line(app, argc, argv, [&] {
    o.routes.erase(std::remove(o.routes.begin(), o.routes.end(), "none"), o.routes.end());
    o.exact_sizes.erase(std::remove(o.exact_sizes.begin(), o.exact_sizes.end(), 0),
                        o.exact_sizes.end());
    if (o.routes.empty() && o.exact_sizes.empty())
      throw CLI::ValidationError("--routes", "with no exact sizes leaves nothing to run");
  });
  if (parsed >= 0) return parsed;
  return examples::run_program(program_name, [&] {
    examples::with_dtype(o.dtype, [&](auto t) { run_all<decltype(t)>(o); });
  });
}
