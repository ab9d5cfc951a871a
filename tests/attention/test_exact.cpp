// The tiled exact attention (attention/exact.hpp) against the dense reference (naive.hpp): forward,
// lse and every gradient, over awkward lengths and tile shapes, plus causality and errors.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/naive.hpp"
#include "support/compare.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

/// Dense log-sum-exp per row of c Q K^T over the visible keys.
Vector<double> dense_lse(const Matrix<double>& Q, const Matrix<double>& K, double scale,
                         bool causal) {
  const Matrix<double> S = scale * Q * K.transpose();  // (n, n)
  Vector<double> lse(S.rows());
  for (Index i = 0; i < S.rows(); ++i) {
    const auto row = S.row(i).head(causal ? i + 1 : S.cols());
    const double m = row.maxCoeff();
    lse[i] = m + std::log((row.array() - m).exp().sum());
  }
  return lse;
}

/// Random inputs of one head, reproducible per (n, d, seed); queries and keys in [-1.5, 1.5].
struct HeadData {
  Matrix<double> Q, K, V, dO;
  HeadData(Index n, Index d, std::uint64_t seed) {
    test::AttentionProblem p = test::random_attention_problem(n, 1, d, false, 1.0, seed);
    Q = 1.5 * p.Q;
    K = 1.5 * p.K;
    V = p.V;
    dO = p.dO;
  }
};

struct HeadResult {
  Matrix<double> O, dQ, dK, dV;
  Vector<double> lse;
};

template <class T>
HeadResult run_exact(const HeadData& in, double scale, bool causal, exact::Tiles tiles) {
  const Matrix<T> Q = in.Q.cast<T>(), K = in.K.cast<T>(), V = in.V.cast<T>(), dO = in.dO.cast<T>();
  Matrix<T> O, dQ, dK, dV;
  Vector<T> lse;
  exact::forward<T>(Q, K, V, T(scale), causal, O, lse, tiles);
  exact::backward<T>(Q, K, V, O, lse, dO, T(scale), causal, dQ, dK, dV, tiles);
  return {O.template cast<double>(), dQ.template cast<double>(), dK.template cast<double>(),
          dV.template cast<double>(), lse.template cast<double>()};
}

/// The scale on which dQ and dK are compared: those of a one-token sequence are zero (dS =
/// P (dP - delta) with P = 1 and dP = delta), and a kernel that forms dP and delta in different
/// orders leaves rounding noise there, compared on the scale of dO; every longer sequence as a
/// plain relative error.
double gradient_floor(const HeadData& in) { return in.Q.rows() == 1 ? in.dO.norm() : 0.0; }

const std::vector<exact::Tiles> tile_shapes = {{64, 64}, {16, 8}, {8, 16}, {5, 5}};

}  // namespace

TEST_CASE("exact kernels match the naive reference in double", "[attention][exact]") {
  for (const bool causal : {false, true}) {
    for (const Index n : {1, 7, 63, 65, 130, 257}) {
      for (const Index d : {1, 8, 16}) {
        const HeadData in(n, d, std::uint64_t(1000 + 10 * n + d));
        const double scale = 1.0 / std::sqrt(double(d));
        const Matrix<double> O_ref =
            exact::reference::attention_forward<double>(in.Q, in.K, in.V, scale, causal);
        Matrix<double> dQ_ref, dK_ref, dV_ref;
        exact::reference::attention_backward<double>(in.Q, in.K, in.V, in.dO, scale, causal, dQ_ref,
                                                     dK_ref, dV_ref);
        const Vector<double> lse_ref = dense_lse(in.Q, in.K, scale, causal);
        for (const exact::Tiles& tiles : tile_shapes) {
          INFO("causal " << causal << ", n " << n << ", d_h " << d << ", tiles " << tiles.query
                         << "x" << tiles.key);
          const HeadResult r = run_exact<double>(in, scale, causal, tiles);
          CHECK(test::relative_error(r.O, O_ref) < 1e-12);
          CHECK(test::relative_error(r.lse, lse_ref) < 1e-12);
          CHECK(test::relative_error(r.dQ, dQ_ref, gradient_floor(in)) < 1e-12);
          CHECK(test::relative_error(r.dK, dK_ref, gradient_floor(in)) < 1e-12);
          CHECK(test::relative_error(r.dV, dV_ref) < 1e-12);
        }
      }
    }
  }
}

