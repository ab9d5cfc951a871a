// SwiGLU (layers/swiglu.hpp): down(silu(gate(x)) o up(x)), no biases.

#include <catch2/catch.hpp>

#include <cmath>

#include "polygrad/layers/swiglu.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("SwiGLU gradients match central differences", "[layers][swiglu]") {
  std::mt19937_64 rng(51);
  for (const auto& [D, F] : {std::pair<Index, Index>{4, 7}, {1, 1}, {6, 16}}) {
    SwiGLU<double> mlp(D, F);
    ParameterList<double> params;
    mlp.collect_parameters("mlp", params);
    REQUIRE(params.size() == 3);
    CHECK(params[0].name == "mlp.gate_proj.weight");
    CHECK(params[0].shape == std::vector<Index>{F, D});
    CHECK(params[1].name == "mlp.up_proj.weight");
    CHECK(params[1].shape == std::vector<Index>{F, D});
    CHECK(params[2].name == "mlp.down_proj.weight");
    CHECK(params[2].shape == std::vector<Index>{D, F});
    test::randomize(params, rng, 1.0);
    const Matrix<double> x = test::random_matrix(3, D, rng, 1.5);
    INFO("D = " << D << ", F = " << F);
    test::require_small(test::check_layer_gradients(mlp, x, params, rng));
  }
}

TEMPLATE_TEST_CASE("SwiGLU is down(silu(gate x) o up x), entry by entry", "[layers][swiglu]", float,
                   double) {
  std::mt19937_64 rng(52);
  const Index D = 3, F = 5, n = 4;
  SwiGLU<TestType> mlp(D, F);
  std::mt19937_64 init(7);
  mlp.init(init, 0.8);
  Matrix<TestType> x = test::random_matrix(n, D, rng, 2.0).template cast<TestType>();
  x(0, 0) = TestType(60);  // gate pre-activations far out on both sides of the sigmoid
  x(1, 0) = TestType(-60);
  const Matrix<TestType> y = mlp.forward(x);
  const Matrix<double> Wg = mlp.gate_proj().weight().template cast<double>();
  const Matrix<double> Wu = mlp.up_proj().weight().template cast<double>();
  const Matrix<double> Wd = mlp.down_proj().weight().template cast<double>();
  const Matrix<double> xd = x.template cast<double>();
  const Matrix<double> a = xd * Wg.transpose(), b = xd * Wu.transpose();
  Matrix<double> h(n, F);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < F; ++j) h(i, j) = a(i, j) / (1 + std::exp(-a(i, j))) * b(i, j);
  const Matrix<double> want = h * Wd.transpose();
  const double tolerance = std::is_same_v<TestType, float> ? 2e-5 : 1e-13;
  CHECK((y.template cast<double>() - want).cwiseAbs().maxCoeff() <=
        tolerance * want.cwiseAbs().maxCoeff());
  REQUIRE(y.allFinite());
  const Matrix<TestType> dx = mlp.backward(Matrix<TestType>::Ones(n, D));
  CHECK(dx.allFinite());
}

TEST_CASE("SwiGLU rejects a wrong width and a backward without forward", "[layers][swiglu]") {
  SwiGLU<float> mlp(4, 8);
  CHECK_THROWS_AS(mlp.forward(Matrix<float>::Zero(2, 8)), ShapeError);
  CHECK_THROWS_AS(mlp.backward(Matrix<float>::Zero(2, 4)), Error);
  Matrix<float> x = Matrix<float>::Zero(2, 4);
  x(0, 3) = INFINITY;
  CHECK_THROWS_AS(mlp.forward(x), NumericError);
  CHECK_THROWS_AS(SwiGLU<double>(0, 4), ShapeError);
  CHECK_THROWS_AS(SwiGLU<double>(4, 0), ShapeError);
}
