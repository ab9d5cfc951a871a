// PolyAttention against exact attention: the approximation error, its certificate, the audit,
// causality with a fixed plan, the planner's choices and errors, and methods by name.

#include <catch2/catch.hpp>

#include <cstdint>
#include <tuple>
#include <vector>

#include "polygrad/attention/factory.hpp"
#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/poly.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

using Problem = test::AttentionProblem;

/// Random inputs with every head's queries and keys of unit norm and scale tau, as QK
/// normalisation leaves them.
Problem qk_normalised_problem(Index n, Index heads, Index dh, bool causal, double tau,
                              std::uint64_t seed) {
  return test::random_attention_problem(n, heads, dh, causal, tau, seed).unit_qk();
}

struct Gradients {
  Matrix<double> O, dQ, dK, dV;
};

Gradients run(const AttentionMethod<double>& method, const Problem& p) {
  Gradients g;
  auto context = method.forward(p.Q, p.K, p.V, p.shape, g.O);
  context->backward(p.Q, p.K, p.V, g.O, p.dO, g.dQ, g.dK, g.dV);
  return g;
}

PolyAttention<double> poly_of_degree(int degree, PolyRoute route, Index chunk = 64) {
  PolyOptions options;
  options.degree = degree;
  options.route = route;
  options.chunk = chunk;
  return PolyAttention<double>(options);
}

}  // namespace

TEST_CASE("the polynomial error falls with the degree, and is below 1e-3 at g = 7",
          "[attention][poly]") {
  const bool causal = GENERATE(false, true);
  const Problem p = qk_normalised_problem(300, 2, 8, causal, 2.0, 11);
  const Gradients exact = run(NaiveAttention<double>(), p);
  // g starts at 3: at R = 2 the degree-2 Chebyshev polynomial dips below zero (see the
  // "impossible requests" case).
  for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
    std::vector<double> worst;
    for (int g = 3; g <= 10; ++g) {
      const Gradients approx = run(poly_of_degree(g, route), p);
      worst.push_back(std::max(
          {test::relative_error(approx.O, exact.O), test::relative_error(approx.dQ, exact.dQ),
           test::relative_error(approx.dK, exact.dK), test::relative_error(approx.dV, exact.dV)}));
    }
    CAPTURE(causal, to_string(route), worst);
    CHECK(worst[7 - 3] < 1e-3);
    for (std::size_t i = 2; i < worst.size(); ++i) CHECK(worst[i] < worst[i - 2]);
    CHECK(worst.back() < 1e-5);
  }
}

TEST_CASE("the observed forward error never exceeds the certified bound", "[attention][poly]") {
  const bool causal = GENERATE(false, true);
  for (int g : {3, 5, 7}) {
    const Problem p = qk_normalised_problem(200, 1, 4, causal, 2.5, 5 + g);
    const Gradients exact = run(NaiveAttention<double>(), p);
    Matrix<double> O;
    auto context = poly_of_degree(g, PolyRoute::adjoint).forward(p.Q, p.K, p.V, p.shape, O);
    const HeadPlan plan = context->plans().at(0);
    REQUIRE(plan.certified);
    const double vmax = p.V.rowwise().norm().maxCoeff();
    const double observed = (O - exact.O).rowwise().norm().maxCoeff();
    CAPTURE(g, plan.exp_error, plan.output_error, observed);
    CHECK(observed <= plan.output_error * vmax);
  }
}

TEST_CASE("the automatic bound certifies every score and centres the keys", "[attention][poly]") {
  Problem p = test::random_attention_problem(150, 1, 4, false, 0.5, 3);
  p.K.array() += 3.0;  // far off centre
  const Matrix<double>&Q = p.Q, &K = p.K, &V = p.V;
  PolyOptions options;
  options.epsilon = 1e-6;
  Matrix<double> O;
  auto context = PolyAttention<double>(options).forward(Q, K, V, p.shape, O);
  const HeadPlan plan = context->plans().at(0);
  CHECK(plan.certified);
  CHECK(plan.keys_centred);
  CHECK(plan.bound_source == BoundSource::cauchy_schwarz);
  CHECK(plan.exp_error <= 1e-6);
  // Centring removes the common offset 3: the bound is far below 0.5 |q|max |k|max.
  CHECK(plan.bound < 0.5 * Q.rowwise().norm().maxCoeff() * K.rowwise().norm().maxCoeff() / 2);
  const Gradients exact = run(NaiveAttention<double>(), p);
  CHECK(test::relative_error(O, exact.O) < 1e-5);
}

