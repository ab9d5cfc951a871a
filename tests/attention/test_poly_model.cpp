// Every gradient of a 4-layer causal model through the polynomial method, against the exact
// path: d_model 64, 8 heads (d_h 8), MLP, residuals, QK normalisation with tau = 2.

#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

/// Gradients of 1/2 ||model(x) - target||^2 by name, "input" included.
std::map<std::string, Vector<double>> gradients(Transformer<double>& model, const Matrix<double>& x,
                                                const Matrix<double>& target) {
  model.zero_grad();
  const LossResult<double> loss = mse_loss(model.forward(x), target);
  const Matrix<double> dx = model.backward(loss.grad);
  std::map<std::string, Vector<double>> out;
  for (const auto& p : model.parameters()) out[p.name] = p.grads();
  out["input"] = Eigen::Map<const Vector<double>>(dx.data(), dx.size());
  return out;
}

/// The largest relative error over all tensors, and its tensor's name.
std::pair<double, std::string> worst_error(const std::map<std::string, Vector<double>>& approx,
                                           const std::map<std::string, Vector<double>>& exact) {
  std::pair<double, std::string> worst{0.0, ""};
  for (const auto& [name, g] : exact) {
    const double e = test::relative_error(approx.at(name), g);
    if (e > worst.first) worst = {e, name};
  }
  return worst;
}

}  // namespace

TEST_CASE("model gradients through the polynomial method converge to the exact ones",
          "[attention][poly][model]") {
  const Index n = 64;
  Transformer<double> model(TransformerConfig::demo());
  // Weights larger than the default 0.02 so that attention patterns are far from uniform.
  model.init(17, 0.2);
  std::mt19937_64 rng(5);
  const Matrix<double> x = test::random_matrix(n, 64, rng),
                       target = test::random_matrix(n, 64, rng);
  model.set_attention(std::make_shared<NaiveAttention<double>>());
  const auto exact = gradients(model, x, target);
  REQUIRE(exact.size() == 16 * 4 + 2 + 1);

  for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
    std::vector<double> worst;
    for (int g = 3; g <= 10; ++g) {
      PolyOptions options;
      options.route = route;
      options.degree = g;
      options.chunk = 32;
      model.set_attention(std::make_shared<PolyAttention<double>>(options));
      const auto [error, name] = worst_error(gradients(model, x, target), exact);
      worst.push_back(error);
      CAPTURE(to_string(route), g, name, error);
      if (g == 7) CHECK(error < 1e-3);
    }
    CAPTURE(to_string(route), worst);
    for (std::size_t i = 2; i < worst.size(); ++i) CHECK(worst[i] < worst[i - 2]);
  }
}
