#include <catch2/catch.hpp>

#include "polygrad/attention/naive.hpp"
#include "support/problems.hpp"

using namespace polygrad;

TEST_CASE("naive attention rows are convex combinations of value rows", "[attention][naive]") {
  const Index n = 9, dh = 4;
  const test::AttentionProblem p = test::random_attention_problem(n, 1, dh, true, 0.5, 1);
  const Matrix<double>&Q = p.Q, &K = p.K;
  const Matrix<double> P = exact::reference::attention_probabilities<double>(Q, K, 0.5, true);
  for (Index i = 0; i < n; ++i) {
    CHECK(P.row(i).sum() == Approx(1.0));
    CHECK((P.row(i).array() >= 0).all());
    CHECK(P.row(i).tail(n - i - 1).cwiseAbs().sum() == 0.0);
  }
}