TEST_CASE("the audit's estimate agrees with the full measured error within a factor of 3",
          "[attention][poly]") {
  for (unsigned seed : {1u, 2u, 3u}) {
    Problem p = qk_normalised_problem(1024, 2, 4, seed != 2, 3.0, seed);
    const Gradients exact = run(NaiveAttention<double>(), p);
    PolyOptions options;
    options.degree = 4;
    options.audit_rows = 32;
    options.audit_seed = seed;
    Matrix<double> O;
    auto context = PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O);
    const auto plans = context->plans();
    for (Index h = 0; h < 2; ++h) {
      const double full =
          test::relative_error(O.middleCols(h * 4, 4), exact.O.middleCols(h * 4, 4));
      CAPTURE(seed, h, full, plans[h].audit_error);
      CHECK(plans[h].audit_rows == 32);
      CHECK(plans[h].audit_error < 3 * full);
      CHECK(plans[h].audit_error > full / 3);
    }
  }
}

TEST_CASE("with a fixed plan the polynomial attention is exactly causal", "[attention][poly]") {
  const Index n = 97, i = 40;
  for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
    const Problem p = qk_normalised_problem(n, 2, 4, true, 2.0, 7);
    // Later rows redrawn: another problem's, of the same kind.
    const Problem other = qk_normalised_problem(n, 2, 4, true, 2.0, 8);
    Problem changed = p;
    const Index later = n - i - 1;
    changed.Q.bottomRows(later) = other.Q.bottomRows(later);
    changed.K.bottomRows(later) = other.K.bottomRows(later);
    changed.V.bottomRows(later) = other.V.bottomRows(later);
    changed.dO.bottomRows(later) = other.dO.bottomRows(later);
    const auto method = poly_of_degree(6, route, 16);
    const Gradients a = run(method, p), b = run(method, changed);
    CAPTURE(to_string(route));
    CHECK((a.O.topRows(i + 1) - b.O.topRows(i + 1)).cwiseAbs().maxCoeff() == 0.0);
    CHECK((a.dQ.topRows(i + 1) - b.dQ.topRows(i + 1)).cwiseAbs().maxCoeff() == 0.0);
    // A key row j <= i receives gradient from every later query, so dK, dV rows are not
    // causal in that direction; changing EARLIER rows must leave them... (not true either):
    // key j's gradient depends on queries i >= j only, which is the statement checked here.
    Problem early = p;
    early.Q.topRows(i) = other.Q.topRows(i);
    early.dO.topRows(i) = other.dO.topRows(i);
    const Gradients c = run(method, early);
    CHECK((a.dK.bottomRows(n - i) - c.dK.bottomRows(n - i)).cwiseAbs().maxCoeff() == 0.0);
    CHECK((a.dV.bottomRows(n - i) - c.dV.bottomRows(n - i)).cwiseAbs().maxCoeff() == 0.0);
  }
}

TEST_CASE("auto chooses the cheaper path per head by predicted cost", "[attention][poly][plan]") {
  PolyOptions options;
  options.epsilon = 1e-3;
  const AutoAttention<double> automatic(options);
  for (Index n : {Index(64), Index(4096)}) {
    const Problem p = qk_normalised_problem(n, 1, 2, true, 1.0, 9);
    Matrix<double> O;
    auto context = automatic.forward(p.Q, p.K, p.V, p.shape, O);
    const HeadPlan plan = context->plans().at(0);
    CAPTURE(n, plan.describe());
    CHECK(plan.exact_cost > 0);
    CHECK(plan.poly_cost > 0);
    CHECK(plan.method == (plan.poly_cost < plan.exact_cost ? HeadMethod::poly : HeadMethod::exact));
    CHECK(plan.method == (n == 64 ? HeadMethod::exact : HeadMethod::poly));
  }
}

