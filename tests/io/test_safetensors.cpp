#include <catch2/catch.hpp>

#include <random>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "polygrad/io/safetensors.hpp"
#include "support/problems.hpp"
#include "support/temp_path.hpp"

using namespace polygrad;
using Catch::Matchers::Contains;

namespace {

using test::TempPath;

/// A file from a literal header and data section, with the header length given explicitly
/// (so tests can lie about it).
std::vector<std::uint8_t> raw_file(const std::string& header, const std::vector<std::uint8_t>& data,
                                   std::uint64_t header_length) {
  std::vector<std::uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(header_length >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<std::uint8_t> raw_file(const std::string& header,
                                   const std::vector<std::uint8_t>& data = {}) {
  return raw_file(header, data, header.size());
}

SafetensorsFile parse_bytes(const std::vector<std::uint8_t>& bytes) {
  return SafetensorsFile::parse(bytes.data(), bytes.size());
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// Values with awkward bit patterns: signed zero, NaN with a payload, infinities, denormals.
template <class T>
std::vector<T> awkward_values() {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  std::vector<T> v = {T(1.5),
                      T(-0.0),
                      std::numeric_limits<T>::infinity(),
                      -std::numeric_limits<T>::infinity(),
                      std::numeric_limits<T>::denorm_min(),
                      std::numeric_limits<T>::max(),
                      T(0.1),
                      T(-3.25)};
  // A quiet NaN with a distinctive payload, and a negative one.
  U bits = 0;
  T nan = std::numeric_limits<T>::quiet_NaN();
  std::memcpy(&bits, &nan, sizeof(T));
  bits |= U(0x2d);
  std::memcpy(&nan, &bits, sizeof(T));
  v.push_back(nan);
  v.push_back(-nan);
  return v;
}

const std::vector<std::uint8_t> eight_bytes(8, 0);

}  // namespace

TEMPLATE_TEST_CASE("safetensors round trip is bit-exact", "[io][safetensors]", float, double) {
  using T = TestType;
  SafetensorsFile f;
  const std::vector<T> awkward = awkward_values<T>();
  f.add<T>("b.awkward", {2, 5}, awkward.data());
  std::mt19937_64 rng(1);
  Matrix<T> m = test::random_matrix(3, 7, rng).cast<T>();
  f.add("a.matrix", m);
  Vector<T> v = test::random_matrix(4, 1, rng).cast<T>();
  f.add("c.vector", v);
  const T scalar = T(2.5);
  f.add<T>("d.scalar", {}, &scalar);
  f.add<T>("e.empty", {0, 3}, nullptr);
  f.add<T>("f.empty3", {2, 0, 4}, nullptr);
  f.metadata()["layers"] = "2";
  f.metadata()["note"] = "unicode \xc3\xa9 and \"quotes\"";

  TempPath path("roundtrip");
  f.write(path.path);
  const auto bytes = f.serialize();
  for (const SafetensorsFile& g : {SafetensorsFile::read(path.path), parse_bytes(bytes)}) {
    CHECK(g.names() == std::vector<std::string>{"a.matrix", "b.awkward", "c.vector", "d.scalar",
                                                "e.empty", "f.empty3"});
    CHECK(g.metadata() == f.metadata());
    for (const auto& name : g.names()) {
      CHECK(g.dtype(name) == (sizeof(T) == 4 ? "F32" : "F64"));
      CHECK(g.shape(name) == f.shape(name));
      CHECK(g.tensor(name).bytes == f.tensor(name).bytes);
    }
    CHECK(same_bits(g.values<T>("b.awkward"), awkward));
    CHECK(g.matrix<T>("a.matrix") == m);
    CHECK(g.vector<T>("c.vector") == v);
    CHECK(g.values<T>("d.scalar") == std::vector<T>{scalar});
    CHECK(g.shape("d.scalar").empty());
    const Matrix<T> empty = g.matrix<T>("e.empty");
    CHECK(empty.rows() == 0);
    CHECK(empty.cols() == 3);
    CHECK(g.values<T>("f.empty3").empty());
  }
  // Writing what was read reproduces the file byte for byte.
  CHECK(SafetensorsFile::read(path.path).serialize() == bytes);
}

TEST_CASE("safetensors layout: padded header, sorted contiguous offsets", "[io][safetensors]") {
  SafetensorsFile f;
  const float a[3] = {1, 2, 3};
  const double b[2] = {4, 5};
  f.add<double>("zeta", {2}, b);
  f.add<float>("alpha", {3}, a);
  const auto bytes = f.serialize();
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 12 + 16);
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n);
  CHECK(header["alpha"]["data_offsets"] == nlohmann::json({0, 12}));
  CHECK(header["zeta"]["data_offsets"] == nlohmann::json({12, 28}));
  CHECK(header["zeta"]["dtype"] == "F64");
  CHECK(!header.contains("__metadata__"));
  // The data section is the raw little-endian values.
  float first = 0;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  CHECK(first == 1.0f);
}

TEST_CASE("safetensors converts between F32 and F64 on request", "[io][safetensors]") {
  SafetensorsFile f;
  std::mt19937_64 rng(2);
  const Matrix<float> mf = test::random_matrix(4, 3, rng).cast<float>();
  const Matrix<double> md = test::random_matrix(2, 5, rng, 1e-3);
  f.add("f", mf);
  f.add("d", md);
  const double huge[3] = {1e300, -1e300, std::nan("")};
  f.add<double>("huge", {3}, huge);
  const auto g = parse_bytes(f.serialize());

  CHECK(g.matrix<double>("f") == mf.cast<double>());  // widening is exact
  CHECK(g.matrix<float>("d") == md.cast<float>());    // narrowing rounds to nearest
  const auto narrowed = g.values<float>("huge");
  CHECK(narrowed[0] == std::numeric_limits<float>::infinity());
  CHECK(narrowed[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(narrowed[2]));
}

TEST_CASE("safetensors keeps other dtypes as bytes but refuses to convert them",
          "[io][safetensors]") {
  SafetensorsFile f;
  f.add_raw("bf", "BF16", {2}, {0x80, 0x3f, 0x00, 0x40});
  f.add_raw("ids", "I64", {1}, std::vector<std::uint8_t>(8, 1));
  const auto g = parse_bytes(f.serialize());
  CHECK(g.tensor("bf").bytes == f.tensor("bf").bytes);
  CHECK(g.dtype("ids") == "I64");
  CHECK_THROWS_AS(g.values<float>("bf"), FormatError);
  CHECK_THROWS_WITH(g.values<double>("ids"), Contains("dtype I64") && Contains("F32 and F64"));
  CHECK_THROWS_AS(f.add_raw("x", "F17", {1}, {0}), FormatError);
  CHECK_THROWS_AS(f.add_raw("x", "F32", {2}, {0, 0, 0, 0}), FormatError);
  CHECK_THROWS_AS(f.add_raw("__metadata__", "U8", {1}, {0}), FormatError);
}

TEST_CASE("safetensors accessors report missing tensors and wrong ranks", "[io][safetensors]") {
  SafetensorsFile f;
  const double x[6] = {1, 2, 3, 4, 5, 6};
  f.add<double>("weights", {6}, x);
  f.add<double>("cube", {1, 2, 3}, x);
  const auto g =
      SafetensorsFile::parse(f.serialize().data(), f.serialize().size(), "m.safetensors");
  CHECK_FALSE(g.has("bias"));
  CHECK_THROWS_AS(g.matrix<double>("bias"), FormatError);
  CHECK_THROWS_WITH(g.values<float>("bias"), Contains("m.safetensors") && Contains("'bias'") &&
                                                 Contains("cube") && Contains("weights"));
  CHECK_THROWS_WITH(g.matrix<double>("cube"), Contains("rank 3") && Contains("rank 2"));
  CHECK_THROWS_WITH(g.vector<float>("cube"), Contains("[1, 2, 3]"));
  CHECK_THROWS_AS(g.matrix<float>("weights"), FormatError);
  CHECK(g.vector<float>("weights").size() == 6);
}

TEST_CASE("safetensors rejects truncated files and bad header lengths", "[io][safetensors]") {
  CHECK_THROWS_WITH(parse_bytes({1, 2, 3}), Contains("shorter than the 8-byte"));
  CHECK_THROWS_WITH(parse_bytes({}), Contains("shorter than the 8-byte"));
  // Header length past the end of the file.
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  CHECK_THROWS_WITH(parse_bytes(raw_file(header, {0, 0, 0, 0}, header.size() + 5)),
                    Contains("past the end of the file"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(header, {}, ~std::uint64_t(0))),
                    Contains("absurdly large"));
  // Data section cut short: the tensor's offsets reach past its end.
  CHECK_THROWS_WITH(parse_bytes(raw_file(header, {0, 0})), Contains("past the end of the data"));
  // A well-formed file for comparison.
  CHECK(parse_bytes(raw_file(header, {0, 0, 0, 0})).values<float>("a") == std::vector<float>{0});

  // A truncated file on disk.
  SafetensorsFile f;
  std::mt19937_64 rng(3);
  const Matrix<double> m = test::random_matrix(5, 5, rng);
  f.add("m", m);
  auto bytes = f.serialize();
  bytes.resize(bytes.size() - 3);
  TempPath path("truncated");
  std::ofstream(path.path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  CHECK_THROWS_WITH(SafetensorsFile::read(path.path),
                    Contains(path.path) && Contains("past the end of the data"));
  std::ofstream(path.path, std::ios::binary).write("abc", 3);
  CHECK_THROWS_WITH(SafetensorsFile::read(path.path), Contains("shorter than the 8-byte"));
}

TEST_CASE("safetensors rejects missing files and directories", "[io][safetensors]") {
  CHECK_THROWS_WITH(SafetensorsFile::read("/nonexistent/polygrad/x.safetensors"),
                    Contains("no such file") && Contains("/nonexistent/polygrad/x.safetensors"));
  CHECK_THROWS_WITH(SafetensorsFile::read(std::filesystem::temp_directory_path().string()),
                    Contains("directory"));
  SafetensorsFile f;
  CHECK_THROWS_AS(f.write("/nonexistent/polygrad/x.safetensors"), FormatError);
}

TEST_CASE("safetensors rejects malformed headers", "[io][safetensors]") {
  const std::vector<std::uint8_t> four(4, 0);
  CHECK_THROWS_WITH(parse_bytes(raw_file("{\"a\": [1, 2")), Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse_bytes(raw_file("\x01\x02garbage")), Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse_bytes(raw_file("[1, 2, 3]")), Contains("must be a JSON object"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(std::string(100, '[') + std::string(100, ']'))),
                    Contains("deeper than"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"a": 3})")), Contains("'a'") && Contains("object"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", four)),
                    Contains("no \"dtype\""));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", four)),
                    Contains("no \"shape\""));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", four)),
                    Contains("no \"data_offsets\""));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", four)),
      Contains("\"dtype\" must be a string"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", four)),
      Contains("\"shape\" must be an array"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four)),
      Contains("non-negative integers"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", four)),
      Contains("non-negative integers"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", four)),
      Contains("[begin, end]"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", four)),
      Contains("end before they begin"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"__metadata__":{"k":1}})")),
                    Contains("must be a string"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"__metadata__":[]})")), Contains("object of strings"));
}

