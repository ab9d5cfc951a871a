// Polynomial attention on a sequence split across ranks that are threads of this process
// (support/thread_group.hpp): the joined chunk scans must give what one process computes on the
// whole sequence. tests/mpi runs the same over MPI, with the whole model.

#include <catch2/catch.hpp>

#include "polygrad/attention/poly.hpp"
#include "support/finite_difference.hpp"
#include "support/thread_group.hpp"

using namespace polygrad;

namespace {

struct Split {
  Matrix<double> O, dQ, dK, dV;  // (n, D), each rank's rows in place
  std::vector<double> bounds;    // head 0's R on each rank
};

/// The forward and backward of `method` with the rows split over `ranks` threads; each rank
/// writes its rows of the results into place.
Split run_split(const PolyAttention<double>& method, AttentionShape shape, const Matrix<double>& Q,
                const Matrix<double>& K, const Matrix<double>& V, const Matrix<double>& dO,
                int ranks) {
  const Index n = Q.rows();
  Split out{Matrix<double>(n, Q.cols()), Matrix<double>(n, Q.cols()), Matrix<double>(n, Q.cols()),
            Matrix<double>(n, Q.cols()), std::vector<double>(std::size_t(ranks))};
  test::run_ranks(ranks, [&](SequenceGroup& group) {
    AttentionShape mine = shape;
    mine.shard = shard_of(group, n);
    const RowRange rows = balanced_shard(n, group.rank(), group.size());
    auto part = [&](const Matrix<double>& X) { return Matrix<double>(X.middleRows(rows.begin, rows.rows)); };
    const Matrix<double> q = part(Q), k = part(K), v = part(V), dO_rows = part(dO);
    Matrix<double> o, dq, dk, dv;
    auto context = method.forward(q, k, v, mine, o);
    context->backward(q, k, v, o, dO_rows, dq, dk, dv);
    out.O.middleRows(rows.begin, rows.rows) = o;
    out.dQ.middleRows(rows.begin, rows.rows) = dq;
    out.dK.middleRows(rows.begin, rows.rows) = dk;
    out.dV.middleRows(rows.begin, rows.rows) = dv;
    out.bounds[std::size_t(group.rank())] = context->plans()[0].bound;
  });
  return out;
}

}  // namespace

TEST_CASE("polynomial attention split across ranks equals the whole-sequence computation",
          "[parallel][poly]") {
  const Index n = 45, heads = 2, dh = 4, D = heads * dh;
  std::mt19937_64 rng(17);
  const Matrix<double> Qu = test::unit_rows_per_head(test::random_matrix(n, D, rng), heads);
  const Matrix<double> Ku = test::unit_rows_per_head(test::random_matrix(n, D, rng), heads);
  const Matrix<double> V = test::random_matrix(n, D, rng), dO = test::random_matrix(n, D, rng);
  Matrix<double> Kshifted = Ku.array() + 0.4;  // keys off centre, for the data-dependent plan
  for (bool causal : {true, false}) {
    for (PolyRoute route : {PolyRoute::adjoint, PolyRoute::paper}) {
      for (bool fixed : {true, false}) {
        PolyOptions options;
        options.route = route;
        options.degree = 4;
        options.chunk = 6;  // several chunks per shard, and shards that start inside a chunk
        const PolyAttention<double> method(options);
        // Fixed: QK-normalised rows with score bound 2. Otherwise R and the key centre come
        // from the data, reduced over the ranks.
        AttentionShape shape(heads, causal, fixed ? 2.0 : 0.8, fixed ? 2.0 : 0.0);
        shape.threading = Threading::serial();
        const Matrix<double>& K = fixed ? Ku : Kshifted;
        Matrix<double> O, dQ, dK, dV;
        auto whole = method.forward(Qu, K, V, shape, O);
        whole->backward(Qu, K, V, O, dO, dQ, dK, dV);
        const double whole_bound = whole->plans()[0].bound;
        for (int ranks : {2, 3, 4}) {
          INFO((causal ? "causal " : "not causal ") << to_string(route)
               << (fixed ? ", fixed bound, " : ", bound from the data, ") << ranks << " ranks");
          const Split split = run_split(method, shape, Qu, K, V, dO, ranks);
          CHECK(test::relative_error(split.O, O) <= 1e-12);
          CHECK(test::relative_error(split.dQ, dQ) <= 1e-12);
          CHECK(test::relative_error(split.dK, dK) <= 1e-12);
          CHECK(test::relative_error(split.dV, dV) <= 1e-12);
          for (double bound : split.bounds) {
            CHECK(bound == split.bounds[0]);  // the same plan on every rank
            CHECK(bound == Approx(whole_bound).epsilon(1e-12));
          }
        }
      }
    }
  }
}

TEST_CASE("a split sequence is refused by methods that need all of it", "[parallel]") {
  std::vector<std::string> messages(2);
  test::run_ranks(2, [&](SequenceGroup& group) {
    AttentionShape shape(1, true, 1.0);
    shape.shard = shard_of(group, 4);
    const Matrix<double> x = Matrix<double>::Ones(2, 2);
    Matrix<double> o;
    try {
      ExactAttention<double>().forward(x, x, x, shape, o);
    } catch (const PlanError& e) {
      messages[std::size_t(group.rank())] = e.what();
    }
  });
  for (const std::string& message : messages) CHECK_THAT(message, Catch::Contains("whole sequence"));
}