TEST_CASE("auto runs each head with the method its plan chose, the two methods in one pass",
          "[attention][poly][plan]") {
  // Bound from the data, head by head: heads 0 and 2 have small queries and keys (R near 0: a
  // low degree, cheaper than exact), head 1 large ones (no degree up to the limit certifies
  // eps, so exact). Each head's result is that of its own method on its own columns.
  const Index n = 1024, dh = 2;
  Problem p = test::random_attention_problem(n, 3, dh, false, 1.0, 21);
  const double head_scale[] = {0.1, 8.0, 0.1};
  for (Index h = 0; h < 3; ++h) {
    p.Q.middleCols(h * dh, dh) *= head_scale[h];
    p.K.middleCols(h * dh, dh) *= head_scale[h];
  }
  PolyOptions options;
  options.epsilon = 1e-3;
  const Gradients automatic = run(AutoAttention<double>(options), p);
  Matrix<double> O;
  const auto plans = AutoAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O)->plans();
  REQUIRE(plans.size() == 3);
  CHECK(plans[0].method == HeadMethod::poly);
  CHECK(plans[1].method == HeadMethod::exact);
  CHECK(plans[2].method == HeadMethod::poly);
  CHECK(plans[1].exact_cost > 0);

  // Head 1 alone, exactly; heads 0 and 2 together, polynomially.
  const auto columns = [&](const Matrix<double>& X, std::vector<Index> heads) {
    Matrix<double> out(X.rows(), Index(heads.size()) * dh);
    for (std::size_t i = 0; i < heads.size(); ++i)
      out.middleCols(Index(i) * dh, dh) = X.middleCols(heads[i] * dh, dh);
    return out;
  };
  const auto part = [&](std::vector<Index> heads) {
    Problem q{columns(p.Q, heads), columns(p.K, heads), columns(p.V, heads), columns(p.dO, heads),
              p.shape};
    q.shape.heads = Index(heads.size());
    return q;
  };
  const Gradients exact = run(ExactAttention<double>(), part({1}));
  const Gradients poly = run(PolyAttention<double>(options), part({0, 2}));
  for (const auto& [mine, theirs, heads] :
       {std::tuple{&automatic, &exact, std::vector<Index>{1}},
        std::tuple{&automatic, &poly, std::vector<Index>{0, 2}}}) {
    CHECK(test::relative_error(columns(mine->O, heads), theirs->O) <= 1e-13);
    CHECK(test::relative_error(columns(mine->dQ, heads), theirs->dQ) <= 1e-13);
    CHECK(test::relative_error(columns(mine->dK, heads), theirs->dK) <= 1e-13);
    CHECK(test::relative_error(columns(mine->dV, heads), theirs->dV) <= 1e-13);
  }
}

