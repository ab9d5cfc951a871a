#include <catch2/catch.hpp>

#include "polygrad/attention/naive.hpp"

using namespace polygrad;

TEST_CASE("naive attention rows are convex combinations of value rows", "[attention][naive]") {
  const Index n = 9, dh = 4;
  Matrix<double> Q = Matrix<double>::Random(n, dh), K = Matrix<double>::Random(n, dh);
  const Matrix<double> P = exact::reference::attention_probabilities<double>(Q, K, 0.5, true);
  for (Index i = 0; i < n; ++i) {
    CHECK(P.row(i).sum() == Approx(1.0));
    CHECK((P.row(i).array() >= 0).all());
    CHECK(P.row(i).tail(n - i - 1).cwiseAbs().sum() == 0.0);
  }
}
