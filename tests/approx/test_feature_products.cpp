#include <catch2/catch.hpp>

#include <limits>
#include <random>
#include <vector>

#include "polygrad/approx/feature_products.hpp"
#include "polygrad/approx/features_reference.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

// The chunk kernels of monomial_block.hpp and feature_products.hpp, each against a plain dense
// evaluation: monomials from the row-by-row psi of features_reference.hpp (divided by its weights),
// products with Eigen, gradients by central differences in double.

using namespace polygrad;

namespace {

template <class T>
Matrix<T> unit_ball_rows(Index rows, Index dim, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.2, 1.0);
  Matrix<double> X(rows, dim);
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < dim; ++c) X(r, c) = normal(rng);
    X.row(r) *= uniform(rng) / X.row(r).norm();
  }
  return X.cast<T>();
}

// Nonzero coefficients, so every feature has a nonzero weight to divide by.
SymmetricFeatures features_for(Index dim, int degree) {
  std::vector<double> b(std::size_t(degree) + 1);
  for (int j = 0; j <= degree; ++j) b[std::size_t(j)] = 1.0 / (1 + j);
  return SymmetricFeatures(dim, b);
}

// Dense monomials (k x C) of the rows of X, from the row-by-row feature builder.
Matrix<double> dense_monomials(const SymmetricFeatures& F, const Matrix<double>& X) {
  Matrix<double> psi;
  poly::reference::psi<double>(F, X, psi);  // (C, k)
  Matrix<double> M = psi.transpose();
  for (Index f = 0; f < F.size(); ++f) M.row(f) /= F.weight(f);
  return M;
}

// The k x C matrix behind a StripMatrix or Monomials, through their element access.
template <class Blocked>
Matrix<double> to_dense(const Blocked& M, Index k, Index C) {
  Matrix<double> out(k, C);
  for (Index f = 0; f < k; ++f)
    for (Index r = 0; r < C; ++r) out(f, r) = double(M(f, r));
  return out;
}

template <class T>
Matrix<T> zero_padded(const Matrix<T>& rows) {
  Matrix<T> out = Matrix<T>::Zero(padded_rows<T>(rows.rows()), rows.cols());
  out.topRows(rows.rows()) = rows;
  return out;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

// (d, g, rows): rows below, at and above one packet, not multiples of it; k below and above W.
struct Shape {
  Index dim;
  int degree;
  Index rows;
};
const Shape shapes[] = {{1, 0, 1}, {1, 3, 5}, {2, 2, 17}, {3, 4, 16}, {8, 3, 33}, {5, 5, 7}};

}  // namespace

