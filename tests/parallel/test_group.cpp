#include <catch2/catch.hpp>

#include "polygrad/parallel/group.hpp"

using namespace polygrad;

TEST_CASE("balanced shards cover the sequence in rank order", "[parallel]") {
  for (Index total : {Index(0), Index(1), Index(7), Index(64), Index(1000003)}) {
    for (int size : {1, 2, 3, 4, 7}) {
      Index next = 0, shortest = total, longest = 0;
      for (int rank = 0; rank < size; ++rank) {
        const RowRange rows = balanced_shard(total, rank, size);
        CHECK(rows.begin == next);
        next = rows.end();
        shortest = std::min(shortest, rows.rows);
        longest = std::max(longest, rows.rows);
      }
      CHECK(next == total);
      CHECK(longest - shortest <= 1);
    }
  }
  // The longer shards come first.
  CHECK(balanced_shard(10, 0, 4).rows == 3);
  CHECK(balanced_shard(10, 1, 4).rows == 3);
  CHECK(balanced_shard(10, 2, 4).rows == 2);
  CHECK(balanced_shard(10, 3, 4).begin == 8);
}

TEST_CASE("balanced_shard refuses ranks that do not exist", "[parallel]") {
  CHECK_THROWS_AS(balanced_shard(10, 4, 4), ShapeError);
  CHECK_THROWS_AS(balanced_shard(10, -1, 4), ShapeError);
  CHECK_THROWS_AS(balanced_shard(10, 0, 0), ShapeError);
  CHECK_THROWS_AS(balanced_shard(-1, 0, 1), ShapeError);
}

TEST_CASE("an unsplit shard is the whole sequence", "[parallel]") {
  const SequenceShard whole;
  CHECK_FALSE(whole.split());
  CHECK(whole.rank() == 0);
  CHECK(whole.size() == 1);
  CHECK(whole.first());
  CHECK(whole.last());
}
