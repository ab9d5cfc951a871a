#include <catch2/catch.hpp>

#include "polygrad/loss/cross_entropy.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("Cross-entropy gradient matches central differences", "[loss][cross_entropy]") {
  std::mt19937_64 rng(101);
  Matrix<double> logits = test::random_matrix(5, 7, rng, 3.0);
  const std::vector<int> targets = {0, 6, 3, 3, 1};
  const auto result = cross_entropy_loss(logits, targets);
  const Vector<double> numeric = test::numeric_gradient(
      [&] { return cross_entropy_loss(logits, targets).value; }, logits.data(), logits.size());
  const Eigen::Map<const Vector<double>> analytic(result.grad.data(), result.grad.size());
  CHECK(test::relative_error(numeric, analytic) <= 1e-6);
}

TEMPLATE_TEST_CASE("Cross-entropy is the mean negative log-probability", "[loss][cross_entropy]",
                   float, double) {
  std::mt19937_64 rng(102);
  const Matrix<double> logits = test::random_matrix(3, 4, rng, 2.0);
  const std::vector<int> targets = {1, 3, 0};
  double expected = 0;
  for (Index i = 0; i < 3; ++i)
    expected -= std::log(std::exp(logits(i, targets[i])) / logits.row(i).array().exp().sum());
  expected /= 3;
  const auto result = cross_entropy_loss<TestType>(logits.cast<TestType>(), targets);
  CHECK(result.value == Approx(expected).epsilon(1e-5));
  // Each gradient row sums to zero (softmax minus one-hot, over n).
  for (Index i = 0; i < 3; ++i) CHECK(double(result.grad.row(i).sum()) == Approx(0).margin(1e-6));

  // Large logits: shifting a row changes nothing and nothing overflows.
  const Matrix<TestType> shifted = (logits.array() + 5000.0).matrix().cast<TestType>();
  const auto big = cross_entropy_loss<TestType>(shifted, targets);
  CHECK(std::isfinite(big.value));
  CHECK(big.value == Approx(expected).epsilon(1e-2));  // float keeps ~4 digits at 5000
  CHECK(big.grad.allFinite());
}

TEST_CASE("Cross-entropy rejects bad targets and NaN", "[loss][cross_entropy]") {
  const Matrix<double> logits = Matrix<double>::Zero(2, 3);
  CHECK_THROWS_AS(cross_entropy_loss(logits, {0}), ShapeError);
  CHECK_THROWS_WITH(cross_entropy_loss(logits, {0, 3}),
                    Catch::Contains("target id 3 at position 1"));
  CHECK_THROWS_AS(cross_entropy_loss(logits, {-1, 0}), Error);
  Matrix<double> bad = logits;
  bad(1, 1) = INFINITY;
  CHECK_THROWS_AS(cross_entropy_loss(bad, {0, 0}), NumericError);
}

TEST_CASE("Cross-entropy skips ignored targets: the mean of the rows that count",
          "[loss][cross_entropy]") {
  std::mt19937_64 rng(103);
  const Matrix<double> logits = test::random_matrix(5, 4, rng, 2.0);
  const std::vector<int> targets = {ignore_target, 2, ignore_target, 0, 3};
  // The same loss as the three counted rows on their own.
  Matrix<double> kept(3, 4);
  kept << logits.row(1), logits.row(3), logits.row(4);
  const auto alone = cross_entropy_loss(kept, {2, 0, 3});
  const auto masked = cross_entropy_loss(logits, targets);
  CHECK(masked.value == Approx(alone.value).epsilon(1e-15));
  CHECK(masked.grad.row(0).isZero(0));
  CHECK(masked.grad.row(2).isZero(0));
  CHECK(test::relative_error(masked.grad.row(1), alone.grad.row(0)) <= 1e-15);
  CHECK(test::relative_error(masked.grad.row(4), alone.grad.row(2)) <= 1e-15);
  // An ignored row's logits do not matter, even when they are not finite.
  Matrix<double> poisoned = logits;
  poisoned(2, 1) = NAN;
  CHECK(cross_entropy_loss(poisoned, targets).value == Approx(alone.value).epsilon(1e-15));

  CHECK_THROWS_WITH(cross_entropy_loss(logits, std::vector<int>(5, ignore_target)),
                    Catch::Contains("all 5 targets are ignore_target"));
  CHECK_THROWS_WITH(cross_entropy_loss(logits, {-1, 0, 0, 0, 0}),
                    Catch::Contains("is not ignore_target (-100)"));
}
