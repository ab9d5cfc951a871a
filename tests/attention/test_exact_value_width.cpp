// Exact attention's tile kernels with values of another width than the queries and keys
// (d_qk != d_v), against the dense reference: the general kernels run them.

#include <catch2/catch.hpp>

#include "polygrad/attention/exact_kernels.hpp"
#include "polygrad/attention/naive.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

using namespace polygrad;
using namespace polygrad::exact::detail;

namespace {

template <class T>
void check_value_width(Index n, Index dqk, Index dv, bool causal, exact::Tiles tiles, Index parts,
                       double tolerance) {
  CAPTURE(n, dqk, dv, causal, tiles.query, tiles.key, parts);
  std::mt19937_64 rng(std::uint64_t(n * 7 + dqk * 3 + dv));
  const Matrix<double> Q = test::random_matrix(n, dqk, rng), K = test::random_matrix(n, dqk, rng);
  const Matrix<double> V = test::random_matrix(n, dv, rng), dO = test::random_matrix(n, dv, rng);
  const double scale = 0.6;
  const Matrix<double> O_want = exact::reference::attention_forward(Q, K, V, scale, causal);
  Matrix<double> dQ_want, dK_want, dV_want;
  exact::reference::attention_backward(Q, K, V, dO, scale, causal, dQ_want, dK_want, dV_want);

  const Matrix<T> Qt = Q.cast<T>(), Kt = K.cast<T>(), Vt = V.cast<T>(), dOt = dO.cast<T>();
  const Pass<T> pass{T(scale), causal, tiles};
  Matrix<T> O(n, dv);
  Vector<T> lse(n);
  for (Index part = 0; part < parts; ++part)
    forward_blocks<T>(Qt, Kt, Vt, pass, {part, parts}, O, lse);
  CHECK(test::relative_error(O.template cast<double>(), O_want) < tolerance);

  const Vector<T> delta = O.cwiseProduct(dOt).rowwise().sum();
  Matrix<T> dQ = Matrix<T>::Zero(n, dqk), dK(n, dqk), dV(n, dv);
  for (Index part = 0; part < parts; ++part)
    backward_blocks<T>(Qt, Kt, Vt, dOt, lse, delta, pass, {part, parts}, {dQ, dK, dV});
  dQ *= T(scale);  // the kernels leave dQ / c (exact_kernels.hpp)
  CHECK(test::relative_error(dQ.template cast<double>(), dQ_want) < tolerance);
  CHECK(test::relative_error(dK.template cast<double>(), dK_want) < tolerance);
  CHECK(test::relative_error(dV.template cast<double>(), dV_want) < tolerance);
}

}  // namespace

TEMPLATE_TEST_CASE("exact tile kernels take values of another width than queries and keys",
                   "[exact][value_width]", float, double) {
  const double tolerance = std::is_same_v<TestType, float> ? 1e-4 : 1e-12;
  // Narrow queries and keys with wide values, and the reverse; widths with fixed-width kernels
  // on either side (8, 16, 64), partial tiles, one and two parts, causal and not.
  for (const bool causal : {true, false}) {
    check_value_width<TestType>(1, 8, 64, causal, {}, 1, tolerance);
    check_value_width<TestType>(150, 8, 64, causal, {}, 1, tolerance);
    check_value_width<TestType>(150, 16, 8, causal, {32, 16}, 2, tolerance);
    check_value_width<TestType>(97, 64, 16, causal, {64, 64}, 2, tolerance);
    check_value_width<TestType>(70, 3, 5, causal, {16, 32}, 1, tolerance);
  }
}
