#include <catch2/catch.hpp>

#include "polygrad/layers/lm_head.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("LMHead gradients match central differences", "[layers][lm_head]") {
  std::mt19937_64 rng(81);
  LMHead<double> head(4, 9);
  auto params = head.parameters();
  REQUIRE(params.size() == 1);
  CHECK(params[0].name == "lm_head.weight");
  CHECK(params[0].shape == std::vector<Index>{9, 4});
  test::randomize(params, rng);
  const Matrix<double> x = test::random_matrix(3, 4, rng);
  test::require_small(test::check_layer_gradients(head, x, params, rng));

  ParameterList<double> named;
  head.collect_parameters("model.head", named);
  CHECK(named[0].name == "model.head.weight");
}

TEST_CASE("LMHead has no bias and checks shapes", "[layers][lm_head]") {
  LMHead<float> head(4, 9);
  const Matrix<float> logits = head.forward(Matrix<float>::Zero(2, 4));
  CHECK(logits.rows() == 2);
  CHECK(logits.cols() == 9);
  CHECK(logits.isZero(0));  // zero input, no bias
  CHECK_THROWS_AS(head.forward(Matrix<float>::Zero(2, 9)), ShapeError);
}
