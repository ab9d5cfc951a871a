#include <catch2/catch.hpp>

#include "polygrad/layers/layer_norm.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("LayerNorm gradients match central differences", "[layers][layer_norm]") {
  std::mt19937_64 rng(11);
  for (Index D : {1, 2, 7}) {
    LayerNorm<double> layer(D);
    ParameterList<double> params;
    layer.collect_parameters("ln", params);
    test::randomize(params, rng);
    const Matrix<double> x = test::random_matrix(5, D, rng, 2.0);
    INFO("D = " << D);
    test::require_small(test::check_layer_gradients(layer, x, params, rng));
  }
}

TEMPLATE_TEST_CASE("LayerNorm rows have mean beta and biased variance gamma^2",
                   "[layers][layer_norm]", float, double) {
  std::mt19937_64 rng(12);
  const Index D = 6;
  LayerNorm<TestType> layer(D);
  ParameterList<TestType> params;
  layer.collect_parameters("", params);
  REQUIRE(params[0].name == "weight");
  REQUIRE(params[1].name == "bias");
  const Matrix<TestType> x =
      (test::random_matrix(3, D, rng, 3.0).array() + 5.0).matrix().cast<TestType>();
  const Matrix<TestType> y = layer.forward(x);
  for (Index i = 0; i < 3; ++i) {
    const double mean = double(x.row(i).mean());
    const double var = (x.row(i).template cast<double>().array() - mean).square().mean();
    for (Index j = 0; j < D; ++j)
      CHECK(double(y(i, j)) ==
            Approx((double(x(i, j)) - mean) / std::sqrt(var + 1e-5)).epsilon(1e-4).margin(1e-5));
  }
}

TEST_CASE("LayerNorm rejects bad shapes and NaN", "[layers][layer_norm]") {
  LayerNorm<double> layer(4);
  CHECK_THROWS_AS(layer.forward(Matrix<double>::Zero(2, 3)), ShapeError);
  CHECK_THROWS_AS(layer.backward(Matrix<double>::Zero(2, 4)), Error);
  Matrix<double> x = Matrix<double>::Ones(2, 4);
  x(0, 0) = INFINITY;
  CHECK_THROWS_AS(layer.forward(x), NumericError);
  CHECK_THROWS_AS(LayerNorm<double>(0), ShapeError);
}
