#include <catch2/catch.hpp>

#include "polygrad/layers/linear.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("Linear gradients match central differences", "[layers][linear]") {
  std::mt19937_64 rng(1);
  for (bool bias : {true, false}) {
    Linear<double> layer(5, 3, bias);
    ParameterList<double> params;
    layer.collect_parameters("fc", params);
    REQUIRE(params.size() == (bias ? 2u : 1u));
    test::randomize(params, rng);
    const Matrix<double> x = test::random_matrix(4, 5, rng);
    test::require_small(test::check_layer_gradients(layer, x, params, rng));
  }
}

TEMPLATE_TEST_CASE("Linear computes x W^T + b entry by entry", "[layers][linear]", float, double) {
  std::mt19937_64 rng(2);
  Linear<TestType> layer(3, 2);
  layer.weight() = test::random_matrix(2, 3, rng).cast<TestType>();
  layer.bias() = test::random_matrix(2, 1, rng).cast<TestType>();
  const Matrix<TestType> x = test::random_matrix(4, 3, rng).cast<TestType>();
  const Matrix<TestType> y = layer.forward(x);
  REQUIRE(y.rows() == 4);
  REQUIRE(y.cols() == 2);
  for (Index i = 0; i < 4; ++i)
    for (Index o = 0; o < 2; ++o) {
      double expected = double(layer.bias()(o));
      for (Index k = 0; k < 3; ++k) expected += double(x(i, k)) * double(layer.weight()(o, k));
      CHECK(double(y(i, o)) == Approx(expected).epsilon(1e-5));
    }
}

TEST_CASE("Linear names its parameters like PyTorch and accumulates gradients",
          "[layers][linear]") {
  std::mt19937_64 rng(3);
  Linear<double> layer(3, 2);
  ParameterList<double> params;
  layer.collect_parameters("blocks.0.attn.q", params);
  REQUIRE(params[0].name == "blocks.0.attn.q.weight");
  REQUIRE(params[0].shape == std::vector<Index>{2, 3});
  REQUIRE(params[1].name == "blocks.0.attn.q.bias");
  REQUIRE(params[1].shape == std::vector<Index>{2});
  test::randomize(params, rng);

  const Matrix<double> x = test::random_matrix(4, 3, rng), dy = test::random_matrix(4, 2, rng);
  layer.forward(x);
  layer.backward(dy);
  const Matrix<double> once = layer.weight_grad();
  layer.forward(x);
  layer.backward(dy);
  CHECK(test::relative_error(layer.weight_grad(), Matrix<double>(2 * once)) < 1e-15);
  layer.zero_grad();
  CHECK(layer.weight_grad().norm() == 0.0);
  CHECK(layer.bias_grad().norm() == 0.0);
}

TEST_CASE("Linear rejects bad shapes, NaN and a backward without forward", "[layers][linear]") {
  Linear<double> layer(3, 2);
  CHECK_THROWS_AS(layer.forward(Matrix<double>::Zero(4, 5)), ShapeError);
  CHECK_THROWS_WITH(layer.forward(Matrix<double>::Zero(4, 5)),
                    Catch::Contains("must be 4 x 3, got 4 x 5"));
  CHECK_THROWS_AS(layer.backward(Matrix<double>::Zero(4, 2)), Error);
  CHECK_THROWS_WITH(layer.backward(Matrix<double>::Zero(4, 2)),
                    Catch::Contains("without a preceding forward"));
  Matrix<double> x = Matrix<double>::Zero(4, 3);
  x(1, 2) = std::nan("");
  CHECK_THROWS_AS(layer.forward(x), NumericError);
  layer.forward(Matrix<double>::Zero(4, 3));
  CHECK_THROWS_AS(layer.backward(Matrix<double>::Zero(3, 2)), ShapeError);
  CHECK_THROWS_AS(Linear<double>(0, 2), ShapeError);
}
