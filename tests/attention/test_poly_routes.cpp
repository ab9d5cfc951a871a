// Each polynomial route against the dense evaluation of the same approximation
// (poly_naive.hpp): this isolates the low-rank machinery from the approximation error. Double
// to rounding; float to float's rounding; head sizes 12 and 16 take the kernels' paths for
// states of more than 12 columns.

#include <catch2/catch.hpp>

#include <cstdint>

#include "polygrad/attention/poly.hpp"
#include "polygrad/attention/poly_naive.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

struct Case {
  Index n, dh, chunk;
  bool causal;
  int degree;
  PolynomialFamily family;
  Index dv = 0;  ///< the values' width; 0: dh
};

using Problem = test::AttentionProblem;

/// Random rows; keys offset so that centring has work to do. With `unit` the q and k rows are
/// unit vectors and the scale is a fixed bound of 2 (as QK normalisation gives), which float
/// needs: p(t) in float has a relative floor of about 6e-8 e^(2R) (design.md section 7).
Problem make_problem(const Case& c, bool unit) {
  Problem p = test::random_attention_problem(c.n, 1, c.dh, c.causal, unit ? 2.0 : 0.8,
                                             std::uint64_t(c.n * 131 + c.dh));
  p.K.array() += 0.7;
  if (unit) p.unit_qk();
  if (c.dv > 0) {  // values (and output gradients) of their own width
    std::mt19937_64 rng(std::uint64_t(c.n * 17 + c.dv));
    p.V = test::random_matrix(c.n, c.dv, rng);
    p.dO = test::random_matrix(c.n, c.dv, rng);
  }
  return p;
}

struct Result {
  Matrix<double> O, dQ, dK, dV;
};

/// The fast route in T for an approximation made once (in double), results in double.
template <class T>
Result run_route(const PolyApproximation& a, const Problem& p, PolyRoute route, Index chunk) {
  const Matrix<T> Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>(), dO = p.dO.cast<T>();
  const Index n = Q.rows(), d = Q.cols(), dv = V.cols();
  Matrix<T> O(n, dv), dQ(n, d), dK(n, d), dV(n, dv);
  Vector<T> z(n);
  poly::forward<T>(a, Q, K, V, p.shape.causal, chunk, O, z);
  if (route == PolyRoute::adjoint) {
    poly::backward_adjoint<T>(a, Q, K, V, {O, z}, dO, p.shape.causal, chunk, {dQ, dK, dV});
  } else {
    poly::backward_paper<T>(a, Q, K, V, {O, z}, dO, p.shape.causal, chunk, {dQ, dK, dV});
  }
  return {O.template cast<double>(), dQ.template cast<double>(), dK.template cast<double>(),
          dV.template cast<double>()};
}

/// The dense reference of the same approximation, in double.
Result run_reference(const PolyApproximation& a, const Problem& p, PolyRoute route) {
  Result r;
  const bool causal = p.shape.causal;
  r.O = poly::reference::forward(p.Q, p.K, p.V, a, causal);
  if (route == PolyRoute::adjoint) {
    poly::reference::backward_adjoint(p.Q, p.K, p.V, p.dO, a, causal, r.dQ, r.dK, r.dV);
  } else {
    poly::reference::backward_paper(p.Q, p.K, p.V, p.dO, a, causal, p.shape.scale, r.dQ, r.dK,
                                    r.dV);
  }
  return r;
}

template <class T>
void check_routes(const std::vector<Case>& cases, bool unit, double tolerance,
                  const std::vector<PolyRoute>& routes = {PolyRoute::adjoint, PolyRoute::paper}) {
  for (const Case& c : cases) {
    for (PolyRoute route : routes) {
      CAPTURE(c.n, c.dh, c.dv, c.chunk, c.causal, c.degree, to_string(route));
      const Problem p = make_problem(c, unit);
      PolyOptions options;
      options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
      options.route = route;
      options.degree = c.degree;
      options.family = c.family;
      options.chunk = c.chunk;
      const PolyApproximation a = make_poly_approximation(p.Q, p.K, p.shape, options);
      const Result fast = run_route<T>(a, p, route, c.chunk);
      const Result reference = run_reference(a, p, route);
      CHECK(test::relative_error(fast.O, reference.O, 1e-3) < tolerance);
      CHECK(test::relative_error(fast.dQ, reference.dQ, 1e-3) < tolerance);
      CHECK(test::relative_error(fast.dK, reference.dK, 1e-3) < tolerance);
      CHECK(test::relative_error(fast.dV, reference.dV, 1e-3) < tolerance);
    }
  }
}

}  // namespace

