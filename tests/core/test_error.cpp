#include <catch2/catch.hpp>

#include <limits>

#include "polygrad/core/error.hpp"

using namespace polygrad;

TEST_CASE("an error passing out of nested parts collects their names", "[core][error]") {
  try {
    within("blocks.2", [] { within("attn", [] { throw PlanError("degree 30 is too high"); }); });
    FAIL("within() swallowed the error");
  } catch (const PlanError& e) {  // the type is kept
    CHECK(std::string(e.what()) == "blocks.2.attn: degree 30 is too high");
    CHECK(e.where() == "blocks.2.attn");
    CHECK(e.message() == "degree 30 is too high");
  }
}

TEST_CASE("an error raised outside any part has no location", "[core][error]") {
  const ShapeError e("x must be 3 x 4, got 3 x 5");
  CHECK(std::string(e.what()) == "x must be 3 x 4, got 3 x 5");
  CHECK(e.where().empty());
}

TEST_CASE("within() returns what its function returns", "[core][error]") {
  CHECK(within("part", [] { return 42; }) == 42);
}

TEST_CASE("require_finite names the first entry that is not finite", "[core][error]") {
  Matrix<double> m = Matrix<double>::Zero(20, 4);
  CHECK_NOTHROW(require_finite(m, "m"));
  m(17, 3) = std::numeric_limits<double>::quiet_NaN();
  m(18, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(require_finite(m, "m"), NumericError);
  CHECK_THROWS_WITH(require_finite(m, "m"),
                    Catch::StartsWith("m contains NaN at row 17 (column 3);"));
  m(17, 3) = 0;
  CHECK_THROWS_WITH(require_finite(m, "m"),
                    Catch::StartsWith("m contains infinity at row 18 (column 0);"));
  Vector<float> v = Vector<float>::Zero(6);
  v(4) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(require_finite(v, "v"), Catch::StartsWith("v contains infinity at index 4;"));
}