TEST_CASE("exact kernels in float agree with double", "[attention][exact]") {
  for (const bool causal : {false, true}) {
    for (const Index n : {1, 7, 63, 65, 130, 257}) {
      for (const Index d : {1, 8, 16}) {
        INFO("causal " << causal << ", n " << n << ", d_h " << d);
        const HeadData in(n, d, std::uint64_t(2000 + 10 * n + d));
        const double scale = 1.0 / std::sqrt(double(d));
        const HeadResult ref = run_exact<double>(in, scale, causal, {});
        const HeadResult f = run_exact<float>(in, scale, causal, {});
        CHECK(test::relative_error(f.O, ref.O) < 1e-4);
        CHECK(test::relative_error(f.lse, ref.lse) < 1e-4);
        CHECK(test::relative_error(f.dQ, ref.dQ, gradient_floor(in)) < 1e-4);
        CHECK(test::relative_error(f.dK, ref.dK, gradient_floor(in)) < 1e-4);
        CHECK(test::relative_error(f.dV, ref.dV) < 1e-4);
      }
    }
  }
}

TEST_CASE("exact kernels survive large scores without overflow", "[attention][exact]") {
  // Scores up to about 400: exp would overflow in float without the running max.
  const HeadData in(130, 8, 77);
  for (const bool causal : {false, true}) {
    const HeadResult ref = run_exact<double>(in, 50.0, causal, {16, 16});
    const HeadResult f = run_exact<float>(in, 50.0, causal, {16, 16});
    CHECK(f.O.allFinite());
    CHECK(f.dQ.allFinite());
    CHECK(test::relative_error(f.O, ref.O) < 1e-4);
    const Matrix<double> O_ref =
        exact::reference::attention_forward<double>(in.Q, in.K, in.V, 50.0, causal);
    CHECK(test::relative_error(ref.O, O_ref) < 1e-12);
  }
}

// What causality means for each output (design.md section 2 with the mask j <= i):
//  O_i, lse_i and dQ_i use only q_i, dO_i and k_j, v_j for j <= i, so rows > t of Q, K, V, dO
//  cannot change rows <= t of O, lse, dQ.
//  dK_j and dV_j sum over the queries i >= j, and through lse_i and delta_i = dO_i . O_i they see
//  every key and value row up to i, hence all of K and V. What they do not see is q_i and dO_i for
//  i < j: rows < t of Q and dO cannot change rows >= t of dK, dV. Rows < t of K or V can.
TEMPLATE_TEST_CASE("exact kernels are causal", "[attention][exact][causal]", float, double) {
  using T = TestType;
  const Index n = 150, d = 8, t = 70;  // t inside a 64-row tile, so tiles mix both sides
  const T scale = T(0.4);
  const exact::Tiles tiles{32, 64};
  HeadData base(n, d, 5);
  std::mt19937_64 rng(6);
  const auto redraw = [&](auto&& rows) {
    rows = test::random_matrix(rows.rows(), rows.cols(), rng);
  };
  const auto run = [&](const HeadData& in) { return run_exact<T>(in, scale, true, tiles); };
  const HeadResult r0 = run(base);
  const double tol = std::is_same<T, float>::value ? 1e-6 : 1e-13;

  SECTION("later rows of Q, K, V, dO leave O, lse and dQ rows <= t unchanged") {
    HeadData later = base;
    redraw(later.Q.bottomRows(n - t - 1));
    redraw(later.K.bottomRows(n - t - 1));
    redraw(later.V.bottomRows(n - t - 1));
    redraw(later.dO.bottomRows(n - t - 1));
    const HeadResult r1 = run(later);
    CHECK(test::relative_error(r1.O.topRows(t + 1), r0.O.topRows(t + 1)) < tol);
    CHECK(test::relative_error(r1.lse.head(t + 1), r0.lse.head(t + 1)) < tol);
    CHECK(test::relative_error(r1.dQ.topRows(t + 1), r0.dQ.topRows(t + 1)) < tol);
    // The change is real: the rows after t do move.
    CHECK(test::relative_error(r1.O.bottomRows(n - t - 1), r0.O.bottomRows(n - t - 1)) > 1e-3);
    CHECK(test::relative_error(r1.dQ.bottomRows(n - t - 1), r0.dQ.bottomRows(n - t - 1)) > 1e-3);
  }

  SECTION("earlier rows of Q and dO leave dK and dV rows >= t unchanged") {
    HeadData earlier = base;
    redraw(earlier.Q.topRows(t));
    redraw(earlier.dO.topRows(t));
    const HeadResult r1 = run(earlier);
    CHECK(test::relative_error(r1.dK.bottomRows(n - t), r0.dK.bottomRows(n - t)) < tol);
    CHECK(test::relative_error(r1.dV.bottomRows(n - t), r0.dV.bottomRows(n - t)) < tol);
    CHECK(test::relative_error(r1.dK.topRows(t), r0.dK.topRows(t)) > 1e-3);
    CHECK(test::relative_error(r1.dV.topRows(t), r0.dV.topRows(t)) > 1e-3);
  }

  SECTION("earlier rows of K do change dK rows >= t (through lse and delta)") {
    HeadData earlier = base;
    redraw(earlier.K.topRows(t));
    const HeadResult r1 = run(earlier);
    CHECK(test::relative_error(r1.dK.bottomRows(n - t), r0.dK.bottomRows(n - t)) > 1e-3);
  }
}

