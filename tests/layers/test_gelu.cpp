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

TEST_CASE("float GELU keeps float's relative accuracy over its whole range", "[layers][gelu]") {
  // Against the double path (the C library's erfc), at every 1/64 on [-12, 12], rows of odd
  // width so that the vectorised kernel's tails run too: gelu and gelu' within a few float ulps
  // relative, also far out on the negative side where 1 + erf(x / sqrt 2) would cancel.
  const Index cols = 67;
  const Index rows = (24 * 64 + cols) / cols;
  Matrix<double> x(rows, cols);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = -12.0 + double(i) / 64.0;
  const Matrix<float> xf = x.cast<float>();
  Matrix<double> y(rows, cols), g(rows, cols);
  Matrix<float> yf(rows, cols), gf(rows, cols);
  GELU<double>::forward_rows(xf.cast<double>(), y);
  GELU<float>::forward_rows(xf, yf);
  const Matrix<double> ones = Matrix<double>::Ones(rows, cols);
  GELU<double>::backward_rows(xf.cast<double>(), ones, g);
  GELU<float>::backward_rows(xf, ones.cast<float>(), gf);
  double worst_y = 0, worst_g = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double ref_y = y.data()[i], ref_g = g.data()[i];
    if (ref_y != 0)
      worst_y = std::max(worst_y, std::abs(double(yf.data()[i]) - ref_y) / std::abs(ref_y));
    // gelu' has a zero near -0.75; measure it against its scale there.
    worst_g =
        std::max(worst_g, std::abs(double(gf.data()[i]) - ref_g) / std::max(std::abs(ref_g), 0.1));
  }
  CAPTURE(worst_y, worst_g);
  CHECK(worst_y < 1e-6);
  CHECK(worst_g < 1e-6);
}