TEST_CASE("polynomial routes agree with the dense evaluation of the same approximation",
          "[attention][poly]") {
  check_routes<double>({{1, 4, 8, true, 3, PolynomialFamily::chebyshev},
                        {37, 3, 8, true, 4, PolynomialFamily::chebyshev},
                        {37, 3, 8, false, 4, PolynomialFamily::taylor},
                        {65, 4, 16, true, 5, PolynomialFamily::taylor},
                        {130, 2, 64, true, 6, PolynomialFamily::chebyshev},
                        {130, 2, 64, false, 6, PolynomialFamily::chebyshev},
                        {71, 8, 32, true, 4, PolynomialFamily::taylor},
                        {50, 1, 7, true, 7, PolynomialFamily::chebyshev}},
                       false, 1e-10);
}

TEST_CASE("polynomial routes at head sizes 12 and 16 (states wider than 12 columns)",
          "[attention][poly]") {
  // Taylor of even degree stays positive on any interval, so the normalisers are positive
  // whatever R Cauchy-Schwarz gives at these sizes.
  check_routes<double>({{70, 12, 32, true, 2, PolynomialFamily::taylor},
                        {70, 12, 32, false, 4, PolynomialFamily::taylor},
                        {45, 16, 16, true, 4, PolynomialFamily::taylor},
                        {45, 16, 16, false, 2, PolynomialFamily::taylor}},
                       false, 1e-10);
}

TEST_CASE("float polynomial routes agree with the dense reference to float rounding",
          "[attention][poly]") {
  check_routes<float>({{1, 4, 8, true, 3, PolynomialFamily::chebyshev},
                       {37, 3, 8, true, 4, PolynomialFamily::chebyshev},
                       {65, 4, 16, false, 5, PolynomialFamily::taylor},
                       {100, 8, 32, true, 7, PolynomialFamily::chebyshev},
                       {100, 8, 64, false, 7, PolynomialFamily::chebyshev},
                       {70, 12, 32, true, 4, PolynomialFamily::chebyshev},
                       {45, 16, 16, false, 4, PolynomialFamily::chebyshev}},
                      true, 1e-4);
}

TEST_CASE("the adjoint route takes values of another width than the queries and keys",
          "[attention][poly]") {
  // Narrow queries and keys with wide values (the rank depends on the former only), and the
  // reverse; value widths above 11 take the stored-gradient path of the state products.
  const std::vector<Case> cases = {{70, 4, 32, true, 5, PolynomialFamily::chebyshev, 24},
                                   {70, 4, 16, false, 5, PolynomialFamily::chebyshev, 24},
                                   {45, 8, 16, true, 4, PolynomialFamily::taylor, 3},
                                   {33, 2, 8, true, 6, PolynomialFamily::chebyshev, 64}};
  check_routes<double>(cases, false, 1e-10, {PolyRoute::adjoint});
  check_routes<float>(cases, true, 1e-4, {PolyRoute::adjoint});
}

TEST_CASE("the paper route refuses values of another width, naming the route that takes them",
          "[attention][poly]") {
  const Problem p = make_problem({20, 4, 8, true, 3, PolynomialFamily::chebyshev, 6}, false);
  PolyOptions options;
  options.allow_causal_data_bound = true;
  options.route = PolyRoute::paper;
  options.degree = 3;
  const PolyApproximation a = make_poly_approximation(p.Q, p.K, p.shape, options);
  Matrix<double> O(20, 6), dQ(20, 4), dK(20, 4), dV(20, 6);
  Vector<double> z(20);
  poly::forward<double>(a, p.Q, p.K, p.V, true, 8, O, z);
  CHECK_THROWS_WITH(
      poly::backward_paper<double>(a, p.Q, p.K, p.V, {O, z}, p.dO, true, 8, {dQ, dK, dV}),
      Catch::Contains("route adjoint"));
}
