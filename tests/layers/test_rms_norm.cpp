// RMSNorm (layers/rms_norm.hpp): y = x / sqrt(mean(x^2) + eps) o gamma per row.

#include <catch2/catch.hpp>

#include <cmath>

#include "polygrad/layers/rms_norm.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("RMSNorm gradients match central differences", "[layers][rms_norm]") {
  std::mt19937_64 rng(41);
  for (Index D : {1, 2, 7, 33}) {
    for (double eps : {1e-6, 0.5}) {
      RMSNorm<double> layer(D, eps);
      ParameterList<double> params;
      layer.collect_parameters("norm", params);
      REQUIRE(params.size() == 1);
      CHECK(params[0].name == "norm.weight");
      CHECK(params[0].shape == std::vector<Index>{D});
      test::randomize(params, rng, 1.0);
      const Matrix<double> x = test::random_matrix(5, D, rng, 2.0);
      INFO("D = " << D << ", eps = " << eps);
      test::require_small(test::check_layer_gradients(layer, x, params, rng));
    }
  }
}

TEMPLATE_TEST_CASE("RMSNorm rows have root mean square one before the gain", "[layers][rms_norm]",
                   float, double) {
  std::mt19937_64 rng(42);
  const Index D = 9, n = 4;
  RMSNorm<TestType> layer(D);
  CHECK(layer.eps() == 1e-6);
  const Matrix<TestType> x = test::random_matrix(n, D, rng, 3.0).template cast<TestType>();
  layer.weight().setLinSpaced(D, TestType(0.5), TestType(2.5));
  const Matrix<TestType> y = layer.forward(x);
  const double tolerance = std::is_same_v<TestType, float> ? 1e-6 : 1e-15;
  for (Index i = 0; i < n; ++i) {
    const Vector<double> xi = x.row(i).transpose().template cast<double>();
    const double rms = std::sqrt(xi.squaredNorm() / double(D) + 1e-6);
    for (Index j = 0; j < D; ++j) {
      const double want = xi(j) / rms * double(layer.weight()(j));
      CHECK(std::abs(double(y(i, j)) - want) <= tolerance * std::abs(want) + tolerance);
    }
  }
  // No centring: a row and the same row shifted normalise differently (LayerNorm would not).
  Matrix<TestType> shifted = x;
  shifted.array() += TestType(1);
  CHECK((layer.forward(shifted) - y).cwiseAbs().maxCoeff() > TestType(1e-2));
}

TEST_CASE("RMSNorm float follows double within float's precision, split between threads",
          "[layers][rms_norm]") {
  std::mt19937_64 rng(43);
  const Index D = 24, n = 300;
  const Matrix<double> x = test::random_matrix(n, D, rng, 2.0);
  const Matrix<double> dy = test::random_matrix(n, D, rng);
  RMSNorm<double> reference(D);
  RMSNorm<float> one(D), two(D);
  const Vector<double> gain = test::random_matrix(D, 1, rng, 1.0).col(0);
  reference.weight() = gain;
  one.weight() = gain.cast<float>();
  two.weight() = gain.cast<float>();
  Threading threads;
  threads.threads = 2;
  threads.row_block = 16;
  threads.min_parallel_work = 0;  // split even this small a problem
  two.set_threading(threads);
  const Matrix<double> y = reference.forward(x), dx = reference.backward(dy);
  const Matrix<float> y1 = one.forward(x.cast<float>()), dx1 = one.backward(dy.cast<float>());
  const Matrix<float> y2 = two.forward(x.cast<float>()), dx2 = two.backward(dy.cast<float>());
  CHECK((y1.cast<double>() - y).cwiseAbs().maxCoeff() < 1e-5);
  CHECK((dx1.cast<double>() - dx).cwiseAbs().maxCoeff() < 1e-5);
  CHECK((one.weight_grad().cast<double>() - reference.weight_grad()).norm() <
        1e-5 * reference.weight_grad().norm());
  CHECK(y2 == y1);
  CHECK(dx2 == dx1);
  CHECK((two.weight_grad() - one.weight_grad()).norm() <= 1e-6f * one.weight_grad().norm());
}

TEST_CASE("RMSNorm rejects bad shapes, NaN and an impossible eps", "[layers][rms_norm]") {
  RMSNorm<double> layer(4);
  CHECK_THROWS_AS(layer.forward(Matrix<double>::Zero(2, 3)), ShapeError);
  CHECK_THROWS_AS(layer.backward(Matrix<double>::Zero(2, 4)), Error);
  Matrix<double> x = Matrix<double>::Ones(2, 4);
  x(1, 2) = NAN;
  CHECK_THROWS_AS(layer.forward(x), NumericError);
  CHECK_THROWS_AS(RMSNorm<double>(0), ShapeError);
  CHECK_THROWS_AS(RMSNorm<float>(4, 0.0), Error);
  CHECK_THROWS_AS(RMSNorm<float>(4, -1e-6), Error);
  CHECK_THROWS_AS(RMSNorm<float>(4, INFINITY), Error);
  // A zero row is defined (eps keeps it finite) and maps to zero.
  const Matrix<double> y = layer.forward(Matrix<double>::Zero(1, 4));
  CHECK(y.isZero(0));
}