TEST_CASE("safetensors rejects unknown dtypes, naming the supported ones", "[io][safetensors]") {
  const std::vector<std::uint8_t> four(4, 0);
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", four)),
      Contains("unknown dtype \"F31\"") && Contains("F32") && Contains("BF16"));
}

TEST_CASE("safetensors rejects sizes that disagree with shapes", "[io][safetensors]") {
  const std::vector<std::uint8_t> eight(8, 0);
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight)),
      Contains("needs 12 bytes") && Contains("hold 8"));
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", eight)),
      Contains("needs 16 bytes"));
  // A product that overflows 64 bits must not wrap around to a small size.
  CHECK_THROWS_WITH(
      parse_bytes(raw_file(
          R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,1073741824],"data_offsets":[0,0]}})")),
      Contains("overflows"));
  CHECK_THROWS_AS(
      parse_bytes(
          raw_file(R"({"a":{"dtype":"U8","shape":[4611686018427387904,4],"data_offsets":[0,0]}})")),
      FormatError);
}

TEST_CASE("safetensors rejects overlapping offsets, gaps and trailing bytes", "[io][safetensors]") {
  CHECK_THROWS_WITH(parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                              "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                         eight_bytes)),
                    Contains("overlaps") && Contains("'a'") && Contains("'b'"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(
                        R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight_bytes)),
                    Contains("belong to no tensor"));
  CHECK_THROWS_WITH(parse_bytes(raw_file(
                        R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight_bytes)),
                    Contains("cover only 4"));
  // Two views of the same bytes are an overlap too.
  CHECK_THROWS_AS(parse_bytes(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                              "b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                       eight_bytes)),
                  FormatError);
  // Out of order in the header but tiling the data: valid.
  const auto ok = parse_bytes(raw_file(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
                                           "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                       eight_bytes));
  CHECK(ok.size() == 2);
}

TEST_CASE("safetensors add validates shapes and data", "[io][safetensors]") {
  SafetensorsFile f;
  const float x[2] = {1, 2};
  CHECK_THROWS_AS(f.add<float>("x", {-1, 2}, x), FormatError);
  CHECK_THROWS_AS(f.add<float>("x", {2}, nullptr), FormatError);
  f.add<float>("x", {2}, x);
  f.add<float>("x", {1}, x);  // replaces
  CHECK(f.shape("x") == std::vector<Index>{1});
  f.remove("x");
  CHECK(f.size() == 0);
  CHECK_THROWS_WITH(f.tensor("x"), Contains("holds no tensors"));
}
