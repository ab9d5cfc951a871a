// The chunk scan every polynomial route runs (poly_scan.hpp): the order of the chunks, what each
// chunk reads (exactly the rows before it in scan order, or the whole sequence), and that a scan
// can stop and go on from its final state -- what a shard of a sequence split across processes
// does with the state of the shards before it.

#include <catch2/catch.hpp>

#include <random>
#include <type_traits>

#include "polygrad/attention/poly_scan.hpp"

using namespace polygrad;

namespace {

struct Setup {
  SymmetricFeatures features{2, {1.0, 0.5, 0.25, 0.125}};  // d = 2, g = 3: k = 10
  Vector<double> w = pair_weights(features, {1.0, 0.5, 0.25, 0.125});
  Matrix<double> X, Y;  // (n, d) rows whose monomials enter the state, (n, m) the rows they carry

  explicit Setup(Index n) {
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(-0.7, 0.7);
    X.resize(n, 2);
    Y.resize(n, 3);
    for (Index i = 0; i < X.size(); ++i) X.data()[i] = u(rng);
    for (Index i = 0; i < Y.size(); ++i) Y.data()[i] = u(rng);
  }

  /// (diag(w) sum_{r in rows} m(x_r) y_r^T)^T, densely: (m, k).
  Matrix<double> dense_state(Index begin, Index end) const {
    Matrix<double> S = Matrix<double>::Zero(Y.cols(), features.size());
    for (Index r = begin; r < end; ++r) {
      Vector<double> m(features.size());
      for (Index f = 0; f < features.size(); ++f) {
        double v = 1;
        for (Index g = f; g > 0; g = features.parent(g)) v *= X(r, features.last_coordinate(g));
        m(f) = v;
      }
      S += Y.row(r).transpose() * (w.array() * m.array()).matrix().transpose();
    }
    return S;
  }
};

/// A scan's add step: the chunk's rows, strip by strip.
template <class T = double>
struct AddRows {
  explicit AddRows(const Setup& setup) : s(setup) {}

  const Setup& s;
  MonomialBlock<T> block{s.features};
  Monomials<T> M;
  ProductScratch<T> scratch;
  Matrix<T> rows;

