// Builds against the installed headers only, as a user's project does: Eigen's own threading is
// left on (polygrad's tests are built with EIGEN_DONT_PARALLELIZE) and OpenMP comes with the
// package. A 2-layer model, exact and polynomial, gives the same gradients on the default
// threads, on two threads with every loop parallel, and on one thread; the OpenMP thread count
// is what it was before; everything is finite. Exits 1 with a message otherwise.
#include <polygrad/polygrad.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

using polygrad::Matrix;

std::vector<Matrix<double>> gradients(polygrad::Transformer<double>& model, const Matrix<double>& x,
                                      const Matrix<double>& target) {
  model.zero_grad();
  const auto loss = polygrad::mse_loss(model.forward(x), target);
  std::vector<Matrix<double>> out{model.backward(loss.grad)};
  for (const auto& p : model.parameters()) out.push_back(p.grads());
  return out;
}

double largest_difference(const std::vector<Matrix<double>>& a,
                          const std::vector<Matrix<double>>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = (a[i] - b[i]).norm() / std::max(b[i].norm(), 1e-300);
    if (!(e <= worst)) worst = e;  // NaN counts as the worst
  }
  return worst;
}

}  // namespace

int main() {
  polygrad::TransformerConfig config;
  config.layers = 2;
  config.d_model = 16;
  config.heads = 2;
  config.d_ff = 32;
  config.qk_norm = 2.0;
#if defined(_OPENMP)
  const int threads_before = omp_get_max_threads();
#endif
  const Matrix<double> x = Matrix<double>::Random(600, 16),
                       target = Matrix<double>::Random(600, 16);
  polygrad::PolyOptions options;
  options.degree = 5;
  bool ok = true;
  for (const bool poly : {false, true}) {
    std::shared_ptr<const polygrad::AttentionMethod<double>> method;
    if (poly) method = std::make_shared<polygrad::PolyAttention<double>>(options);
    polygrad::Transformer<double> model(config, method);
    model.init(1, 0.3);
    const auto by_default = gradients(model, x, target);
    model.set_threading(polygrad::Threading{2, 0.0});
    const auto two = gradients(model, x, target);
    model.set_threading(polygrad::Threading::serial());
    const auto one = gradients(model, x, target);
    const double e2 = largest_difference(two, one), e0 = largest_difference(by_default, one);
    std::cout << "consumer: " << (poly ? "poly" : "exact") << " attention, largest relative "
              << "difference to one thread: " << e0 << " (default threads), " << e2
              << " (2 threads)\n";
    ok = ok && e0 <= 1e-10 && e2 <= 1e-10;
  }
#if defined(_OPENMP)
  if (omp_get_max_threads() != threads_before) {
    std::cout << "consumer: the OpenMP thread count changed from " << threads_before << " to "
              << omp_get_max_threads() << "\n";
    ok = false;
  }
#endif
  return ok ? 0 : 1;
}
