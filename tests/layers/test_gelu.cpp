#include <catch2/catch.hpp>

#include "polygrad/layers/gelu.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("GELU gradient matches central differences", "[layers][gelu]") {
  std::mt19937_64 rng(21);
  GELU<double> layer;
  ParameterList<double> params;
  layer.collect_parameters("act", params);
  REQUIRE(params.empty());
  const Matrix<double> x = test::random_matrix(4, 6, rng, 4.0);
  test::require_small(test::check_layer_gradients(layer, x, params, rng));
}

TEMPLATE_TEST_CASE("GELU is x times the normal CDF (exact erf form)", "[layers][gelu]", float,
                   double) {
  GELU<TestType> layer;
  Matrix<TestType> x(1, 5);
  x << -3, -1, 0, 1, 2;
  const Matrix<TestType> y = layer.forward(x);
  // Phi(1) = 0.841344746..., Phi(2) = 0.977249868..., Phi(-3) = 0.001349898... (tables).
  CHECK(double(y(0, 0)) == Approx(-3 * 0.0013498980316301).epsilon(1e-5));
  CHECK(double(y(0, 1)) == Approx(-1 * (1 - 0.8413447460685429)).epsilon(1e-5));
  CHECK(double(y(0, 2)) == 0.0);
  CHECK(double(y(0, 3)) == Approx(0.8413447460685429).epsilon(1e-6));
  CHECK(double(y(0, 4)) == Approx(2 * 0.9772498680518208).epsilon(1e-6));
}

TEST_CASE("GELU rejects NaN and a backward without forward", "[layers][gelu]") {
  GELU<float> layer;
  CHECK_THROWS_AS(layer.backward(Matrix<float>::Zero(1, 1)), Error);
  Matrix<float> x = Matrix<float>::Zero(2, 2);
  x(1, 1) = std::nanf("");
  CHECK_THROWS_AS(layer.forward(x), NumericError);
}
