#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "polygrad/approx/entry_bound.hpp"

using namespace polygrad;

namespace {

template <class T>
Matrix<T> gaussian(Index rows, Index cols, double offset, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  Matrix<double> M(rows, cols);
  for (Index i = 0; i < M.size(); ++i) M.data()[i] = normal(rng) + offset;
  return M.cast<T>();
}

// max |c q_i . (k_j - centre)| over all pairs, in double.
template <class T>
double largest_score(const Matrix<T>& Q, const Matrix<T>& K, double scale,
                     const Vector<double>& centre) {
  const Matrix<double> Kc = K.template cast<double>().rowwise() - centre.transpose();
  return (scale * Q.template cast<double>() * Kc.transpose()).cwiseAbs().maxCoeff();
}

}  // namespace

TEMPLATE_TEST_CASE("every centred score lies in [-R, R]", "[approx][entry_bound]", float, double) {
  std::mt19937 rng(1);
  for (Index n : {1, 2, 17, 64}) {
    for (Index d : {1, 4, 9}) {
      for (bool centre : {false, true}) {
        const Matrix<TestType> Q = gaussian<TestType>(n, d, 0.3, rng);
        const Matrix<TestType> K = gaussian<TestType>(n + 3, d, -0.7, rng);
        const double c = 1.0 / std::sqrt(static_cast<double>(d));
        const EntryBound bound = cauchy_schwarz_bound(Q, K, c, centre);
        REQUIRE(bound.key_centre.size() == d);
        INFO("n = " << n << " d = " << d << " centre = " << centre);
        CHECK(largest_score(Q, K, c, bound.key_centre) <= bound.R);
        CHECK(bound.R == Approx(c * bound.q_max * bound.k_max).epsilon(1e-12));
        const Matrix<double> Kc =
            K.template cast<double>().rowwise() - bound.key_centre.transpose();
        CHECK(Q.template cast<double>().rowwise().norm().maxCoeff() <= bound.q_max);
        CHECK(Kc.rowwise().norm().maxCoeff() <= bound.k_max);
        CHECK(bound.q_max ==
              Approx(Q.template cast<double>().rowwise().norm().maxCoeff()).epsilon(1e-12));
        if (centre) {
          const Vector<double> mean = K.template cast<double>().colwise().mean().transpose();
          CHECK((bound.key_centre - mean).cwiseAbs().maxCoeff() <= 1e-12);
        } else {
          CHECK(bound.key_centre.cwiseAbs().maxCoeff() == 0.0);
        }
      }
    }
  }
}

TEST_CASE("the bound is attained when a query is parallel to a key", "[approx][entry_bound]") {
  // Cauchy-Schwarz is tight here, so the rounding margin must keep R above the exact score.
  std::mt19937 rng(2);
  Matrix<double> K = gaussian<double>(5, 7, 0.0, rng);
  Matrix<double> Q(1, 7);
  Q.row(0) = 3.0 * K.row(2);
  const EntryBound bound = cauchy_schwarz_bound(Q, K, 0.125, false);
  const double top = largest_score(Q, K, 0.125, bound.key_centre);
  CHECK(top <= bound.R);
  CHECK(top >= bound.R * (1 - 1e-12));
}

TEST_CASE("centring shrinks R for keys with a common offset and keeps softmax rows",
          "[approx][entry_bound]") {
  std::mt19937 rng(4);
  const Matrix<double> Q = gaussian<double>(20, 8, 0.0, rng);
  const Matrix<double> K = gaussian<double>(20, 8, 10.0, rng);
  const EntryBound plain = cauchy_schwarz_bound(Q, K, 0.35, false);
  const EntryBound centred = cauchy_schwarz_bound(Q, K, 0.35, true);
  CHECK(centred.R < 0.5 * plain.R);
  // Shifting row i by c q_i . kbar does not change its softmax (design.md section 3).
  auto softmax = [](Matrix<double> S) {
    for (Index i = 0; i < S.rows(); ++i) {
      S.row(i) = (S.row(i).array() - S.row(i).maxCoeff()).exp();
      S.row(i) /= S.row(i).sum();
    }
    return S;
  };
  const Matrix<double> S = 0.35 * Q * K.transpose();
  const Matrix<double> Sc = 0.35 * Q * (K.rowwise() - centred.key_centre.transpose()).transpose();
  CHECK((softmax(S) - softmax(Sc)).cwiseAbs().maxCoeff() <= 1e-12);
}

TEMPLATE_TEST_CASE("non-finite or mismatched input throws", "[approx][entry_bound]", float,
                   double) {
  Matrix<TestType> Q = Matrix<TestType>::Ones(3, 4), K = Matrix<TestType>::Ones(5, 4);
  Q(1, 2) = std::numeric_limits<TestType>::quiet_NaN();
  CHECK_THROWS_AS(cauchy_schwarz_bound(Q, K, 1.0, true), NumericError);
  Q(1, 2) = 0;
  K(4, 0) = std::numeric_limits<TestType>::infinity();
  CHECK_THROWS_AS(cauchy_schwarz_bound(Q, K, 1.0, false), NumericError);
  K(4, 0) = 0;
  CHECK_THROWS_AS(cauchy_schwarz_bound(Q, K, std::nan(""), false), NumericError);
  const Matrix<TestType> narrow = Matrix<TestType>::Ones(5, 3);
  CHECK_THROWS_AS(cauchy_schwarz_bound(Q, narrow, 1.0, false), ShapeError);
  const EntryBound zero =
      cauchy_schwarz_bound(Matrix<TestType>(Matrix<TestType>::Zero(2, 4)), K, 1.0, false);
  CHECK(zero.R == 0.0);
}