TEST_CASE("impossible requests are errors that say what to change", "[attention][poly][plan]") {
  const Problem p = qk_normalised_problem(16, 1, 8, false, 2.0, 1);
  Matrix<double> O;
  SECTION("a rank over the memory budget") {
    PolyOptions options;
    options.degree = 12;
    options.memory_budget = 1 << 20;
    CHECK_THROWS_WITH(
        PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O),
        Catch::Matchers::Contains("budget") && Catch::Matchers::Contains("lower the degree"));
    CHECK_THROWS_AS(PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O), PlanError);
  }
  SECTION("an epsilon no degree up to the limit can certify") {
    PolyOptions options;
    options.epsilon = 1e-3;
    options.max_degree = 3;
    CHECK_THROWS_AS(PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O), PlanError);
    CHECK_THROWS_WITH(PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O),
                      Catch::Matchers::Contains("(PolyOptions::epsilon)") &&
                          Catch::Matchers::Contains("(PolyOptions::max_degree)"));
  }
  SECTION("a degree whose polynomial is negative on the scores") {
    // Chebyshev of degree 2 for exp(2 t) dips below zero: put every score where it is lowest.
    const ExpPolynomial quadratic = fit_exp(PolynomialFamily::chebyshev, 2.0, 2);
    double t_min = -1;
    for (double t = -1; t <= 1; t += 1e-3)
      if (quadratic(t) < quadratic(t_min)) t_min = t;
    REQUIRE(quadratic(t_min) < 0);
    Problem opposite = p;
    opposite.Q.setZero();
    opposite.K.setZero();
    opposite.Q.col(0).setOnes();
    opposite.K.col(0).setConstant(t_min);
    opposite.K.col(1).setConstant(std::sqrt(1 - t_min * t_min));
    CHECK_THROWS_WITH(poly_of_degree(2, PolyRoute::adjoint)
                          .forward(opposite.Q, opposite.K, opposite.V, opposite.shape, O),
                      Catch::Matchers::Contains("raise the degree"));
  }
  SECTION("non-finite input") {
    Problem bad = p;
    bad.K(3, 2) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(PolyAttention<double>().forward(bad.Q, bad.K, bad.V, bad.shape, O),
                    NumericError);
  }
  SECTION("a caller bound the data violates is reported as not certified") {
    PolyOptions options;
    options.bound = 0.5;  // the scores reach 2
    options.degree = 6;
    Problem q = p;
    q.shape.score_bound = 0;
    try {
      auto context = PolyAttention<double>(options).forward(q.Q, q.K, q.V, q.shape, O);
      CHECK_FALSE(context->plans().at(0).certified);
      CHECK_THAT(context->describe(), Catch::Matchers::Contains("NOT certified"));
    } catch (const NumericError& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains("not within the given bound"));
    }
  }
}

TEMPLATE_TEST_CASE("float polynomial attention agrees with double", "[attention][poly]", float) {
  const Problem p = qk_normalised_problem(257, 2, 8, true, 2.0, 4);
  for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
    PolyOptions options;
    options.degree = 7;
    options.route = route;
    const Gradients d = run(PolyAttention<double>(options), p);
    Matrix<float> O, dQ, dK, dV;
    const Matrix<float> Q = p.Q.cast<float>(), K = p.K.cast<float>(), V = p.V.cast<float>();
    auto context = PolyAttention<float>(options).forward(Q, K, V, p.shape, O);
    context->backward(Q, K, V, O, p.dO.cast<float>(), dQ, dK, dV);
    CAPTURE(to_string(route));
    CHECK(test::relative_error(O.cast<double>(), d.O) < 1e-4);
    CHECK(test::relative_error(dQ.cast<double>(), d.dQ) < 1e-4);
    CHECK(test::relative_error(dK.cast<double>(), d.dK) < 1e-4);
    CHECK(test::relative_error(dV.cast<double>(), d.dV) < 1e-4);
  }
}

TEST_CASE("causal attention with R from the data is refused unless the caller accepts it",
          "[attention][poly][plan]") {
  Problem p = qk_normalised_problem(40, 2, 4, true, 2.0, 3);
  p.shape.score_bound = 0;  // no QK normalisation: R would come from the whole sequence
  Matrix<double> O;
  SECTION("refused by default, with a message that says what to use instead") {
    CHECK_THROWS_AS(PolyAttention<double>().forward(p.Q, p.K, p.V, p.shape, O), PlanError);
    CHECK_THROWS_WITH(PolyAttention<double>().forward(p.Q, p.K, p.V, p.shape, O),
                      Catch::Matchers::Contains("QK normalisation") &&
                          Catch::Matchers::Contains("fixed bound") &&
                          Catch::Matchers::Contains("allow_causal_data_bound"));
  }
  SECTION("accepted on request, and then reported as not exactly causal") {
    PolyOptions options;
    options.allow_causal_data_bound = true;
    auto context = PolyAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O);
    for (const HeadPlan& plan : context->plans()) CHECK_FALSE(plan.exactly_causal);
    CHECK_THAT(context->describe(), Catch::Matchers::Contains("NOT exactly causal"));
  }
  SECTION("a fixed bound or QK normalisation needs no opt-in and is exactly causal") {
    PolyOptions fixed;
    fixed.bound = 2.0;
    auto context = PolyAttention<double>(fixed).forward(p.Q, p.K, p.V, p.shape, O);
    CHECK(context->plans().at(0).exactly_causal);
    p.shape.score_bound = 2.0;
    context = PolyAttention<double>().forward(p.Q, p.K, p.V, p.shape, O);
    CHECK(context->plans().at(0).exactly_causal);
  }
  SECTION("without the mask R from the data changes nothing about causality") {
    p.shape.causal = false;
    auto context = PolyAttention<double>().forward(p.Q, p.K, p.V, p.shape, O);
    CHECK(context->plans().at(0).exactly_causal);
  }
}

