#pragma once
// Central finite differences for gradient checks, shared by the layer, loss and model tests.
//
// Every check uses the scalar probe loss L(y) = sum(W o y) with a fixed random W, so that
// dL/dy = W exercises every output entry with a different weight.

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "polygrad/core/parameter.hpp"
#include "polygrad/core/types.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

namespace polygrad::test {

/// Fills every parameter with Uniform(-scale, scale) + offset, so that tests do not depend on
/// the small weights of the default initialisation.
inline void randomize(const ParameterList<double>& params, std::mt19937_64& rng,
                      double scale = 0.5) {
  std::uniform_real_distribution<double> u(-scale, scale);
  for (const auto& p : params)
    for (Index i = 0; i < p.size(); ++i) p.value[i] = u(rng);
}

/// sum(W o y).
inline double probe_loss(const Matrix<double>& y, const Matrix<double>& W) {
  return (y.array() * W.array()).sum();
}

/// The central-difference gradient of `loss()` with respect to data[0, size): entry i is
/// (loss(data + h e_i) - loss(data - h e_i)) / 2h. Restores data.
inline Vector<double> numeric_gradient(const std::function<double()>& loss, double* data,
                                       Index size, double h = 1e-5) {
  Vector<double> g(size);
  for (Index i = 0; i < size; ++i) {
    const double saved = data[i];
    data[i] = saved + h;
    const double up = loss();
    data[i] = saved - h;
    const double down = loss();
    data[i] = saved;
    g(i) = (up - down) / (2 * h);
  }
  return g;
}

/// One relative error per checked tensor: parameter names, and "input" for dx.
using GradientErrors = std::vector<std::pair<std::string, double>>;

/// Compares the analytic gradients of `forward`/`backward` (a layer's pair, on x) with central
/// differences of the probe loss, for every tensor in `params` and, unless check_input is
/// false, for the input. Resets the parameter gradients first.
template <class Forward, class Backward>
GradientErrors check_gradients(Forward&& forward, Backward&& backward, const Matrix<double>& x,
                               const ParameterList<double>& params, std::mt19937_64& rng,
                               bool check_input = true) {
  zero_grad(params);
  const Matrix<double> y = forward(x);
  const Matrix<double> W = random_matrix(y.rows(), y.cols(), rng);
  const Matrix<double> dx = backward(W);
  REQUIRE(dx.rows() == x.rows());
  REQUIRE(dx.cols() == x.cols());

  // Pairs (name, numeric, analytic) first: the error floor needs the largest gradient.
  std::vector<std::tuple<std::string, Vector<double>, Vector<double>>> pairs;
  for (const auto& p : params) {
    Vector<double> numeric =
        numeric_gradient([&] { return probe_loss(forward(x), W); }, p.value, p.size());
    pairs.emplace_back(p.name, std::move(numeric), p.grads());
  }
  if (check_input) {
    Matrix<double> xp = x;
    Vector<double> numeric =
        numeric_gradient([&] { return probe_loss(forward(xp), W); }, xp.data(), xp.size());
    pairs.emplace_back("input", std::move(numeric),
                       Eigen::Map<const Vector<double>>(dx.data(), dx.size()));  // row-major flat
  }
  // Some gradients vanish identically (the key bias: softmax ignores a shift of a score row), and
  // there the numeric one is rounding noise, so errors are relative to at least 1e-3 times the
  // largest gradient in the check; a wrong gradient of any larger size still fails.
  double largest = 0;
  for (const auto& [name, numeric, analytic] : pairs)
    largest = std::max({largest, numeric.norm(), analytic.norm()});
  GradientErrors errors;
  for (const auto& [name, numeric, analytic] : pairs) {
    const double scale = std::max({numeric.norm(), analytic.norm(), 1e-3 * largest, 1e-300});
    errors.emplace_back(name, (numeric - analytic).norm() / scale);
  }
  return errors;
}

/// check_gradients for a layer with forward(x), backward(dy) and the given parameter views.
template <class Layer>
GradientErrors check_layer_gradients(Layer& layer, const Matrix<double>& x,
                                     const ParameterList<double>& params, std::mt19937_64& rng,
                                     bool check_input = true) {
  return check_gradients([&](const Matrix<double>& in) { return layer.forward(in); },
                         [&](const Matrix<double>& dy) { return layer.backward(dy); }, x, params,
                         rng, check_input);
}

/// CHECKs every error against `tolerance`, naming the tensor when one fails.
inline void require_small(const GradientErrors& errors, double tolerance = 1e-6) {
  REQUIRE(!errors.empty());
  for (const auto& [name, error] : errors) {
    INFO("tensor " << name << ": relative error " << error);
    CHECK(error <= tolerance);
  }
}

}  // namespace polygrad::test
