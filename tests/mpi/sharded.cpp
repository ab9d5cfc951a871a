// Attention -- polynomial (joined chunk scans) and exact (ring attention) -- and the whole model
// with the sequence split across MPI ranks (design.md section 8): every rank computes the
// single-process result itself, then its shard of the same computation, and every output and
// gradient must agree. Run under mpirun with P = 1 .. 4 (CTest label "mpi").
//
// Checks use CHECK, never REQUIRE: every rank must take the same path through the collectives.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/parallel/mpi.hpp"
#include "polygrad/parallel/reduce.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

mpi::Communicator* world = nullptr;

/// ||a - b|| / max(||a||, ||b||) over the rows of every rank: a and b are this rank's rows.
template <class A, class B>
double relative_error_over_ranks(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const Matrix<double> ad = a.template cast<double>(), bd = b.template cast<double>();
  double sums[3] = {(ad - bd).squaredNorm(), ad.squaredNorm(), bd.squaredNorm()};
  world->sum(sums, 3);
  return std::sqrt(sums[0]) / std::max({std::sqrt(sums[1]), std::sqrt(sums[2]), 1e-300});
}

/// Whether `value` is the same, bit for bit, on every rank.
bool same_on_every_rank(double value) {
  double extremes[2] = {value, -value};
  world->max(extremes, 2);
  return extremes[0] == -extremes[1];
}

struct AttentionCase {
  Index n, heads, dh;
  bool causal;
  PolyRoute route;
  Index chunk;
  bool fixed_bound;  // unit q, k and score_bound = 2; else R and the key centre from the data
};

/// The sharded forward and backward of one attention call against the whole-sequence ones.
template <class T>
void check_attention(const AttentionCase& c, double tolerance) {
  std::mt19937_64 rng(1000 + c.n);  // the same data on every rank
  const Index D = c.heads * c.dh;
  Matrix<double> Qd = test::random_matrix(c.n, D, rng), Kd = test::random_matrix(c.n, D, rng);
  if (c.fixed_bound) {
    Qd = test::unit_rows_per_head(Qd, c.heads);
    Kd = test::unit_rows_per_head(Kd, c.heads);
  } else {
    Kd.array() += 0.5;  // off-centre keys, so that centring them matters
  }
  const Matrix<T> Q = Qd.cast<T>(), K = Kd.cast<T>();
  const Matrix<T> V = test::random_matrix(c.n, D, rng).cast<T>();
  const Matrix<T> dO = test::random_matrix(c.n, D, rng).cast<T>();

  AttentionShape shape(c.heads, c.causal, c.fixed_bound ? 2.0 : 0.7, c.fixed_bound ? 2.0 : 0.0);
  shape.threading = Threading::serial();
  PolyOptions options;
  options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
  options.route = c.route;
  options.degree = 4;
  options.chunk = c.chunk;
  const PolyAttention<T> method(options);

  Matrix<T> O, dQ, dK, dV;
  auto whole = method.forward(Q, K, V, shape, O);
  whole->backward(Q, K, V, O, dO, dQ, dK, dV);
  const std::vector<HeadPlan> whole_plans = whole->plans();

  shape.shard = shard_of(*world, c.n);
  const RowRange rows = balanced_shard(c.n, world->rank(), world->size());
  auto mine = [&](const Matrix<T>& X) { return Matrix<T>(X.middleRows(rows.begin, rows.rows)); };
  const Matrix<T> q = mine(Q), k = mine(K), v = mine(V), dO_rows = mine(dO);
  Matrix<T> o, dq, dk, dv;
  auto part = method.forward(q, k, v, shape, o);
  part->backward(q, k, v, o, dO_rows, dq, dk, dv);

  CHECK(relative_error_over_ranks(o, mine(O)) <= tolerance);
  CHECK(relative_error_over_ranks(dq, mine(dQ)) <= tolerance);
  CHECK(relative_error_over_ranks(dk, mine(dK)) <= tolerance);
  CHECK(relative_error_over_ranks(dv, mine(dV)) <= tolerance);
  // The plan is that of the whole sequence, and the same on every rank.
  const std::vector<HeadPlan> plans = part->plans();
  CHECK(plans.size() == whole_plans.size());
  for (std::size_t h = 0; h < plans.size() && h < whole_plans.size(); ++h) {
    CHECK(plans[h].n == c.n);
    CHECK(same_on_every_rank(plans[h].bound));
    CHECK(same_on_every_rank(plans[h].certified ? 1.0 : 0.0));
    CHECK(plans[h].bound == Approx(whole_plans[h].bound).epsilon(1e-12));
    CHECK(plans[h].degree == whole_plans[h].degree);
    CHECK(plans[h].rank == whole_plans[h].rank);
  }
}