TEMPLATE_TEST_CASE("ExactAttention matches NaiveAttention with three heads", "[attention][exact]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same<T, float>::value ? 1e-4 : 1e-12;
  for (const bool causal : {false, true}) {
    for (const Index n : {1, 65, 130}) {
      INFO("causal " << causal << ", n " << n);
      const Index H = 3, dh = 8;
      const test::AttentionProblem p = test::random_attention_problem(n, H, dh, causal, 0.5, n + 3);
      const Matrix<T> Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>(), dO = p.dO.cast<T>();
      const AttentionShape& shape = p.shape;
      Matrix<T> O, O_ref, dQ, dK, dV, dQ_ref, dK_ref, dV_ref;
      const ExactAttention<T> method;
      auto context = method.forward(Q, K, V, shape, O);
      auto reference = NaiveAttention<T>().forward(Q, K, V, shape, O_ref);
      context->backward(Q, K, V, O, dO, dQ, dK, dV);
      reference->backward(Q, K, V, O_ref, dO, dQ_ref, dK_ref, dV_ref);
      CHECK(test::relative_error(O, O_ref) < tol);
      // One token: dQ = dK = 0, compared on the scale of dO (gradient_floor above).
      const double floor = n == 1 ? double(dO.norm()) : 0.0;
      CHECK(test::relative_error(dQ, dQ_ref, floor) < tol);
      CHECK(test::relative_error(dK, dK_ref, floor) < tol);
      CHECK(test::relative_error(dV, dV_ref) < tol);
      CHECK(method.name() == "exact");
      const auto plans = context->plans();
      REQUIRE(plans.size() == 3);
      for (const HeadPlan& plan : plans) {
        CHECK(plan.method == HeadMethod::exact);
        CHECK(plan.exact_cost == cost::exact(n, dh, causal));
      }
      CHECK(context->describe() ==
            "head 0: exact (tiled)\nhead 1: exact (tiled)\nhead 2: exact (tiled)");
    }
  }
}

TEST_CASE("ExactAttention splits one head between threads, and says so in its plan",
          "[attention][exact]") {
  // One head with two threads and no work threshold: its tile rows run as two interleaved parts
  // on two threads, each part with its own dQ sum. The plan reports the threads that ran the
  // head, so a split that silently ran serially fails here. Threading::serial() is the control.
  const Index n = 300, dh = 4;
  const test::AttentionProblem p = test::random_attention_problem(n, 1, dh, true, 0.7, 11);
  const Matrix<double>&Q = p.Q, &K = p.K, &V = p.V, &dO = p.dO;
  AttentionShape shape = p.shape;
  Matrix<double> O_ref, dQ_ref, dK_ref, dV_ref;
  auto reference = NaiveAttention<double>().forward(Q, K, V, shape, O_ref);
  reference->backward(Q, K, V, O_ref, dO, dQ_ref, dK_ref, dV_ref);
  for (const int threads : {1, 2}) {
    shape.threading = Threading{threads, 0.0};
    Matrix<double> O, dQ, dK, dV;
    auto context = ExactAttention<double>(exact::Tiles{64, 32}).forward(Q, K, V, shape, O);
#if defined(_OPENMP)
    CHECK(context->plans()[0].threads == threads);
#else
    CHECK(context->plans()[0].threads == 1);
#endif
    context->backward(Q, K, V, O, dO, dQ, dK, dV);
#if defined(_OPENMP)
    CHECK(context->plans()[0].threads == threads);
#endif
    CAPTURE(threads);
    CHECK(test::relative_error(O, O_ref) < 1e-12);
    CHECK(test::relative_error(dQ, dQ_ref) < 1e-12);
    CHECK(test::relative_error(dK, dK_ref) < 1e-12);
    CHECK(test::relative_error(dV, dV_ref) < 1e-12);
  }
}