TEMPLATE_TEST_CASE("a monomial block holds x_r^alpha_f for every feature and row",
                   "[approx][monomial_block]", float, double) {
  std::mt19937_64 rng(1);
  for (const Shape& s : shapes) {
    CAPTURE(s.dim, s.degree, s.rows);
    const SymmetricFeatures F = features_for(s.dim, s.degree);
    const Matrix<TestType> X = unit_ball_rows<TestType>(s.rows, s.dim, rng);
    MonomialBlock<TestType> block(F);
    Monomials<TestType> M;
    block.build(X, M);
    REQUIRE(M.size() == F.size());
    REQUIRE(M.stored() <= M.size());
    REQUIRE(M.strips() * simd::width<TestType> >= s.rows);
    const Matrix<double> want = dense_monomials(F, X.template cast<double>());
    CHECK(test::relative_error(to_dense(M, M.size(), s.rows), want) < tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("the block products equal their dense definitions", "[approx][products]", float,
                   double) {
  std::mt19937_64 rng(2);
  for (const Shape& s : shapes) {
    for (Index m : {1, 9, 13, 80}) {
      CAPTURE(s.dim, s.degree, s.rows, m);
      const SymmetricFeatures F = features_for(s.dim, s.degree);
      const Index k = F.size();
      const Matrix<TestType> X = unit_ball_rows<TestType>(s.rows, s.dim, rng);
      MonomialBlock<TestType> block(F);
      Monomials<TestType> M;
      block.build(X, M);
      const Matrix<double> Md = dense_monomials(F, X.template cast<double>());  // (k, C)
      const Matrix<TestType> ST =
          test::random_matrix(m, k, rng).template cast<TestType>();  // state^T
      const Matrix<TestType> Y =
          test::random_matrix(s.rows, m, rng).template cast<TestType>();  // rows

      // out = M^T S
      Matrix<TestType> out;
      monomials_transpose_times(M, ST, out);
      const Matrix<double> out_want = Md.transpose() * ST.template cast<double>().transpose();
      CHECK(test::relative_error(out.topRows(s.rows).template cast<double>(), out_want) <
            tolerance<TestType>());

      // dM = S Y^T
      StripMatrix<TestType> dM;
      Matrix<TestType> YT;
      state_times_rows_transpose<TestType>(ST, zero_padded(Y), dM, YT);
      const Matrix<double> dM_want =
          ST.template cast<double>().transpose() * Y.template cast<double>().transpose();
      CHECK(test::relative_error(to_dense(dM, dM.rows(), s.rows), dM_want) < tolerance<TestType>());

      // S^T += (M Y)^T, on top of what the state held; the padding columns stay zero.
      Matrix<TestType> acc =
          test::random_matrix(m, padded_rows<TestType>(k), rng).template cast<TestType>();
      acc.rightCols(acc.cols() - k).setZero();
      const Matrix<double> before = acc.template cast<double>();
      ProductScratch<TestType> scratch;
      add_monomial_products(M, zero_padded(Y), acc, scratch);
      const Matrix<double> add_want =
          before.leftCols(k) + (Md * Y.template cast<double>()).transpose();
      CHECK(test::relative_error(acc.leftCols(k).template cast<double>(), add_want) <
            tolerance<TestType>());
      CHECK(acc.rightCols(acc.cols() - k).isZero(0));

      // S^T = (M Y)^T with Update::assign: what the state held (here NaN) is never read.
      acc.setConstant(std::numeric_limits<TestType>::quiet_NaN());
      add_monomial_products(M, zero_padded(Y), acc, scratch, Update::assign);
      const Matrix<double> assign_want = (Md * Y.template cast<double>()).transpose();
      CHECK(test::relative_error(acc.leftCols(k).template cast<double>(), assign_want) <
            tolerance<TestType>());
      CHECK(acc.rightCols(acc.cols() - k).isZero(0));
    }
  }
}

TEMPLATE_TEST_CASE("add_state_gradient is the gradient of sum (S Y^T) o M(X)", "[approx][products]",
                   float, double) {
  std::mt19937_64 rng(3);
  for (const Shape& s : shapes) {
    for (Index m : {1, 9, 13}) {  // 13 > 12 takes the stored-gradient path
      CAPTURE(s.dim, s.degree, s.rows, m);
      const SymmetricFeatures F = features_for(s.dim, s.degree);
      const Matrix<TestType> X = unit_ball_rows<TestType>(s.rows, s.dim, rng);
      const Matrix<TestType> ST = test::random_matrix(m, F.size(), rng).template cast<TestType>();
      const Matrix<TestType> Y = test::random_matrix(s.rows, m, rng).template cast<TestType>();
      MonomialBlock<TestType> block(F);
      Monomials<TestType> M;
      block.build(X, M);
      Matrix<TestType> dX = Matrix<TestType>::Constant(s.rows, s.dim, TestType(0.5));
      ProductScratch<TestType> scratch;
      add_state_gradient(block, X, M, ST, zero_padded(Y), dX, scratch);  // adds to what dX holds

      // loss(X) = sum_{f,r} (S Y^T)(f, r) M(f, r), in double.
      const Matrix<double> G =
          ST.template cast<double>().transpose() * Y.template cast<double>().transpose();
      auto loss = [&](const Matrix<double>& Xd) {
        return G.cwiseProduct(dense_monomials(F, Xd)).sum();
      };
      Matrix<double> want(s.rows, s.dim);
      const double h = 1e-6;
      for (Index r = 0; r < s.rows; ++r) {
        for (Index c = 0; c < s.dim; ++c) {
          Matrix<double> plus = X.template cast<double>(), minus = plus;
          plus(r, c) += h;
          minus(r, c) -= h;
          want(r, c) = 0.5 + (loss(plus) - loss(minus)) / (2 * h);
        }
      }
      CHECK(test::relative_error(dX.template cast<double>(), want) <
            (std::is_same_v<TestType, float> ? 1e-4 : 1e-7));
    }
  }
}

TEST_CASE("W x W tiles of one packet per row transpose exactly", "[approx][simd]") {
  constexpr Index W = simd::width<float>;
  Matrix<float> A(W, W), B(W, W);
  for (Index i = 0; i < A.size(); ++i) A.data()[i] = float(i);
  simd::Tile<float> tile;
  tile.load(A.data(), W);
  tile.transpose();
  for (Index r = 0; r < W; ++r) simd::store(B.data() + r * W, tile.rows.packet[r]);
  CHECK(B == A.transpose());
}