  void operator()(poly::Chunk c, poly::FeatureState<T>& state) {
    constexpr Index W = simd::width<T>;
    poly::for_each_strip<T>(c, [&](Index b, Index n) {
      block.build(s.X.middleRows(c.begin + b, n).template cast<T>(), M);
      rows.setZero(W, s.Y.cols());
      rows.topRows(n) = s.Y.middleRows(c.begin + b, n).template cast<T>();
      state.add(M, rows, scratch);
    });
  }
};

/// |a - b|_max / |b|_max.
double test_relative(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("chunks come in scan order, the last one shorter", "[attention][poly][scan]") {
  const poly::ChunkScan forward(10, 4, poly::ScanOrder::forward),
      reverse(10, 4, poly::ScanOrder::reverse);
  REQUIRE(forward.count() == 3);
  CHECK((forward[0].begin == 0 && forward[0].size == 4));
  CHECK((forward[2].begin == 8 && forward[2].size == 2));
  CHECK((reverse[0].begin == 8 && reverse[0].size == 2));
  CHECK((reverse[2].begin == 0 && reverse[2].size == 4));
  CHECK_THROWS_AS(poly::ChunkScan(10, 0, poly::ScanOrder::forward), PlanError);
}

TEMPLATE_TEST_CASE(
    "a feature state holds every row that entered, however its sums in T are folded and "
    "whenever it is read",
    "[attention][poly][scan]", float, double) {
  const Index n = 61;
  const Setup s(n);
  const double tolerance = std::is_same_v<TestType, float> ? 1e-5 : 1e-14;
  // Fold after every strip, after parts of strips' worth, after several strips, or never.
  for (const Index fold_rows : {Index(1), Index(5), Index(24), Index(1000)}) {
    for (const Index refresh_every : {Index(1), Index(3)}) {
      CAPTURE(fold_rows, refresh_every);
      AddRows<TestType> add{s};
      poly::FeatureState<TestType> state(s.features.size(), 3, fold_rows);
      const poly::ChunkScan chunks(n, 7, poly::ScanOrder::forward);
      for (Index i = 0; i < chunks.count(); ++i) {
        add(chunks[i], state);
        if ((i + 1) % refresh_every != 0) continue;
        const Index end = chunks[i].begin + chunks[i].size;
        const Matrix<double> S = state.refresh(s.w).template cast<double>();
        CHECK(test_relative(S, s.dense_state(0, end)) < tolerance);
      }
      const Matrix<double> total = state.total().array().rowwise() * s.w.transpose().array();
      CHECK(test_relative(total, s.dense_state(0, n)) < tolerance);
      // Read twice in a row: the second refresh folds nothing more.
      const Matrix<double> again = state.refresh(s.w).template cast<double>();
      CHECK(test_relative(again, s.dense_state(0, n)) < tolerance);
    }
  }
}

TEST_CASE("a causal scan reads the rows before each chunk, a whole scan every row",
          "[attention][poly][scan]") {
  const Index n = 23, chunk = 5;
  const Setup s(n);
  for (const poly::ScanOrder order : {poly::ScanOrder::forward, poly::ScanOrder::reverse}) {
    for (const bool causal : {true, false}) {
      CAPTURE(order == poly::ScanOrder::forward, causal);
      AddRows<> add{s};
      poly::FeatureState<double> state(s.features.size(), 3, chunk);
      Index reads = 0;
      auto read = [&](poly::Chunk c, const Matrix<double>& S) {
        const bool before = order == poly::ScanOrder::forward;
        const Matrix<double> want = !causal  ? s.dense_state(0, n)
                                    : before ? s.dense_state(0, c.begin)
                                             : s.dense_state(c.begin + c.size, n);
        CHECK((S - want).cwiseAbs().maxCoeff() < 1e-14);
        ++reads;
      };
      poly::scan(causal, poly::ChunkScan(n, chunk, order), state, s.w, read, add);
      CHECK(reads == 5);
      // Afterwards the state holds every row: what the next shard starts from.
      const Matrix<double> total = state.total().array().rowwise() * s.w.transpose().array();
      CHECK((total - s.dense_state(0, n)).cwiseAbs().maxCoeff() < 1e-14);
    }
  }
}

TEST_CASE(
    "a causal scan split in two, the second half started from the first's final state, "
    "reads what the whole scan reads",
    "[attention][poly][scan]") {
  const Index n = 40, chunk = 8, split = 16;
  const Setup s(n);
  AddRows<> add{s};
  std::vector<Matrix<double>> whole, halves;
  poly::FeatureState<double> state(s.features.size(), 3, chunk);
  poly::scan_causal(
      poly::ChunkScan(n, chunk, poly::ScanOrder::forward), state, s.w,
      [&](poly::Chunk, const Matrix<double>& S) { whole.push_back(S); }, add);

  // The first shard: rows [0, split).
  const Setup first = [&] {
    Setup f(0);
    f.X = s.X.topRows(split);
    f.Y = s.Y.topRows(split);
    return f;
  }();
  AddRows<> add_first{first};
  poly::FeatureState<double> shard(s.features.size(), 3, chunk);
  poly::scan_causal(
      poly::ChunkScan(split, chunk, poly::ScanOrder::forward), shard, s.w,
      [&](poly::Chunk, const Matrix<double>& S) { halves.push_back(S); }, add_first);
  const Matrix<double> handed_on = shard.total();
  // The second shard: rows [split, n), starting from the first shard's final state.
  const Setup second = [&] {
    Setup f(0);
    f.X = s.X.bottomRows(n - split);
    f.Y = s.Y.bottomRows(n - split);
    return f;
  }();
  AddRows<> add_second{second};
  poly::FeatureState<double> next(s.features.size(), 3, chunk);
  next.reset(handed_on);
  poly::scan_causal(
      poly::ChunkScan(n - split, chunk, poly::ScanOrder::forward), next, s.w,
      [&](poly::Chunk, const Matrix<double>& S) { halves.push_back(S); }, add_second);
  REQUIRE(halves.size() == whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i)
    CHECK((halves[i] - whole[i]).cwiseAbs().maxCoeff() < 1e-14);
  CHECK_THROWS_AS(next.reset(Matrix<double>::Zero(2, 2)), ShapeError);
}
