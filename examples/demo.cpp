// polygrad_demo: the whole gradient of a multi-layer transformer three ways -- exact, the
// polynomial method with the paper's backward formulas, and the polynomial method with the
// adjoint backward -- on one long random sequence, then how each scales with n.
//
//   polygrad_demo                      (no arguments, no files needed)
//
// Prints one table (method, degree g, rank k, forward + backward seconds, speedup over exact,
// largest relative gradient error, certified forward bound, audit), then a scaling sweep, and
// writes demo_scaling.csv and demo_scaling.svg to --out-dir. Every default is a flag; --help.
//
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
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
#include "support/svg_plot.hpp"

namespace {

using namespace polygrad;
using examples::Progress;
using examples::Stopwatch;

constexpr const char* program_name = "polygrad_demo";

struct DemoOptions {
  TransformerConfig config = TransformerConfig::demo();  // its qk_norm is replaced by --qk-norm
  double qk_norm = 2.0;       // tau: scores tau cos(q, k), so R = tau is certified
  Index tokens = 16384;       // n of the table
  examples::DemoSetup setup;  // --vocab, --init-std, --qk-align, --seed
  std::string dtype = "float";
  examples::AttentionCli poly;  // --family, --degree | --epsilon, --bound, --audit
  // The sweep.
  int sweep_min = 10, sweep_max = 17, sweep_max_exact = 15;
  Index sweep_layers = 1;
  double point_limit = 30;  // seconds: a method stops growing n past a predicted time above this
  int repeats = 1;          // timed passes per measurement; the fastest counts
  bool skip_table = false, skip_sweep = false, quiet = false;
  std::string out_dir = "polygrad_demo_out";
  int threads = 0;  // 0: OpenMP's default
};

// ---------------------------------------------------------------------------------------------
// The model and its data.

/// What layer 0's attention looks like on this input, from 16 sampled late rows per head:
/// the 1st, 50th and 99th percentile of the scores, and exp(entropy) of each row's weights as a
/// fraction of the visible keys (1: uniform; small: concentrated).
template <class T>
std::string attention_diagnostics(Transformer<T>& model, const Matrix<T>& input, double tau) {
  MultiHeadAttention<T>& attn = model.block(0).attn();
  const Matrix<T> a = model.block(0).ln1().forward(input);
  Matrix<T> Q = attn.q().forward(a), K = attn.k().forward(a);
  Matrix<T> q_norms(Q.rows(), attn.heads()), k_norms(K.rows(), attn.heads());
  detail::normalise_head_rows<T>(Q, q_norms);
  detail::normalise_head_rows<T>(K, k_norms);
  const Index n = input.rows(), H = attn.heads(), dh = Q.cols() / H;
  std::vector<double> scores;
  double spread = 0;
  Index rows = 0;
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<Index> pick(n / 2, n - 1);
  for (Index h = 0; h < H; ++h) {
    for (int r = 0; r < 16; ++r) {
      const Index i = pick(rng);
      const Vector<double> s =
          tau * (K.block(0, h * dh, i + 1, dh).template cast<double>() *
                 Q.block(i, h * dh, 1, dh).transpose().template cast<double>());
      for (Index j = 0; j < s.size(); j += std::max<Index>(1, s.size() / 256))
        scores.push_back(s(j));
      const Vector<double> w = (s.array() - s.maxCoeff()).exp().matrix();
      const Vector<double> p = w / w.sum();
      const double entropy = -(p.array() * p.array().max(1e-300).log()).sum();
      spread += std::exp(entropy) / double(i + 1);
      ++rows;
    }
  }
  const auto percentile = [&](double f) {
    auto it = scores.begin() + std::ptrdiff_t(f * double(scores.size() - 1));
    std::nth_element(scores.begin(), it, scores.end());
    return *it;
  };
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << "layer-0 scores tau cos(q,k) in [-" << tau << ", "
    << tau << "]: 1% " << percentile(0.01) << ", median " << percentile(0.5) << ", 99% "
    << percentile(0.99) << "; exp(entropy) of a row = " << std::setprecision(3)
    << spread / double(rows) << " of its visible keys (1 = uniform)";
  return s.str();
}

/// Every gradient of one pass: the parameters' in order, then the input's.
template <class T>
struct Gradients {
  std::vector<std::string> names;
  std::vector<Vector<T>> values;
};

template <class T>
struct PassResult {
  double seconds = 0, loss = 0;
  Gradients<T> grads;
  std::vector<HeadPlan> plans;  // every head of every layer
};

/// One timed forward + MSE + backward of `model` with `method`; keeps every gradient if asked.
template <class T>
PassResult<T> timed_pass(Transformer<T>& model,
                         const std::shared_ptr<const AttentionMethod<T>>& method,
                         const Matrix<T>& input, const Matrix<T>& target, bool keep_gradients) {
  model.set_attention(method);
  model.zero_grad();
  PassResult<T> result;
  Stopwatch clock;
  const Matrix<T> output = model.forward(input);
  const LossResult<T> loss = mse_loss(output, target, model.threading());
  const Matrix<T> grad_input = model.backward(loss.grad);
  result.seconds = clock.seconds();
  result.loss = loss.value;
  for (const auto& layer : model.attention_plans())
    result.plans.insert(result.plans.end(), layer.begin(), layer.end());
  if (keep_gradients) {
    for (const auto& p : model.parameters()) {
      result.grads.names.push_back(p.name);
      result.grads.values.push_back(p.grads());
    }
    result.grads.names.push_back("input");
    result.grads.values.push_back(
        Eigen::Map<const Vector<T>>(grad_input.data(), grad_input.size()));
  }
  return result;
}

/// The fastest of `repeats` calls of pass() (each returns a PassResult).
template <class Pass>
auto best_of(int repeats, Pass&& pass) -> decltype(pass()) {
  auto best = pass();
  for (int r = 1; r < repeats; ++r) {
    auto next = pass();
    if (next.seconds < best.seconds) best = std::move(next);
  }
  return best;
}

/// The largest ||g - g_ref|| / ||g_ref|| over all gradients, and the tensor where it occurs.
template <class T>
std::pair<double, std::string> worst_error(const Gradients<T>& g, const Gradients<T>& reference) {
  std::pair<double, std::string> worst{0.0, ""};
  for (std::size_t i = 0; i < g.values.size(); ++i) {
    const double e = examples::relative_error(g.values[i], reference.values[i]);
    if (!(e <= worst.first)) worst = {e, g.names[i]};
  }
  return worst;
}

struct MethodSpec {
  std::string label;  // "exact", "poly paper", "poly adjoint"
  bool exact;
  PolyRoute route;
};

template <class T>
std::shared_ptr<const AttentionMethod<T>> make_method(const MethodSpec& m, const DemoOptions& o) {
  PolyOptions options = o.poly.poly_options();
  options.route = m.route;
  return make_attention<T>(m.exact ? "exact" : "poly", options);
}

// ---------------------------------------------------------------------------------------------
// The comparison table at n = --tokens.

template <class T>
void run_table(const DemoOptions& o, const std::vector<MethodSpec>& methods, Progress& progress) {
  TransformerConfig config = o.config;
  config.qk_norm = o.qk_norm;
  Transformer<T> model(config);
  examples::init_demo_model(model, o.setup);
  model.set_threading(Threading{o.threads});
  Matrix<T> input, target;
  examples::make_demo_data(o.tokens, config.d_model, o.setup, input, target);
  const std::string diagnostics = attention_diagnostics(model, input, o.qk_norm);

  // One untimed pass per method on a short prefix first: thread start-up and first-touch page
  // faults would otherwise be charged to whichever method runs first.
  {
    const Index warm = std::min<Index>(o.tokens, 128);
    for (const MethodSpec& m : methods)
      timed_pass(model, make_method<T>(m, o), Matrix<T>(input.topRows(warm)),
                 Matrix<T>(target.topRows(warm)), false);
  }
  std::vector<PassResult<T>> results;
  for (const MethodSpec& m : methods) {
    results.push_back(
        progress.during(m.label + ": forward + backward, n = " + std::to_string(o.tokens), [&] {
          return best_of(o.repeats, [&] {
            return timed_pass(model, make_method<T>(m, o), input, target, true);
          });
        }));
  }
  progress.done();

  std::cout << "Model: " << examples::count_of(config.layers, "layer") << ", d_model "
            << config.d_model << ", " << config.heads << " heads (d_h " << config.head_dim()
            << "), MLP " << config.d_ff << ", causal, QK normalisation tau = " << o.qk_norm
            << "; n = " << o.tokens << " tokens, MSE loss; " << o.dtype
            << "; polynomial: " << o.poly.family << ", "
            << (o.poly.degree > 0 ? "g = " + std::to_string(o.poly.degree)
                                  : "eps = " + examples::scientific(o.poly.epsilon, 0))
            << "\n";
  std::cout << diagnostics << "\n";
  std::cout << "Errors: largest relative Frobenius error over every parameter gradient and the "
               "input gradient, against the exact run in "
            << o.dtype << ".\n\n";
  std::cout << std::left << std::setw(14) << "method" << std::right << std::setw(4) << "g"
            << std::setw(8) << "k" << std::setw(11) << "fwd+bwd s" << std::setw(9) << "speedup"
            << std::setw(11) << "max error"
            << "  " << std::left << std::setw(28) << "(worst tensor)" << std::right << std::setw(15)
            << "certified fwd" << std::setw(11) << "audit"
            << "\n";
  const double exact_seconds = results.front().seconds;
  for (std::size_t i = 0; i < methods.size(); ++i) {
    const PassResult<T>& r = results[i];
    int g = 0;
    Index k = 0;
    double bound = 0, audit = std::numeric_limits<double>::quiet_NaN();
    for (const HeadPlan& p : r.plans) {
      if (p.method != HeadMethod::poly) continue;
      g = std::max(g, p.degree);
      k = std::max(k, p.rank);
      bound = std::max(bound, p.output_error);
      if (p.audit_rows > 0 && !(audit >= p.audit_error)) audit = p.audit_error;
    }
    const auto [error, tensor] = worst_error(r.grads, results.front().grads);
    std::cout << std::left << std::setw(14) << methods[i].label << std::right << std::setw(4)
              << (g ? std::to_string(g) : "-") << std::setw(8) << (k ? std::to_string(k) : "-")
              << std::setw(11) << examples::fixed(r.seconds, 2) << std::setw(9)
              << examples::fixed(exact_seconds / r.seconds, 2) + "x" << std::setw(11)
              << (i == 0 ? "0 (ref)" : examples::scientific(error, 2)) << "  " << std::left
              << std::setw(28) << (i == 0 ? "" : "(" + tensor + ")") << std::right << std::setw(15)
              << (methods[i].exact ? std::string("exact")
                                   : "<=" + examples::scientific(bound, 1) + "|v|")
              << std::setw(11)
              << (std::isnan(audit) ? std::string("-") : examples::scientific(audit, 1)) << "\n";
  }
  std::cout << "\ncertified fwd: |O~_i - O_i| <= this times max_j |v_j| in every head (design.md "
               "section 3); audit: largest measured relative error of sampled output rows.\n\n";
}

// ---------------------------------------------------------------------------------------------
// The scaling sweep.

template <class T>
void run_sweep(const DemoOptions& o, const std::vector<MethodSpec>& methods, Progress& progress) {
  TransformerConfig config = o.config;
  config.qk_norm = o.qk_norm;
  config.layers = o.sweep_layers;
  Transformer<T> model(config);
  examples::init_demo_model(model, o.setup);
  model.set_threading(Threading{o.threads});

  std::vector<Index> sizes;
  for (int e = o.sweep_min; e <= o.sweep_max; ++e) sizes.push_back(Index(1) << e);
  const std::size_t M = methods.size();
  std::vector<std::vector<double>> seconds(M, std::vector<double>(sizes.size(), std::nan("")));
  std::vector<std::string> notes;
  std::vector<bool> stopped(M, false);
  examples::CsvWriter csv({"n", "method", "seconds", "degree", "rank", "layers", "dtype"});

  for (std::size_t s = 0; s < sizes.size(); ++s) {
    const Index n = sizes[s];
    Matrix<T> input, target;
    examples::make_demo_data(n, config.d_model, o.setup, input, target);
    for (std::size_t m = 0; m < M; ++m) {
      const int max_exponent = methods[m].exact ? o.sweep_max_exact : o.sweep_max;
      if (stopped[m] || n > (Index(1) << max_exponent)) continue;
      // Predict this point from the last one (exact ~ n^2, polynomial ~ n) and skip it, with
      // every larger n, when it would take longer than the per-point limit.
      if (s > 0 && !std::isnan(seconds[m][s - 1])) {
        const double ratio = double(n) / double(sizes[s - 1]);
        const double predicted = seconds[m][s - 1] * (methods[m].exact ? ratio * ratio : ratio);
        if (predicted > o.point_limit) {
          stopped[m] = true;
          notes.push_back(methods[m].label + " stopped before n = " + std::to_string(n) +
                          ": predicted " + examples::fixed(predicted, 0) + " s > --point-limit " +
                          examples::fixed(o.point_limit, 0) + " s");
          continue;
        }
      }
      const PassResult<T> r =
          progress.during("sweep: " + methods[m].label + ", n = " + std::to_string(n), [&] {
            return best_of(o.repeats, [&] {
              return timed_pass(model, make_method<T>(methods[m], o), input, target, false);
            });
          });
      seconds[m][s] = r.seconds;
      int g = 0;
      Index k = 0;
      for (const HeadPlan& p : r.plans)
        if (p.method == HeadMethod::poly) g = std::max(g, p.degree), k = std::max(k, p.rank);
      csv.row()
          .cell(static_cast<long long>(n))
          .cell(methods[m].label)
          .cell(r.seconds)
          .cell(g)
          .cell(static_cast<long long>(k))
          .cell(static_cast<long long>(config.layers))
          .cell(o.dtype);
    }
  }
  progress.done();

  std::cout << "Scaling: seconds for forward + backward of a " << config.layers << "-layer model ("
            << o.dtype << ")\n";
  std::cout << std::setw(9) << "n";
  for (const auto& m : methods) std::cout << std::setw(15) << m.label;
  std::cout << "\n";
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    std::cout << std::setw(9) << sizes[s];
    for (std::size_t m = 0; m < M; ++m)
      std::cout << std::setw(15)
                << (std::isnan(seconds[m][s]) ? std::string("-")
                                              : examples::fixed(seconds[m][s], 3));
    std::cout << "\n";
  }
  for (const auto& note : notes) std::cout << "note: " << note << "\n";