TEST_CASE("refusals name the options in the caller's terms", "[attention][poly][plan]") {
  const Problem p = qk_normalised_problem(16, 1, 8, false, 2.0, 1);
  Matrix<double> O;
  PolyOptions options;
  options.names.degree = "--degree";
  options.names.epsilon = "--epsilon";
  options.names.bound = "--bound";
  options.names.qk_norm = "--qk-norm";
  options.names.allow_causal_data_bound = "--allow-causal-data-bound";
  options.names.max_degree = "";  // options this caller cannot set: their remedies are left out
  options.names.memory_budget = "";
  const auto message = [&](const PolyOptions& o, const Problem& problem) {
    try {
      PolyAttention<double>(o).forward(problem.Q, problem.K, problem.V, problem.shape, O);
    } catch (const PlanError& e) {
      return std::string(e.what());
    }
    FAIL("no PlanError");
    return std::string();
  };
  SECTION("over the memory budget") {
    PolyOptions o = options;
    o.degree = 12;
    o.memory_budget = 1 << 20;
    const std::string m = message(o, p);
    CHECK_THAT(m, Catch::Matchers::Contains("lower the degree (--degree)") &&
                      Catch::Matchers::Contains("raise the error target (--epsilon)"));
    CHECK_THAT(m, !Catch::Matchers::Contains("memory budget") && !Catch::Matchers::Contains("::"));
  }
  SECTION("no degree up to the limit certifies the target") {
    PolyOptions o = options;
    o.max_degree = 3;
    const std::string m = message(o, p);
    CHECK_THAT(m, Catch::Matchers::Contains("a larger error target (--epsilon)"));
    CHECK_THAT(m, !Catch::Matchers::Contains("maximum degree") && !Catch::Matchers::Contains("::"));
  }
  SECTION("causal with the bound from the data") {
    Problem causal = qk_normalised_problem(40, 2, 4, true, 2.0, 3);
    causal.shape.score_bound = 0;
    const std::string m = message(options, causal);
    CHECK_THAT(m, Catch::Matchers::Contains(
                      "use QK normalisation (--qk-norm) or a fixed bound (--bound), or set "
                      "--allow-causal-data-bound"));
  }
}

TEST_CASE("make_attention builds each method by name and refuses other names",
          "[attention][poly][plan]") {
  PolyOptions options;
  options.degree = 3;
  CHECK(make_attention<double>("exact")->name() == "exact");
  const auto poly = make_attention<double>("poly", options);
  CHECK(poly->name() == "poly");
  CHECK(dynamic_cast<const PolyAttention<double>&>(*poly).options().degree == 3);
  CHECK(make_attention<float>("auto", options)->name() == "auto");
  CHECK_THROWS_AS(make_attention<double>("Exact"), PlanError);
  CHECK_THROWS_WITH(make_attention<double>("flash"),
                    Catch::Matchers::Contains("'flash'") && Catch::Matchers::Contains("\"auto\""));
  CHECK(parse_route("paper") == PolyRoute::paper);
  CHECK_THROWS_WITH(parse_route("adjoin"), Catch::Matchers::Contains("\"adjoint\" or \"paper\""));
}
