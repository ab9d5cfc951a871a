// SafetensorsReader: tensors read whole or by rows, straight into matrices, converted between
// F32 and F64; ranges outside a tensor and files that end while being read are FormatErrors
// naming the file and the tensor.

#include <catch2/catch.hpp>

#include <filesystem>

#include "polygrad/io/safetensors.hpp"
#include "support/temp_path.hpp"

using namespace polygrad;
using Catch::Matchers::Contains;

namespace {

/// A file with "x" [n, 3] (F32, entry (i, j) = 10 i + j), "w" [2, 2, 2] (F64) and "b" [3] (I8).
void write_example(const std::string& path, Index n) {
  SafetensorsFile file;
  Matrix<float> x(n, 3);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < 3; ++j) x(i, j) = float(10 * i + j);
  file.add("x", x);
  const double w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  file.add<double>("w", {2, 2, 2}, w);
  file.add_raw("b", "I8", {3}, {1, 2, 3});
  file.metadata()["note"] = "example";
  file.write(path);
}

}  // namespace

TEST_CASE("the reader reads tensors whole, by rows and by elements", "[io][safetensors]") {
  test::TempPath path("reader_example");
  write_example(path.path, 50);
  SafetensorsReader reader(path.path);
  CHECK(reader.names() == std::vector<std::string>{"b", "w", "x"});
  CHECK(reader.metadata().at("note") == "example");
  CHECK(reader.shape("x") == std::vector<Index>{50, 3});
  CHECK(reader.dtype("w") == "F64");

  const Matrix<double> x = reader.read_matrix<double>("x");  // F32 converted to double
  REQUIRE(x.rows() == 50);
  CHECK(x(49, 2) == 492.0);
  const Matrix<float> rows = reader.read_rows<float>("x", 17, 5);
  REQUIRE(rows.rows() == 5);
  CHECK(rows(0, 0) == 170.0f);
  CHECK(rows(4, 1) == 211.0f);
  CHECK(reader.read_rows<float>("x", 50, 0).rows() == 0);  // an empty range at the end
  // A [2, 2, 2] tensor read by rows of its first dimension: 1 x 4.
  const Matrix<float> second = reader.read_rows<float>("w", 1, 1);
  CHECK(second == (Matrix<float>(1, 4) << 5, 6, 7, 8).finished());
  float some[3];
  reader.read_elements("w", 2, 3, some);
  CHECK((some[0] == 3.0f && some[1] == 4.0f && some[2] == 5.0f));
  CHECK(reader.read_bytes("b") == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("the reader refuses ranges outside a tensor and other dtypes", "[io][safetensors]") {
  test::TempPath path("reader_ranges");
  write_example(path.path, 8);
  SafetensorsReader reader(path.path);
  CHECK_THROWS_WITH(reader.read_rows<float>("x", 6, 3), Contains("rows [6, 9) of tensor 'x'") &&
                                                            Contains("it has 8") &&
                                                            Contains(path.path));
  CHECK_THROWS_AS(reader.read_rows<float>("x", -1, 2), FormatError);
  float out[4];
  CHECK_THROWS_WITH(reader.read_elements("w", 6, 4, out),
                    Contains("elements [6, 10) of tensor 'w'"));
  CHECK_THROWS_WITH(reader.read_vector<float>("b"), Contains("dtype I8"));
  CHECK_THROWS_WITH(reader.read_matrix<float>("w"), Contains("rank 3"));
  CHECK_THROWS_WITH(reader.read_matrix<float>("y"), Contains("no tensor named 'y'"));
}

TEST_CASE("a file truncated after it was opened is a FormatError naming the tensor",
          "[io][safetensors]") {
  test::TempPath path("reader_truncated");
  write_example(path.path, 4000);
  SafetensorsReader reader(path.path);  // the header was valid when it was read
  std::filesystem::resize_file(path.path, std::filesystem::file_size(path.path) - 100);
  CHECK_THROWS_WITH(reader.read_matrix<float>("x"),
                    Contains(path.path) && Contains("tensor 'x'") && Contains("ended early"));
  // Opened now, the header no longer describes the file.
  CHECK_THROWS_AS(SafetensorsReader(path.path), FormatError);
}