  std::filesystem::create_directories(o.out_dir);
  const std::string csv_path = (std::filesystem::path(o.out_dir) / "demo_scaling.csv").string();
  const std::string svg_path = (std::filesystem::path(o.out_dir) / "demo_scaling.svg").string();
  csv.write(csv_path);
  examples::SvgPlot plot("Forward + backward time, " + std::to_string(config.layers) +
                             "-layer model, d_h " + std::to_string(config.head_dim()) + ", " +
                             o.dtype,
                         "sequence length n", "seconds");
  plot.log_x().log_y();
  std::vector<double> xs;
  for (Index n : sizes) xs.push_back(double(n));
  for (std::size_t m = 0; m < M; ++m) plot.add(methods[m].label, xs, seconds[m]);
  plot.write(svg_path);
  std::cout << "wrote " << csv_path << " and " << svg_path << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Exact and polynomial transformer gradients compared on one long sequence, then "
      "their scaling with n. Runs with no arguments.",
      program_name};
  DemoOptions o;
  app.add_option("--tokens,-n", o.tokens, "sequence length of the comparison table")
      ->check(CLI::Range(Index(1), Index(1) << 24))
      ->capture_default_str();
  app.add_option("--layers", o.config.layers, "transformer blocks")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--d-model", o.config.d_model, "model width D")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--heads", o.config.heads, "attention heads H (d_h = D / H)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--d-ff", o.config.d_ff, "MLP width")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--qk-norm", o.qk_norm, "QK normalisation temperature tau (the certified bound R)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  o.setup.add(app);
  app.add_option("--dtype", o.dtype, "scalar type of every run")
      ->check(CLI::IsMember({"float", "double"}))
      ->capture_default_str();
  o.poly.method = "poly";
  o.poly.add(app, /*with_method=*/false, /*with_route=*/false);
  app.add_option("--sweep-min", o.sweep_min, "smallest n of the sweep is 2^this")
      ->check(CLI::Range(1, 30))
      ->capture_default_str();
  app.add_option("--sweep-max", o.sweep_max, "largest n of the sweep (polynomial routes) is 2^this")
      ->check(CLI::Range(1, 30))
      ->capture_default_str();
  app.add_option("--sweep-max-exact", o.sweep_max_exact,
                 "largest n of the sweep for exact attention is 2^this")
      ->check(CLI::Range(1, 30))
      ->capture_default_str();
  app.add_option("--sweep-layers", o.sweep_layers, "blocks of the sweep's model")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--point-limit", o.point_limit,
                 "seconds: a method's sweep stops before a size predicted to take longer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeats", o.repeats, "timed passes per measurement (the fastest is reported)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_flag("--skip-table", o.skip_table, "only the sweep");
  app.add_flag("--skip-sweep", o.skip_sweep, "only the table");
  app.add_option("--out-dir", o.out_dir, "where demo_scaling.csv and demo_scaling.svg go")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: OMP_NUM_THREADS or every core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--quiet,-q", o.quiet, "no progress lines on stderr");

  const int parsed = examples::parse_command_line(app, argc, argv, [&] {
    if (o.config.d_model % o.config.heads != 0)
      throw CLI::ValidationError(
          "--heads", "must divide --d-model (" + std::to_string(o.config.d_model) + ")");
    if (o.sweep_min > o.sweep_max || o.sweep_min > o.sweep_max_exact)
      throw CLI::ValidationError("--sweep-min", "must not exceed --sweep-max or --sweep-max-exact");
    if (o.skip_table && o.skip_sweep)
      throw CLI::ValidationError("--skip-table", "with --skip-sweep leaves nothing to do");
  });
  if (parsed >= 0) return parsed;

  const std::vector<MethodSpec> methods = {{"exact", true, PolyRoute::adjoint},
                                           {"poly paper", false, PolyRoute::paper},
                                           {"poly adjoint", false, PolyRoute::adjoint}};
  return examples::run_program(program_name, [&] {
    Progress progress(o.quiet, 10.0);
    examples::with_dtype(o.dtype, [&](auto t) {
      using T = decltype(t);
      if (!o.skip_table) run_table<T>(o, methods, progress);
      if (!o.skip_sweep) run_sweep<T>(o, methods, progress);
    });
    progress.done();
    std::cout << "total " << examples::fixed(progress.elapsed(), 1) << " s\n";
  });
}
