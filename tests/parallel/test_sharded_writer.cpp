// ShardedWriter (parallel/sharded_writer.hpp) with ranks that are threads of this process: the
// file written from shards is the file one process writes from the whole matrices, byte for byte.

#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <random>

#include "polygrad/parallel/sharded_writer.hpp"
#include "support/finite_difference.hpp"
#include "support/temp_path.hpp"
#include "support/thread_group.hpp"

using namespace polygrad;

namespace {

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A [heads, n, width] tensor ([n, width] for one head) from the n x (heads width) matrix whose
/// rows the ranks hold.
template <class T>
void add_heads_whole(SafetensorsWriter& out, const std::string& name, const Matrix<T>& m,
                     Index heads) {
  const Index n = m.rows(), width = m.cols() / heads;
  std::vector<Index> shape{n, width};
  if (heads > 1) shape.insert(shape.begin(), heads);
  out.add<T>(name, shape, [&m, n, width](Index first, Index count, T* values) {
    for (Index e = first; e < first + count; ++e)
      *values++ = m(e / width % n, e / (n * width) * width + e % width);
  });
}

template <class T>
void check_same_file(Index n, Index heads, Index width, int ranks, bool last_empty) {
  std::mt19937_64 rng(11);
  const Matrix<T> rows = test::random_matrix(n, heads * width, rng).template cast<T>();
  const Matrix<T> plain = test::random_matrix(n, 5, rng).template cast<T>();
  const Matrix<T> whole = test::random_matrix(3, 4, rng).template cast<T>();
  test::TempPath reference("sharded_reference"), sharded("sharded_written");

  SafetensorsWriter one(reference.path);
  add_heads_whole<T>(one, "heads", rows, heads);
  one.add("plain", plain);
  one.add("whole", whole);
  one.metadata()["what"] = "test";
  one.write();

  test::run_ranks(ranks, [&](SequenceGroup& group) {
    const RowRange mine = last_empty && group.rank() == ranks - 1
                              ? RowRange{n, 0}
                              : balanced_shard(n, group.rank(), last_empty ? ranks - 1 : ranks);
    const Matrix<T> my_rows = rows.middleRows(mine.begin, mine.rows);
    const Matrix<T> my_plain = plain.middleRows(mine.begin, mine.rows);
    ShardedWriter out(sharded.path,
                      SequenceShard{&group, mine.begin, n, std::make_shared<Outbox>()});
    out.add_rows("heads", my_rows, heads);
    out.add_rows("plain", my_plain);
    out.add("whole", whole);
    out.metadata()["what"] = "test";
    out.write();
  });
  CHECK(contents(sharded.path) == contents(reference.path));
  CHECK_FALSE(sharded.temporary_exists());
}

}  // namespace

TEST_CASE("a file written from shards is the file one process writes", "[parallel][io]") {
  // 3 heads of width 4 over 1000 rows: with pieces of 2^16 / 4 rows, one piece per rank and head;
  // width 40000 makes every row a piece of its own.
  SECTION("double, 3 ranks") { check_same_file<double>(1000, 3, 4, 3, false); }
  SECTION("float, 4 ranks, the last empty") { check_same_file<float>(37, 2, 3, 4, true); }
  SECTION("pieces of one row") { check_same_file<double>(7, 1, 40000, 2, false); }
  SECTION("one rank") { check_same_file<double>(5, 2, 2, 1, false); }
}

TEST_CASE("ShardedWriter refuses tensors whose rows disagree", "[parallel][io]") {
  test::TempPath path("sharded_refused");
  ShardedWriter out(path.path, SequenceShard{});
  const Matrix<double> a = Matrix<double>::Zero(4, 2), b = Matrix<double>::Zero(5, 2);
  out.add_rows("a", a);
  CHECK_THROWS_WITH(out.add_rows("b", b),
                    Catch::Contains("every sharded tensor holds this rank's rows"));
  CHECK_THROWS_WITH(out.add_rows("c", a, 3), Catch::Contains("heads do not divide"));
}