std::string name_of(const AttentionCase& c) {
  return "n " + std::to_string(c.n) + ", chunk " + std::to_string(c.chunk) +
         (c.causal ? ", causal, " : ", not causal, ") + to_string(c.route) +
         (c.fixed_bound ? ", fixed bound" : ", bound from the data");
}

}  // namespace

TEST_CASE("sharded polynomial attention equals the single-process computation", "[mpi]") {
  // n not a multiple of P; shards shorter than one chunk (chunk 64) and spanning several (8).
  for (bool causal : {true, false}) {
    for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
      for (Index chunk : {Index(8), Index(64)}) {
        for (bool fixed : {true, false}) {
          const AttentionCase c{53, 2, 4, causal, route, chunk, fixed};
          SECTION(name_of(c) + ", double") { check_attention<double>(c, 1e-12); }
          SECTION(name_of(c) + ", float") { check_attention<float>(c, 1e-5); }
        }
      }
    }
  }
}

TEST_CASE("a rank with no rows takes part in the scans and the ring", "[mpi]") {
  // n = 5 rows over P ranks, the last rank owning none.
  const int P = world->size();
  if (P < 2) return;
  const Index n = 5, heads = 2, dh = 4, D = heads * dh;
  std::mt19937_64 rng(7);
  const Matrix<double> Q = test::unit_rows_per_head(test::random_matrix(n, D, rng), heads);
  const Matrix<double> K = test::unit_rows_per_head(test::random_matrix(n, D, rng), heads);
  const Matrix<double> V = test::random_matrix(n, D, rng), dO = test::random_matrix(n, D, rng);
  PolyOptions options;
  options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
  options.degree = 4;
  const PolyAttention<double> poly(options);
  const ExactAttention<double> exact;
  for (const AttentionMethod<double>* method :
       {static_cast<const AttentionMethod<double>*>(&poly),
        static_cast<const AttentionMethod<double>*>(&exact)})
    for (bool causal : {true, false}) {
      INFO(method->name() << (causal ? ", causal" : ", not causal"));
      AttentionShape shape(heads, causal, 2.0, 2.0);
      shape.threading = Threading::serial();
      Matrix<double> O, dQ, dK, dV;
      method->forward(Q, K, V, shape, O)->backward(Q, K, V, O, dO, dQ, dK, dV);
      // Rows split over the first P - 1 ranks only.
      const RowRange rows =
          world->rank() < P - 1 ? balanced_shard(n, world->rank(), P - 1) : RowRange{n, 0};
      shape.shard = SequenceShard{world, rows.begin, n, std::make_shared<Outbox>()};
      auto mine = [&](const Matrix<double>& X) {
        return Matrix<double>(X.middleRows(rows.begin, rows.rows));
      };
      Matrix<double> o, dq, dk, dv;
      method->forward(mine(Q), mine(K), mine(V), shape, o)
          ->backward(mine(Q), mine(K), mine(V), o, mine(dO), dq, dk, dv);
      CHECK(relative_error_over_ranks(o, mine(O)) <= 1e-12);
      CHECK(relative_error_over_ranks(dq, mine(dQ)) <= 1e-12);
      CHECK(relative_error_over_ranks(dk, mine(dK)) <= 1e-12);
      CHECK(relative_error_over_ranks(dv, mine(dV)) <= 1e-12);
    }
}

