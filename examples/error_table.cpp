// polygrad_error_table: how close the polynomial gradients come to the exact ones, per degree.
//
// For a single attention layer and for the 4-layer causal model of the README (d_model 64,
// 8 heads, MLP 256, residuals, QK normalisation tau = 2), in double, the largest relative
// Frobenius error over every parameter gradient and the input gradient, for each degree and
// both backward routes, beside the certified error of the polynomial. This is the table of
// the README's "Accuracy" section.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <map>

#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"
#include "support/program.hpp"
#include "support/progress.hpp"

using namespace polygrad;

namespace {

using Gradients = std::map<std::string, Vector<double>>;

template <class Model>
Gradients gradients(Model& model, const Matrix<double>& x, const Matrix<double>& target) {
  model.zero_grad();
  const LossResult<double> loss = mse_loss(model.forward(x), target);
  const Matrix<double> dx = model.backward(loss.grad);
  ParameterList<double> params;
  model.collect_parameters("", params);
  Gradients out;
  for (const auto& p : params) out[p.name] = p.grads();
  out["input"] = Eigen::Map<const Vector<double>>(dx.data(), dx.size());
  return out;
}

double worst_error(const Gradients& approx, const Gradients& exact) {
  double worst = 0;
  for (const auto& [name, g] : exact) {
    if (g.norm() == 0) continue;  // the key bias gradient of plain softmax attention is zero
    worst = std::max(worst, (approx.at(name) - g).norm() / g.norm());
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Relative error of polynomial-method gradients against exact ones, per degree",
               "polygrad_error_table"};
  Index n = 1024;
  int min_degree = 2, max_degree = 10;
  std::uint64_t seed = 1;
  double init_std = 0.2;
  int threads = 0;
  bool quiet = false;
  app.add_option("--tokens,-n", n, "sequence length")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--min-degree", min_degree, "smallest degree")
      ->capture_default_str()
      ->check(CLI::Range(0, 24));
  app.add_option("--max-degree", max_degree, "largest degree")
      ->capture_default_str()
      ->check(CLI::Range(0, 24));
  app.add_option("--seed", seed, "seed of weights and data")->capture_default_str();
  app.add_option("--init-std", init_std, "std of the Linear weights")->capture_default_str();
  app.add_option("--threads", threads, "threads (0: OpenMP's default)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--quiet,-q", quiet, "no progress lines on stderr");
  const int parsed = examples::parse_command_line(app, argc, argv, [] {});
  if (parsed >= 0) return parsed;
  try {
    examples::Progress progress(quiet);
    Threading threading;
    threading.threads = threads;
    Transformer<double> model(TransformerConfig::demo());
    model.init(seed, init_std);
    model.set_threading(threading);
    AttentionConfig attention;  // the demo model's attention layer (QK normalisation tau = 2)
    attention.d_model = 64;
    attention.heads = 8;
    attention.qk_norm = 2.0;
    MultiHeadAttention<double> layer(attention);
    std::mt19937_64 rng(seed + 1);
    layer.init(rng, init_std);
    layer.set_threading(threading);

    std::srand(unsigned(seed));
    const Matrix<double> x = Matrix<double>::Random(n, 64), target = Matrix<double>::Random(n, 64);
    progress.update("exact gradients of the layer and the model", true);
    const Gradients exact_model = gradients(model, x, target);
    const Gradients exact_layer = gradients(layer, x, target);

    std::printf(
        "n = %ld, causal, d_model 64, 8 heads (d_h 8), QK normalisation tau = 2 (R = 2), "
        "Chebyshev, double\nlargest relative Frobenius error over all parameter and "
        "input gradients\n\n",
        long(n));
    std::printf("%3s %9s %12s | %12s %12s | %12s %12s\n", "g", "rank k", "exp error", "layer adj",
                "layer paper", "model adj", "model paper");
    for (int g = min_degree; g <= max_degree; ++g) {
      std::printf("%3d", g);
      bool first = true;
      for (bool whole_model : {false, true}) {
        for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
          PolyOptions options;
          options.degree = g;
          options.route = route;
          auto method = std::make_shared<PolyAttention<double>>(options);
          progress.update("degree " + std::to_string(g) + ", " + to_string(route) + " route, " +
                              (whole_model ? "model" : "layer"),
                          /*force=*/true);
          std::string cell;
          try {
            double error;
            if (whole_model) {
              model.set_attention(method);
              error = worst_error(gradients(model, x, target), exact_model);
            } else {
              layer.set_attention(method);
              error = worst_error(gradients(layer, x, target), exact_layer);
            }
            char text[32];
            std::snprintf(text, sizeof text, "%.2e", error);
            cell = text;
          } catch (const NumericError&) {
            cell = "P<0";  // the polynomial is negative on some scores: no normaliser
          }
          if (first) {
            const ExpPolynomial p = fit_exp(PolynomialFamily::chebyshev, 2.0, g);
            std::printf(" %9ld %12.2e |", long(SymmetricFeatures::count(8, g)), p.certified_error);
            first = false;
          }
          std::printf(" %12s", cell.c_str());
        }
        if (!whole_model) std::printf(" |");
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    progress.done();
  } catch (const std::exception& e) {
    std::cerr << "polygrad_error_table: " << e.what() << "\n";
    return 1;
  }
}
