#include <catch2/catch.hpp>

#include "polygrad/loss/mse.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("MSE gradient matches central differences", "[loss][mse]") {
  std::mt19937_64 rng(91);
  Matrix<double> Y = test::random_matrix(4, 3, rng);
  const Matrix<double> target = test::random_matrix(4, 3, rng);
  const auto result = mse_loss(Y, target);
  const Vector<double> numeric =
      test::numeric_gradient([&] { return mse_loss(Y, target).value; }, Y.data(), Y.size());
  const Eigen::Map<const Vector<double>> analytic(result.grad.data(), result.grad.size());
  CHECK(test::relative_error(numeric, analytic) <= 1e-6);
}

TEMPLATE_TEST_CASE("MSE is half the squared Frobenius distance", "[loss][mse]", float, double) {
  Matrix<TestType> Y(2, 2), target(2, 2);
  Y << 1, 2, 3, 4;
  target << 1, 0, 5, 4;
  const auto result = mse_loss(Y, target);
  CHECK(result.value == Approx(0.5 * (4 + 4)));
  CHECK(result.grad(0, 1) == TestType(2));
  CHECK(result.grad(1, 0) == TestType(-2));
}

TEST_CASE("MSE rejects mismatched shapes and NaN", "[loss][mse]") {
  CHECK_THROWS_AS(mse_loss<double>(Matrix<double>::Zero(2, 3), Matrix<double>::Zero(3, 2)),
                  ShapeError);
  CHECK_THROWS_WITH(mse_loss<double>(Matrix<double>::Zero(2, 3), Matrix<double>::Zero(3, 2)),
                    Catch::Contains("MSE target"));
  Matrix<double> Y = Matrix<double>::Zero(2, 2);
  Y(0, 0) = std::nan("");
  CHECK_THROWS_AS(mse_loss<double>(Y, Matrix<double>::Zero(2, 2)), NumericError);
}