namespace {

/// Exact attention (ring attention) on n = 53 rows, tiles of 8 x 8 (several per shard), heads
/// split between 2 threads per rank, against the single-process computation.
template <class T>
void check_ring(bool causal, double tolerance) {
  const Index n = 53, heads = 2, dh = 4, D = heads * dh;
  std::mt19937_64 rng(1234);
  const Matrix<T> Q = test::random_matrix(n, D, rng).cast<T>(),
                  K = test::random_matrix(n, D, rng).cast<T>();
  const Matrix<T> V = test::random_matrix(n, D, rng).cast<T>(),
                  dO = test::random_matrix(n, D, rng).cast<T>();
  AttentionShape shape(heads, causal, 0.7);
  shape.threading = Threading::serial();
  const ExactAttention<T> method(exact::Tiles{8, 8});
  Matrix<T> O, dQ, dK, dV;
  method.forward(Q, K, V, shape, O)->backward(Q, K, V, O, dO, dQ, dK, dV);

  shape.shard = shard_of(*world, n);
  const RowRange rows = balanced_shard(n, world->rank(), world->size());
  auto mine = [&](const Matrix<T>& X) { return Matrix<T>(X.middleRows(rows.begin, rows.rows)); };
  Matrix<T> o, dq, dk, dv;
  auto part = method.forward(mine(Q), mine(K), mine(V), shape, o);
  part->backward(mine(Q), mine(K), mine(V), o, mine(dO), dq, dk, dv);
  CHECK(relative_error_over_ranks(o, mine(O)) <= tolerance);
  CHECK(relative_error_over_ranks(dq, mine(dQ)) <= tolerance);
  CHECK(relative_error_over_ranks(dk, mine(dK)) <= tolerance);
  CHECK(relative_error_over_ranks(dv, mine(dV)) <= tolerance);
  CHECK(part->plans().at(0).n == n);
}

}  // namespace

TEST_CASE("sharded exact attention (ring) equals the single-process computation", "[mpi]") {
  for (bool causal : {true, false}) {
    const std::string mask = causal ? "causal" : "not causal";
    SECTION(mask + ", double") { check_ring<double>(causal, 1e-12); }
    SECTION(mask + ", float") { check_ring<float>(causal, 1e-5); }
  }
}

namespace {

/// The attention methods a model is checked with: ring exact and both polynomial routes.
template <class T>
std::shared_ptr<AttentionMethod<T>> model_method(const std::string& name) {
  if (name == "exact") return std::make_shared<ExactAttention<T>>(exact::Tiles{8, 8});
  PolyOptions options;
  options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
  options.route = name == "paper" ? PolyRoute::paper : PolyRoute::adjoint;
  options.degree = 3;
  options.chunk = 8;
  return std::make_shared<PolyAttention<T>>(options);
}

/// Every parameter gradient, the input gradient and the loss of a 4-layer model, sharded and
/// summed over the ranks, against the single-process run.
template <class T>
void check_model(bool causal, const std::string& method_name, bool recompute, double tolerance) {
  TransformerConfig config;
  config.layers = 4;
  config.d_model = 16;
  config.heads = 2;
  config.d_ff = 24;
  config.causal = causal;
  config.qk_norm = 2.0;
  const Index n = 41;
  const std::shared_ptr<AttentionMethod<T>> method = model_method<T>(method_name);

  std::mt19937_64 rng(99);
  const Matrix<T> x = test::random_matrix(n, config.d_model, rng).cast<T>();
  const Matrix<T> W = test::random_matrix(n, config.d_model, rng).cast<T>();  // L = sum(W o y)

  Transformer<T> whole(config, method);
  whole.set_threading(Threading::serial());
  whole.set_recompute(recompute);
  const Matrix<T> y = whole.forward(x);
  const double loss = (y.array() * W.array()).template cast<double>().sum();
  const Matrix<T> dx = whole.backward(W);

  Transformer<T> part(config, method);
  part.set_threading(Threading::serial());
  part.set_recompute(recompute);
  part.set_shard(shard_of(*world, n));
  const RowRange rows = balanced_shard(n, world->rank(), world->size());
  const Matrix<T> y_rows = part.forward(x.middleRows(rows.begin, rows.rows));
  const Matrix<T> W_rows = W.middleRows(rows.begin, rows.rows);
  const double loss_rows = (y_rows.array() * W_rows.array()).template cast<double>().sum();
  const Matrix<T> dx_rows = part.backward(W_rows);
  const ParameterList<T> params = part.parameters();
  sum_gradients(params, *world);

  CHECK(sum_over_ranks(loss_rows, *world) == Approx(loss).epsilon(tolerance));
  CHECK(relative_error_over_ranks(dx_rows, dx.middleRows(rows.begin, rows.rows)) <= tolerance);
  const ParameterList<T> reference = whole.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    CHECK(test::relative_error(params[i].grads(), reference[i].grads()) <= tolerance);
  }
}

}  // namespace

