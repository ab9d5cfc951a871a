#include <catch2/catch.hpp>

#include "polygrad/layers/embedding.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("Embedding gradient matches central differences", "[layers][embedding]") {
  std::mt19937_64 rng(71);
  Embedding<double> emb(6, 4);
  ParameterList<double> params;
  emb.collect_parameters("tok_emb", params);
  REQUIRE(params.size() == 1);
  CHECK(params[0].name == "tok_emb.weight");
  CHECK(params[0].shape == std::vector<Index>{6, 4});
  test::randomize(params, rng);
  const std::vector<int> ids = {2, 0, 5, 2, 2};  // repeated ids accumulate
  const Matrix<double> W = test::random_matrix(5, 4, rng);

  zero_grad(params);
  emb.forward(ids);
  emb.backward(W);
  const Vector<double> numeric = test::numeric_gradient(
      [&] { return test::probe_loss(emb.forward(ids), W); }, params[0].value, params[0].size());
  CHECK(test::relative_error(numeric, params[0].grads()) <= 1e-6);
  CHECK(params[0].grads().segment(4, 4).norm() == 0.0);  // id 1 never appears
}

TEMPLATE_TEST_CASE("Embedding looks rows up and checks ids", "[layers][embedding]", float, double) {
  std::mt19937_64 rng(72);
  Embedding<TestType> emb(5, 3);
  emb.init(rng, 1.0);
  const Matrix<TestType> y = emb.forward({4, 1});
  CHECK(y.row(0) == emb.weight().row(4));
  CHECK(y.row(1) == emb.weight().row(1));
  CHECK_THROWS_WITH(emb.forward({0, 5}), Catch::Contains("token id 5 at position 1"));
  CHECK_THROWS_AS(emb.forward({-1}), Error);
  CHECK_THROWS_AS(emb.forward({}), ShapeError);
  Embedding<TestType> fresh(5, 3);
  CHECK_THROWS_AS(fresh.backward(Matrix<TestType>::Zero(1, 3)), Error);
  fresh.forward({1, 2});
  CHECK_THROWS_AS(fresh.backward(Matrix<TestType>::Zero(3, 3)), ShapeError);
}
