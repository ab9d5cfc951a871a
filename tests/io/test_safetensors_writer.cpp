// SafetensorsWriter: tensors streamed from matrices, raw bytes or generating functions give the
// same file as the in-memory SafetensorsFile; a failed write leaves neither the target nor the
// temporary behind.

#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <stdexcept>

#include "polygrad/io/safetensors.hpp"
#include "support/temp_path.hpp"

using namespace polygrad;
using Catch::Matchers::Contains;

namespace {

std::vector<std::uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("the writer streams the same file as SafetensorsFile builds", "[io][safetensors]") {
  // 300000 doubles: more than one megabyte, so the tensor goes out in several pieces.
  const Index n = 100000;
  Matrix<double> big(n, 3);
  for (Index i = 0; i < big.size(); ++i) big.data()[i] = 0.5 * double(i);
  const Vector<float> v = Vector<float>::LinSpaced(7, -1.0f, 2.0f);

  SafetensorsFile memory;
  memory.add("big", big);
  memory.add("v", v);
  const Matrix<float> threes = Matrix<float>::Constant(2, 5, 3.0f);
  memory.add<float>("generated", {2, 5}, threes.data());
  memory.add_raw("ids", "I16", {2}, {1, 0, 2, 0});
  memory.metadata()["k"] = "v";

  test::TempPath path("writer_stream");
  SafetensorsWriter writer(path.path);
  writer.add("big", big);
  writer.add("v", v);
  writer.add<float>("generated", {2, 5}, [](Index first, Index count, float* out) {
    REQUIRE(first + count <= 10);
    std::fill(out, out + count, 3.0f);
  });
  const std::vector<std::uint8_t> ids = {1, 0, 2, 0};
  writer.add_raw("ids", "I16", {2}, ids.data(), ids.size());
  writer.metadata()["k"] = "v";
  writer.write();
  CHECK(file_bytes(path.path) == memory.serialize());
  CHECK_FALSE(path.temporary_exists());
}

TEST_CASE("a failed write leaves nothing behind", "[io][safetensors]") {
  test::TempPath path("writer_failure");
  const Matrix<float> m = Matrix<float>::Ones(4, 4);
  SECTION("a source that throws part way") {
    SafetensorsWriter writer(path.path);
    writer.add("a", m);
    writer.add<float>("b", {300000}, [](Index first, Index, float*) {
      if (first > 0) throw std::runtime_error("the source failed");
    });
    CHECK_THROWS_WITH(writer.write(), Contains("the source failed"));
  }
  SECTION("a directory that does not exist") {
    test::TempPath missing("no_such_directory/file");
    SafetensorsWriter writer(missing.path);
    writer.add("a", m);
    CHECK_THROWS_WITH(writer.write(), Contains("cannot write") && Contains(missing.path));
    CHECK_FALSE(missing.exists());
  }
  CHECK_FALSE(path.exists());
  CHECK_FALSE(path.temporary_exists());
}

TEST_CASE("a failed write keeps the file that was there", "[io][safetensors]") {
  test::TempPath path("writer_keeps");
  SafetensorsFile old;
  old.add("old", Matrix<float>::Zero(2, 2));
  old.write(path.path);
  const auto before = file_bytes(path.path);
  SafetensorsWriter writer(path.path);
  writer.add<double>("x", {1000000}, [](Index, Index, double*) { throw FormatError("no values"); });
  CHECK_THROWS_AS(writer.write(), FormatError);
  CHECK(file_bytes(path.path) == before);
}

TEST_CASE("the writer refuses what cannot be written", "[io][safetensors]") {
  SafetensorsWriter writer("unused.safetensors");
  const std::vector<std::uint8_t> bytes = {1, 2, 3};
  CHECK_THROWS_WITH(writer.add_raw("a", "Q7", {3}, bytes.data(), 3), Contains("unknown dtype"));
  CHECK_THROWS_WITH(writer.add_raw("a", "I16", {3}, bytes.data(), 3), Contains("does not match"));
  CHECK_THROWS_AS(writer.add_raw("__metadata__", "U8", {3}, bytes.data(), 3), FormatError);
  CHECK_THROWS_AS(writer.add<float>("a", {-1, 2}, static_cast<const float*>(nullptr)), FormatError);
  CHECK_THROWS_WITH(writer.add<float>("a", {2, 2}, static_cast<const float*>(nullptr)),
                    Contains("no data given"));
  CHECK(writer.size() == 0);
}