#if defined(_OPENMP)
TEST_CASE("exact attention leaves the OpenMP thread count as it was", "[attention][exact]") {
  // Its parallel regions limit nested threads for their own tasks only.
  const int threads = omp_get_max_threads();
  std::mt19937_64 rng(12);
  const Matrix<double> Q = test::random_matrix(9, 4, rng);
  Matrix<double> O, dQ, dK, dV;
  AttentionShape shape;
  shape.heads = 2;
  auto context = ExactAttention<double>().forward(Q, Q, Q, shape, O);
  CHECK(omp_get_max_threads() == threads);
  context->backward(Q, Q, Q, O, Q, dQ, dK, dV);
  CHECK(omp_get_max_threads() == threads);
}
#endif

TEST_CASE("exact attention rejects bad shapes and non-finite input", "[attention][exact][errors]") {
  const Index n = 10, d = 4;
  const test::AttentionProblem p = test::random_attention_problem(n, 1, d, true, 0.5, 13);
  const Matrix<double>&Q = p.Q, &K = p.K, &V = p.V, &dO = p.dO;
  std::mt19937_64 rng(14);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Matrix<double> O, dQ, dK, dV;
  Vector<double> lse;

  SECTION("kernels") {
    const Matrix<double> short_K = test::random_matrix(n - 1, d, rng);
    const Matrix<double> wide_V = test::random_matrix(n, d + 1, rng);
    CHECK_THROWS_AS(exact::forward<double>(Q, short_K, V, 0.5, true, O, lse), ShapeError);
    CHECK_THROWS_AS(exact::forward<double>(Q, K, wide_V, 0.5, true, O, lse), ShapeError);
    CHECK_THROWS_AS(exact::forward<double>(Matrix<double>(0, d), Matrix<double>(0, d),
                                           Matrix<double>(0, d), 0.5, true, O, lse),
                    ShapeError);
    CHECK_THROWS_AS(exact::forward<double>(Q, K, V, -1.0, true, O, lse), Error);
    CHECK_THROWS_AS(exact::forward<double>(Q, K, V, 0.5, true, O, lse, exact::Tiles{0, 4}),
                    PlanError);
    Matrix<double> bad = Q;
    bad(3, 1) = nan;
    CHECK_THROWS_AS(exact::forward<double>(bad, K, V, 0.5, false, O, lse), NumericError);

    exact::forward<double>(Q, K, V, 0.5, true, O, lse);
    const Vector<double> short_lse = lse.head(n - 1);
    CHECK_THROWS_AS(exact::backward<double>(Q, K, V, O, short_lse, dO, 0.5, true, dQ, dK, dV),
                    ShapeError);
    CHECK_THROWS_AS(exact::backward<double>(Q, K, V, O, lse, short_K, 0.5, true, dQ, dK, dV),
                    ShapeError);
    Matrix<double> bad_dO = dO;
    bad_dO(0, 0) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(exact::backward<double>(Q, K, V, O, lse, bad_dO, 0.5, true, dQ, dK, dV),
                    NumericError);
  }

  SECTION("multi-head method") {
    const ExactAttention<double> method;
    AttentionShape shape;
    shape.heads = 3;  // 4 columns do not split into 3 heads
    CHECK_THROWS_AS(method.forward(Q, K, V, shape, O), ShapeError);
    shape.heads = 2;
    CHECK_THROWS_AS(method.forward(Q, test::random_matrix(n + 1, d, rng), V, shape, O), ShapeError);
    Matrix<double> bad = V;
    bad(2, 2) = nan;
    CHECK_THROWS_AS(method.forward(Q, K, bad, shape, O), NumericError);
    auto context = method.forward(Q, K, V, shape, O);
    CHECK_THROWS_AS(context->backward(Q, K, V, O, test::random_matrix(n, d + 2, rng), dQ, dK, dV),
                    ShapeError);
    CHECK_THROWS_AS(context->backward(Q, K, test::random_matrix(n + 1, d, rng), O, dO, dQ, dK, dV),
                    ShapeError);
    Matrix<double> bad_dO = dO;
    bad_dO(1, 3) = nan;
    CHECK_THROWS_AS(context->backward(Q, K, V, O, bad_dO, dQ, dK, dV), NumericError);
    CHECK_THROWS_AS(ExactAttention<double>(exact::Tiles{4, 0}), PlanError);
  }
}
