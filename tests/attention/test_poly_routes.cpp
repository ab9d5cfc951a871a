// Each polynomial route against the dense evaluation of the same approximation
// (poly_naive.hpp): this isolates the low-rank machinery from the approximation error.

#include <catch2/catch.hpp>

#include "polygrad/attention/poly.hpp"
#include "polygrad/attention/poly_naive.hpp"

using namespace polygrad;

namespace {

// Largest entry difference relative to the reference's largest entry, with a floor for
// references that are zero (dK of a single token).
double relative_difference(const Matrix<double>& a, const Matrix<double>& b) {
  const double scale = std::max(b.cwiseAbs().maxCoeff(), 1e-3);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

struct Case {
  Index n, dh, chunk;
  bool causal;
  int degree;
  PolynomialFamily family;
};

}  // namespace

TEST_CASE("polynomial routes agree with the dense evaluation of the same approximation",
          "[attention][poly]") {
  const auto cases = std::vector<Case>{
      {1, 4, 8, true, 3, PolynomialFamily::chebyshev},
      {37, 3, 8, true, 4, PolynomialFamily::chebyshev},
      {37, 3, 8, false, 4, PolynomialFamily::taylor},
      {65, 4, 16, true, 5, PolynomialFamily::taylor},
      {130, 2, 64, true, 6, PolynomialFamily::chebyshev},
      {130, 2, 64, false, 6, PolynomialFamily::chebyshev},
      {71, 8, 32, true, 4, PolynomialFamily::taylor},
      {50, 1, 7, true, 7, PolynomialFamily::chebyshev},
  };
  for (const Case& c : cases) {
    for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
      CAPTURE(c.n, c.dh, c.chunk, c.causal, c.degree, to_string(route));
      std::srand(unsigned(c.n * 131 + c.dh));
      const Matrix<double> Q = Matrix<double>::Random(c.n, c.dh);
      const Matrix<double> K = Matrix<double>::Random(c.n, c.dh).array() + 0.7;  // an offset to centre
      const Matrix<double> V = Matrix<double>::Random(c.n, c.dh);
      const Matrix<double> dO = Matrix<double>::Random(c.n, c.dh);
      const double scale = 0.8;
      AttentionShape shape{1, c.causal, scale, 0.0};
      PolyOptions options;
      options.route = route;
      options.degree = c.degree;
      options.family = c.family;
      options.chunk = c.chunk;
      const PolyApproximation a = make_poly_approximation(Q, K, shape, options);

      const Matrix<double> Qh = detail::scaled_queries(Q, a), Kh = detail::scaled_keys(K, a);
      Matrix<double> O;
      poly::ForwardSaved<double> saved;
      poly::forward(a, Qh, Kh, V, c.causal, c.chunk, O, saved);
      CHECK(relative_difference(O, poly_naive::forward(Q, K, V, a, c.causal)) < 1e-10);

      Matrix<double> dQh, dKh, dV, dQ_ref, dK_ref, dV_ref;
      if (route == PolyRoute::adjoint) {
        poly::backward_adjoint(a, Qh, Kh, V, O, saved, dO, c.causal, c.chunk, dQh, dKh, dV);
        poly_naive::backward_adjoint(Q, K, V, dO, a, c.causal, dQ_ref, dK_ref, dV_ref);
      } else {
        poly::backward_paper(a, Qh, Kh, V, O, saved, dO, c.causal, c.chunk, dQh, dKh, dV);
        poly_naive::backward_paper(Q, K, V, dO, a, c.causal, scale, dQ_ref, dK_ref, dV_ref);
      }
      CHECK(relative_difference(dQh * a.q_scale, dQ_ref) < 1e-10);
      CHECK(relative_difference(dKh * a.k_scale, dK_ref) < 1e-10);
      CHECK(relative_difference(dV, dV_ref) < 1e-10);
    }
  }
}