TEST_CASE("a 4-layer model's gradients, sharded, equal the single-process ones", "[mpi]") {
  for (bool causal : {true, false}) {
    for (const std::string method : {"exact", "adjoint", "paper"}) {
      const std::string name = std::string(causal ? "causal " : "not causal ") + method;
      SECTION(name + ", double") { check_model<double>(causal, method, false, 1e-12); }
      SECTION(name + ", double, recomputed") { check_model<double>(causal, method, true, 1e-12); }
      SECTION(name + ", float") { check_model<float>(causal, method, false, 1e-5); }
    }
  }
}

TEST_CASE("ranks that disagree are told so on every rank", "[mpi]") {
  if (world->size() < 2) return;
  const Index n = 12, heads = 2, D = 8;
  std::mt19937_64 rng(3);
  const Matrix<double> X = test::unit_rows_per_head(test::random_matrix(n, D, rng), heads);
  const RowRange rows = balanced_shard(n, world->rank(), world->size());
  const Matrix<double> x = X.middleRows(rows.begin, rows.rows);
  const PolyAttention<double> method;
  Matrix<double> o;
  SECTION("on the causal mask") {
    AttentionShape shape(heads, world->rank() == 0, 2.0, 2.0);
    shape.shard = shard_of(*world, n);
    CHECK_THROWS_WITH(method.forward(x, x, x, shape, o),
                      Catch::Contains("disagree on the causal mask"));
  }
  SECTION("on the rows each holds") {
    AttentionShape shape(heads, true, 2.0, 2.0);
    shape.shard = shard_of(*world, n + 1);  // told n + 1 rows, given n
    CHECK_THROWS_WITH(method.forward(x, x, x, shape, o),
                      Catch::Contains("do not make up the sequence"));
  }
  SECTION("on the model's parameters") {
    TransformerConfig config;
    config.layers = 1;
    config.d_model = D;
    config.heads = heads;
    config.d_ff = 8;
    config.qk_norm = 2.0;
    Transformer<double> model(config, std::make_shared<PolyAttention<double>>());
    model.init(std::uint64_t(world->rank()));  // a different seed on every rank
    model.set_shard(shard_of(*world, n));
    CHECK_THROWS_WITH(model.forward(x), Catch::Contains("different parameters"));
  }
}

TEST_CASE("more ranks than rows is refused", "[mpi]") {
  if (world->size() < 2) return;
  CHECK_THROWS_WITH(shard_of(*world, world->size() - 1), Catch::Contains("more ranks than rows"));
}

int main(int argc, char** argv) {
  mpi::Environment environment(argc, argv);
  Eigen::setNbThreads(1);  // the ranks fill the cores; as in tests/support/catch_main.cpp
  int result = 0;
  {
    mpi::Communicator communicator;
    world = &communicator;
    result = Catch::Session().run(argc, argv);
    // Every rank's verdict, so that mpirun fails when one rank failed.
    double failed = result;
    communicator.max(&failed, 1);
    result = int(failed);
  }
  return result;
}
