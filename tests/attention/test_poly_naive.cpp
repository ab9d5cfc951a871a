// The dense reference of the polynomial approximation (poly_naive.hpp) checked on its own: its
// adjoint gradient against central finite differences of its forward, with the approximation
// (bound, polynomial, centre, scalings) held fixed as the routes assume. The fast routes are
// compared with this reference in test_poly_routes.cpp, so this closes the chain to calculus.

#include <catch2/catch.hpp>

#include <random>

#include "polygrad/attention/poly_naive.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("poly_naive's adjoint gradient is the derivative of its forward pass",
          "[attention][poly]") {
  for (const bool causal : {false, true}) {
    for (const PolynomialFamily family : {PolynomialFamily::chebyshev, PolynomialFamily::taylor}) {
      CAPTURE(causal, to_string(family));
      std::mt19937_64 rng(causal ? 3 : 4);
      const Index n = 9, d = 3;
      Matrix<double> Q = test::random_matrix(n, d, rng), K = test::random_matrix(n, d, rng, 0.8);
      K.array() += 0.4;  // an offset, so that the key centre matters
      Matrix<double> V = test::random_matrix(n, d, rng);
      const Matrix<double> W = test::random_matrix(n, d, rng);  // dL/dO of L = sum(W o O)
      PolyOptions options;
      options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
      options.family = family;
      options.degree = 4;
      const PolyApproximation a =
          make_poly_approximation(Q, K, AttentionShape{1, causal, 0.9, 0.0}, options);
      REQUIRE(a.key_centre.size() == d);

      Matrix<double> dQ, dK, dV;
      poly::reference::backward_adjoint(Q, K, V, W, a, causal, dQ, dK, dV);
      auto loss = [&] { return test::probe_loss(poly::reference::forward(Q, K, V, a, causal), W); };
      const Vector<double> nQ = test::numeric_gradient(loss, Q.data(), Q.size());
      const Vector<double> nK = test::numeric_gradient(loss, K.data(), K.size());
      const Vector<double> nV = test::numeric_gradient(loss, V.data(), V.size());
      CHECK(test::relative_error(Eigen::Map<const Vector<double>>(dQ.data(), dQ.size()), nQ) <
            1e-7);
      CHECK(test::relative_error(Eigen::Map<const Vector<double>>(dK.data(), dK.size()), nK) <
            1e-7);
      CHECK(test::relative_error(Eigen::Map<const Vector<double>>(dV.data(), dV.size()), nV) <
            1e-7);
    }
  }
}
