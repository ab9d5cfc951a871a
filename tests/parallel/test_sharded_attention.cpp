// Attention on a sequence split across ranks that are threads of this process
// (support/thread_group.hpp): the joined chunk scans of the polynomial method, and the ring of
// exact attention, must give what one process computes on the whole sequence. tests/mpi runs the
// same over MPI, with the whole model.

#include <catch2/catch.hpp>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/poly.hpp"
#include "support/finite_difference.hpp"
#include "support/thread_group.hpp"

using namespace polygrad;

namespace {

template <class T>
struct Split {
  Matrix<T> O, dQ, dK, dV;     // (n, D), each rank's rows in place
  std::vector<double> bounds;  // head 0's R on each rank
};

/// The rows of each of `ranks` ranks: balanced, or (`last_empty`) over all ranks but the last,
/// which holds none.
RowRange rows_of_rank(Index n, int rank, int ranks, bool last_empty) {
  if (!last_empty) return balanced_shard(n, rank, ranks);
  return rank < ranks - 1 ? balanced_shard(n, rank, ranks - 1) : RowRange{n, 0};
}

/// The forward and backward of `method` with the rows split over `ranks` threads; each rank
/// writes its rows of the results into place.
template <class T>
Split<T> run_split(const AttentionMethod<T>& method, AttentionShape shape, const Matrix<T>& Q,
                   const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& dO, int ranks,
                   bool last_empty = false) {
  const Index n = Q.rows();
  Split<T> out{Matrix<T>(n, Q.cols()), Matrix<T>(n, Q.cols()), Matrix<T>(n, Q.cols()),
               Matrix<T>(n, Q.cols()), std::vector<double>(std::size_t(ranks))};
  test::run_ranks(ranks, [&](SequenceGroup& group) {
    AttentionShape mine = shape;
    const RowRange rows = rows_of_rank(n, group.rank(), group.size(), last_empty);
    mine.shard = SequenceShard{&group, rows.begin, n, std::make_shared<Outbox>()};
    auto part = [&](const Matrix<T>& X) { return Matrix<T>(X.middleRows(rows.begin, rows.rows)); };
    const Matrix<T> q = part(Q), k = part(K), v = part(V), dO_rows = part(dO);
    Matrix<T> o, dq, dk, dv;
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
        options.allow_causal_data_bound = true;  // compared as one approximation, not for causality
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
          INFO((causal ? "causal " : "not causal ")
               << to_string(route) << (fixed ? ", fixed bound, " : ", bound from the data, ")
               << ranks << " ranks");
          const Split<double> split = run_split<double>(method, shape, Qu, K, V, dO, ranks);
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

namespace {

/// Exact attention split over 2, 3 and 4 ranks (ring attention) against one process.
template <class T>
void check_ring(bool causal, Threading threading, exact::Tiles tiles, bool last_empty,
                double tolerance) {
  const Index n = 37, heads = 2, dh = 4, D = heads * dh;
  std::mt19937_64 rng(23);
  const Matrix<T> Q = test::random_matrix(n, D, rng).cast<T>(),
                  K = test::random_matrix(n, D, rng).cast<T>();
  const Matrix<T> V = test::random_matrix(n, D, rng).cast<T>(),
                  dO = test::random_matrix(n, D, rng).cast<T>();
  AttentionShape shape(heads, causal, 0.6);
  shape.threading = threading;
  const ExactAttention<T> method(tiles);
  Matrix<T> O, dQ, dK, dV;
  auto whole = method.forward(Q, K, V, shape, O);
  whole->backward(Q, K, V, O, dO, dQ, dK, dV);
  for (int ranks : {2, 3, 4}) {
    INFO(ranks << " ranks");
    const Split<T> split = run_split<T>(method, shape, Q, K, V, dO, ranks, last_empty);
    CHECK(test::relative_error(split.O, O) <= tolerance);
    CHECK(test::relative_error(split.dQ, dQ) <= tolerance);
    CHECK(test::relative_error(split.dK, dK) <= tolerance);
    CHECK(test::relative_error(split.dV, dV) <= tolerance);
  }
}

}  // namespace

TEST_CASE(
    "exact attention split across ranks (ring attention) equals the whole-sequence "
    "computation",
    "[parallel][exact]") {
  Threading two_threads{2};
  two_threads.min_parallel_work = 0;  // each rank's steps split between 2 threads
  for (bool causal : {true, false}) {
    const std::string mask = causal ? "causal" : "not causal";
    // Tiles of 4 x 5 rows: several tiles per shard, shards that end inside a tile.
    SECTION(mask + ", double") {
      check_ring<double>(causal, Threading::serial(), {4, 5}, false, 1e-12);
    }
    SECTION(mask + ", double, 2 threads per rank") {
      check_ring<double>(causal, two_threads, {4, 5}, false, 1e-12);
    }
    SECTION(mask + ", double, one tile per shard") {
      check_ring<double>(causal, Threading::serial(), {64, 64}, false, 1e-12);
    }
    SECTION(mask + ", double, the last rank holds no rows") {
      check_ring<double>(causal, Threading::serial(), {4, 5}, true, 1e-12);
    }
    SECTION(mask + ", float") {
      check_ring<float>(causal, Threading::serial(), {4, 5}, false, 1e-5);
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
      NaiveAttention<double>().forward(x, x, x, shape, o);
    } catch (const PlanError& e) {
      messages[std::size_t(group.rank())] = e.what();
    }
  });
  for (const std::string& message : messages)
    CHECK_THAT(message, Catch::Contains("whole sequence"));
}
