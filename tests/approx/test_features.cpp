#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "polygrad/approx/features_reference.hpp"

using namespace polygrad;

namespace {

// Rows with random directions and norms in [0, 1].
template <class T>
Matrix<T> unit_ball_rows(Index rows, Index dim, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Matrix<double> X(rows, dim);
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < dim; ++c) X(r, c) = normal(rng);
    X.row(r) *= uniform(rng) / X.row(r).norm();
  }
  return X.cast<T>();
}

std::vector<double> random_coeffs(int degree, std::mt19937& rng) {
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> b(degree + 1);
  for (double& v : b) v = uniform(rng);
  if (degree >= 2) b[1] = 0.0;  // zero coefficients are allowed
  return b;
}

// C(n, k) by Pascal's rule, independent of SymmetricFeatures::count.
Index binomial(int n, int k) {
  std::vector<std::vector<Index>> c(n + 1, std::vector<Index>(n + 1, 0));
  for (int i = 0; i <= n; ++i) {
    c[i][0] = 1;
    for (int j = 1; j <= i; ++j) c[i][j] = c[i - 1][j - 1] + c[i - 1][j];
  }
  return c[n][k];
}

}  // namespace

TEMPLATE_TEST_CASE("phi(q) . psi(k) = p(q . k) for every degree and dimension",
                   "[approx][features]", float, double) {
  // Every d in 1..16 and g in 0..12 whose feature count is at most 200,000 (keeps the test
  // fast; C(28, 12) = 30 million at d = 16, g = 12 is skipped). That still covers d = 16 for
  // g <= 6 and g = 12 for d <= 8.
  std::mt19937 rng(7);
  const double u = std::numeric_limits<TestType>::epsilon();
  int cases = 0;
  for (Index d = 1; d <= 16; ++d) {
    for (int g = 0; g <= 12; ++g) {
      if (binomial(static_cast<int>(d) + g, g) > 200000) continue;
      ++cases;
      const std::vector<double> b = random_coeffs(g, rng);
      const SymmetricFeatures features(d, b);
      REQUIRE(features.size() == binomial(static_cast<int>(d) + g, g));
      REQUIRE(features.dim() == d);
      REQUIRE(features.degree() == g);
      const Index rows = 3;
      const Matrix<TestType> Q = unit_ball_rows<TestType>(rows, d, rng);
      const Matrix<TestType> K = unit_ball_rows<TestType>(rows, d, rng);
      Matrix<TestType> Phi, Psi;
      poly::reference::phi<TestType>(features, Q, Phi);
      poly::reference::psi<TestType>(features, K, Psi);
      REQUIRE(Phi.rows() == rows);
      REQUIRE(Phi.cols() == features.size());
      for (Index i = 0; i < rows; ++i) {
        for (Index j = 0; j < rows; ++j) {
          const double t = Q.row(i).template cast<double>().dot(K.row(j).template cast<double>());
          // |q| . |k| (entrywise absolute values) bounds the size of each monomial product.
          const double t_abs = Q.row(i).template cast<double>().cwiseAbs().dot(
              K.row(j).template cast<double>().cwiseAbs());
          double p = 0, scale = 0;
          for (int m = g; m >= 0; --m) {
            p = p * t + b[m];
            scale = scale * t_abs + std::fabs(b[m]);
          }
          // The dot product is summed in long double, so that only the features' own roundings
          // count (an Eigen dot product of k terms adds its own, which depend on the packet
          // width: with SSE's two lanes and k ~ 10^5 they exceed the bound below).
          long double sum = 0;
          for (Index f = 0; f < features.size(); ++f)
            sum += static_cast<long double>(Phi(i, f)) * static_cast<long double>(Psi(j, f));
          const double got = static_cast<double>(sum);
          // Each feature product carries ~2g roundings; the sum of their magnitudes is scale.
          // 4 (g + 8) u scale is a comfortable worst case.
          INFO("d = " << d << " g = " << g);
          CHECK(std::fabs(got - p) <= 4 * (g + 8) * u * scale);
        }
      }
    }
  }
  CHECK(cases > 150);
}

