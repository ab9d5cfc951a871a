#include <catch2/catch.hpp>

#include "polygrad/layers/mlp.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("MLP gradients match central differences", "[layers][mlp]") {
  std::mt19937_64 rng(31);
  MLP<double> mlp(4, 7);
  ParameterList<double> params;
  mlp.collect_parameters("mlp", params);
  REQUIRE(params.size() == 4);
  CHECK(params[0].name == "mlp.fc1.weight");
  CHECK(params[0].shape == std::vector<Index>{7, 4});
  CHECK(params[1].name == "mlp.fc1.bias");
  CHECK(params[2].name == "mlp.fc2.weight");
  CHECK(params[2].shape == std::vector<Index>{4, 7});
  CHECK(params[3].name == "mlp.fc2.bias");
  test::randomize(params, rng, 1.0);
  const Matrix<double> x = test::random_matrix(3, 4, rng);
  test::require_small(test::check_layer_gradients(mlp, x, params, rng));
}

TEST_CASE("MLP rejects a wrong width", "[layers][mlp]") {
  MLP<float> mlp(4, 8);
  CHECK_THROWS_AS(mlp.forward(Matrix<float>::Zero(2, 8)), ShapeError);
  CHECK_THROWS_AS(mlp.backward(Matrix<float>::Zero(2, 4)), Error);
}
