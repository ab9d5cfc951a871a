// Rotary position embeddings (layers/rotary.hpp) and the positions of packed and split rows.

#include <catch2/catch.hpp>

#include <cmath>

#include "polygrad/layers/rotary.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

/// The rotate-half form written out from its definition, in double: y = x cos + rotate_half(x)
/// sin, with cos and sin of the angles p f repeated over both halves of the head and
/// rotate_half(x) = [-x_second, x_first].
Matrix<double> rotate_half_reference(const Matrix<double>& x, Index heads, Index d, double theta,
                                     const std::vector<Index>& positions) {
  Matrix<double> y(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index h = 0; h < heads; ++h) {
      for (Index j = 0; j < d; ++j) {
        const Index pair = j % (d / 2);
        const double angle =
            double(positions[std::size_t(i)]) / std::pow(theta, 2.0 * double(pair) / double(d));
        const double partner = j < d / 2 ? -x(i, h * d + j + d / 2) : x(i, h * d + j - d / 2);
        y(i, h * d + j) = x(i, h * d + j) * std::cos(angle) + partner * std::sin(angle);
      }
    }
  }
  return y;
}

}  // namespace

TEST_CASE("rotary embeddings turn each half-head pair by position times frequency",
          "[layers][rotary]") {
  std::mt19937_64 rng(61);
  for (const auto& [heads, d, theta] :
       {std::tuple<Index, Index, double>{1, 2, 10000.0}, {3, 8, 10000.0}, {2, 16, 1e6}}) {
    CAPTURE(heads, d, theta);
    const RotaryEmbedding rope(d, theta);
    const Index n = 9;
    const std::vector<Index> positions = {0, 1, 2, 5, 17, 100, 4096, 65535, 1 << 20};
    const Matrix<double> x = test::random_matrix(n, heads * d, rng);
    Matrix<double> y = x;
    rope.rotate(y, heads, positions);
    const Matrix<double> want = rotate_half_reference(x, heads, d, theta, positions);
    // The two form f_j differently (theta^(-2j/d) and 1 / theta^(2j/d)): an angle of p f_j at
    // p = 2^20 then differs by up to about p ulp(f_j) ~ 1e-10.
    CHECK((y - want).cwiseAbs().maxCoeff() < 1e-9);
    CHECK((y.topRows(5) - want.topRows(5)).cwiseAbs().maxCoeff() < 1e-14);
    CHECK((y.row(0) - x.row(0)).isZero(0));  // position 0 is not turned
    // Each head keeps its norm; turning back restores x.
    for (Index i = 0; i < n; ++i)
      for (Index h = 0; h < heads; ++h)
        CHECK(y.row(i).segment(h * d, d).norm() ==
              Approx(x.row(i).segment(h * d, d).norm()).epsilon(1e-14));
    rope.rotate_back(y, heads, positions);
    CHECK((y - x).cwiseAbs().maxCoeff() < 1e-13);
  }
}

TEST_CASE("rotated scores depend on the distance between positions only", "[layers][rotary]") {
  std::mt19937_64 rng(62);
  const Index d = 8;
  const RotaryEmbedding rope(d);
  const Matrix<double> q = test::random_matrix(1, d, rng), k = test::random_matrix(1, d, rng);
  auto score = [&](Index p, Index s) {
    Matrix<double> qp = q, ks = k;
    rope.rotate(qp, 1, {p});
    rope.rotate(ks, 1, {s});
    return qp.row(0).dot(ks.row(0));
  };
  for (const auto& [p, s] : {std::pair<Index, Index>{5, 2}, {40, 0}, {3, 9}}) {
    CAPTURE(p, s);
    CHECK(score(p, s) == Approx(score(p + 1000, s + 1000)).epsilon(1e-11));
  }
  CHECK(std::abs(score(5, 2) - score(6, 2)) > 1e-3);  // and it does depend on the distance
}

TEST_CASE("rotate_back is the transpose of rotate: the gradient of any linear probe",
          "[layers][rotary]") {
  std::mt19937_64 rng(63);
  const Index heads = 2, d = 6, n = 4;
  const RotaryEmbedding rope(d, 500.0);
  const std::vector<Index> positions = {3, 0, 11, 7};
  const Matrix<double> x = test::random_matrix(n, heads * d, rng);
  const Matrix<double> W = test::random_matrix(n, heads * d, rng);  // L = sum(W o rotate(x))
  Matrix<double> analytic = W;
  rope.rotate_back(analytic, heads, positions);
  Matrix<double> numeric(n, heads * d);
  const double h = 1e-6;
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < heads * d; ++j) {
      Matrix<double> up = x, down = x;
      up(i, j) += h;
      down(i, j) -= h;
      rope.rotate(up, heads, positions);
      rope.rotate(down, heads, positions);
      numeric(i, j) = ((up - down).array() * W.array()).sum() / (2 * h);
    }
  }
  CHECK((numeric - analytic).cwiseAbs().maxCoeff() < 1e-8);
}

TEST_CASE("rotary embeddings in float follow double", "[layers][rotary]") {
  std::mt19937_64 rng(64);
  const Index heads = 4, d = 16, n = 50;
  const RotaryEmbedding rope(d);
  const std::vector<Index> positions = sequence_positions(n, {}, 30000);
  const Matrix<double> x = test::random_matrix(n, heads * d, rng);
  Matrix<double> yd = x;
  Matrix<float> yf = x.cast<float>();
  rope.rotate(yd, heads, positions);
  rope.rotate(yf, heads, positions);
  CHECK((yf.cast<double>() - yd).cwiseAbs().maxCoeff() < 1e-5);
}

TEST_CASE("positions restart with every packed sequence and follow a shard's first row",
          "[layers][rotary]") {
  CHECK(sequence_positions(4) == std::vector<Index>{0, 1, 2, 3});
  CHECK(sequence_positions(3, {}, 10) == std::vector<Index>{10, 11, 12});
  CHECK(sequence_positions(6, {0, 2, 3, 6}) == std::vector<Index>{0, 1, 0, 0, 1, 2});
  // A shard that starts inside its first sequence, at that sequence's position 5.
  CHECK(sequence_positions(5, {0, 2, 5}, 5) == std::vector<Index>{5, 6, 0, 1, 2});
  CHECK_THROWS_AS(sequence_positions(5, {0, 2, 4}), ShapeError);
  CHECK_THROWS_AS(sequence_positions(5, {}, -1), ShapeError);
}

TEST_CASE("rotary embeddings reject odd heads, wrong widths and bad positions",
          "[layers][rotary]") {
  CHECK_THROWS_AS(RotaryEmbedding(7), ShapeError);
  CHECK_THROWS_AS(RotaryEmbedding(0), ShapeError);
  CHECK_THROWS_AS(RotaryEmbedding(8, 0.0), Error);
  CHECK_THROWS_AS(RotaryEmbedding(8, NAN), Error);
  const RotaryEmbedding rope(4);
  Matrix<double> x = Matrix<double>::Ones(2, 8);
  CHECK_THROWS_AS(rope.rotate(x, 3, {0, 1}), ShapeError);   // 8 columns are not 3 heads of 4
  CHECK_THROWS_AS(rope.rotate(x, 2, {0}), ShapeError);      // one position for two rows
  CHECK_THROWS_AS(rope.rotate(x, 2, {0, -1}), ShapeError);  // a negative position
  CHECK(x.isApproxToConstant(1.0));                         // the first row was not turned yet
}