TEST_CASE("feature structure: parents, coordinates and weights", "[approx][features]") {
  // Rebuild each feature's multi-index from its parent chain and check the weight formula
  // sqrt(|b_j| j! / alpha!) and the ordering (by degree, non-decreasing coordinates).
  const std::vector<double> b = {0.5, -2.0, 0.0, 3.0, 1.5};
  const Index d = 4;
  const SymmetricFeatures features(d, b);
  CHECK(features.degree_begin(0) == 0);
  CHECK(features.degree_begin(5) == features.size());
  for (int j = 0; j <= 4; ++j) {
    CHECK(features.degree_begin(j + 1) - features.degree_begin(j) ==
          binomial(static_cast<int>(d) + j - 1, j));
    for (Index f = features.degree_begin(j); f < features.degree_begin(j + 1); ++f) {
      std::vector<int> alpha(d, 0);
      int length = 0;
      int previous = static_cast<int>(d);
      for (Index e = f; e != 0; e = features.parent(e)) {
        CHECK(features.parent(e) < e);
        CHECK(features.last_coordinate(e) <= previous);  // walking back, coordinates fall
        previous = features.last_coordinate(e);
        ++alpha[features.last_coordinate(e)];
        ++length;
      }
      CHECK(length == j);
      double multinomial = std::tgamma(j + 1.0);
      for (int a : alpha) multinomial /= std::tgamma(a + 1.0);
      CHECK(features.weight(f) == Approx(std::sqrt(std::fabs(b[j]) * multinomial)).margin(1e-15));
    }
  }
}

TEST_CASE("feature count is C(d + g, g) and overflow is a PlanError", "[approx][features]") {
  for (int d = 1; d <= 20; ++d) {
    for (int g = 0; g <= 12; ++g) CHECK(SymmetricFeatures::count(d, g) == binomial(d + g, g));
  }
  CHECK(SymmetricFeatures::count(8, 7) == 6435);
  CHECK(SymmetricFeatures::count(16, 4) == 4845);
  CHECK(SymmetricFeatures::count(64, 4) == 814385);
  CHECK_THROWS_AS(SymmetricFeatures::count(Index(1) << 40, 10), PlanError);
  CHECK_THROWS_AS(SymmetricFeatures(64, std::vector<double>(21, 1.0)), PlanError);  // > 2^31
}

TEMPLATE_TEST_CASE("zero coefficients give zero features", "[approx][features]", float, double) {
  std::mt19937 rng(3);
  const SymmetricFeatures features(3, {0.0, 1.0, 0.0, -0.5});
  const Matrix<TestType> X = unit_ball_rows<TestType>(4, 3, rng);
  Matrix<TestType> Phi;
  poly::reference::phi<TestType>(features, X, Phi);
  for (int j : {0, 2}) {
    const Index begin = features.degree_begin(j), end = features.degree_begin(j + 1);
    CHECK(Phi.middleCols(begin, end - begin).cwiseAbs().maxCoeff() == TestType(0));
  }
  CHECK(Phi.middleCols(features.degree_begin(3), 1).cwiseAbs().maxCoeff() > TestType(0));
}

TEST_CASE("Jacobian-transpose products match central finite differences", "[approx][features]") {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal;
  for (Index d : {1, 3, 5}) {
    for (int g : {0, 1, 2, 3, 5}) {
      const std::vector<double> b = random_coeffs(g, rng);
      const SymmetricFeatures features(d, b);
      const Index rows = 3;
      const Matrix<double> X = unit_ball_rows<double>(rows, d, rng);
      Matrix<double> G(rows, features.size());  // upstream gradient
      for (Index i = 0; i < G.size(); ++i) G.data()[i] = normal(rng);
      for (bool phi_side : {true, false}) {
        auto apply = [&](const Matrix<double>& x) {
          Matrix<double> F;
          if (phi_side) {
            poly::reference::phi<double>(features, x, F);
          } else {
            poly::reference::psi<double>(features, x, F);
          }
          return (F.array() * G.array()).sum();
        };
        // dX accumulates: start from a known matrix and subtract it afterwards.
        const Matrix<double> start = Matrix<double>::Constant(rows, d, 0.25);
        Matrix<double> dX = start;
        if (phi_side) {
          poly::reference::phi_backward<double>(features, X, G, dX);
        } else {
          poly::reference::psi_backward<double>(features, X, G, dX);
        }
        dX -= start;
        const double h = 1e-6;
        for (Index r = 0; r < rows; ++r) {
          for (Index c = 0; c < d; ++c) {
            Matrix<double> plus = X, minus = X;
            plus(r, c) += h;
            minus(r, c) -= h;
            const double fd = (apply(plus) - apply(minus)) / (2 * h);
            INFO("d = " << d << " g = " << g << (phi_side ? " phi" : " psi") << " row " << r
                        << " col " << c);
            CHECK(dX(r, c) == Approx(fd).epsilon(1e-6).margin(1e-8));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("float and double agree, and row blocks are accepted without copies",
                   "[approx][features]", float, double) {
  std::mt19937 rng(5);
  const SymmetricFeatures features(6, {1.0, 1.0, 0.5, 1.0 / 6, 1.0 / 24});
  const Matrix<double> X = unit_ball_rows<double>(7, 6, rng);
  Matrix<double> ref;
  poly::reference::phi<double>(features, X, ref);
  const Matrix<TestType> Xt = X.cast<TestType>();
  Matrix<TestType> rows;
  poly::reference::phi<TestType>(features, Xt.middleRows(2, 3), rows);  // a block of rows
  CHECK((rows.template cast<double>() - ref.middleRows(2, 3)).cwiseAbs().maxCoeff() <=
        64 * std::numeric_limits<TestType>::epsilon());
  // A column block (one head of a wider matrix) has an outer stride larger than its width.
  Matrix<TestType> wide(7, 10);
  wide.setZero();
  wide.middleCols(2, 6) = Xt;
  Matrix<TestType> heads;
  poly::reference::phi<TestType>(features, wide.middleCols(2, 6), heads);
  CHECK((heads.template cast<double>() - ref).cwiseAbs().maxCoeff() <=
        64 * std::numeric_limits<TestType>::epsilon());
  // Backward on a block, float vs double.
  Matrix<TestType> G = Matrix<TestType>::Ones(7, features.size());
  Matrix<TestType> dX = Matrix<TestType>::Zero(7, 6);
  poly::reference::psi_backward<TestType>(features, wide.middleCols(2, 6), G, dX);
  Matrix<double> dX_ref = Matrix<double>::Zero(7, 6);
  poly::reference::psi_backward<double>(features, X, G.template cast<double>(), dX_ref);
  CHECK((dX.template cast<double>() - dX_ref).cwiseAbs().maxCoeff() <=
        1e3 * std::numeric_limits<TestType>::epsilon() * dX_ref.cwiseAbs().maxCoeff());
}

TEST_CASE("bad inputs throw", "[approx][features]") {
  CHECK_THROWS_AS(SymmetricFeatures(0, {1.0}), ShapeError);
  CHECK_THROWS_AS(SymmetricFeatures(3, {}), PlanError);
  CHECK_THROWS_AS(SymmetricFeatures(3, {1.0, std::nan("")}), NumericError);
  const SymmetricFeatures features(3, {1.0, 1.0});
  Matrix<double> X = Matrix<double>::Zero(2, 4), out;
  CHECK_THROWS_AS(poly::reference::phi<double>(features, X, out), ShapeError);
  Matrix<double> Y = Matrix<double>::Zero(2, 3), dY = Matrix<double>::Zero(2, 3);
  Matrix<double> G = Matrix<double>::Zero(2, features.size() + 1);
  CHECK_THROWS_AS(poly::reference::phi_backward<double>(features, Y, G, dY), ShapeError);
}
