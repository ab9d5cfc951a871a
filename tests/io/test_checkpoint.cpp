#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <string>

#include "polygrad/io/checkpoint.hpp"
#include "support/configs.hpp"
#include "support/temp_path.hpp"

using namespace polygrad;
using Catch::Matchers::Contains;

namespace {

using test::TempPath;

TransformerConfig small_config() {
  TransformerConfig c = test::small_transformer();
  c.d_model = 8;
  c.d_ff = 12;
  return c;
}

/// Every parameter (LayerNorm gains and biases included) set to distinct random values, so that
/// a load that skipped or swapped a tensor shows.
template <class T>
void randomise(Transformer<T>& model, unsigned seed) {
  std::mt19937_64 rng(seed);
  for (const auto& p : model.parameters()) {
    auto values = p.values();
    detail::fill_normal(values, rng, 0.3);
  }
}

template <class T>
Matrix<T> random_input(Index n, Index d, unsigned seed) {
  std::mt19937_64 rng(seed);
  Matrix<T> x(n, d);
  detail::fill_normal(x, rng, 1.0);
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("a saved Transformer loads with identical parameters and outputs",
                   "[io][checkpoint]", float, double) {
  using T = TestType;
  TransformerConfig config = small_config();
  config.scale = 0.3;  // not representable in binary: must round-trip through the metadata
  Transformer<T> model(config);
  randomise(model, 7);
  TempPath path("model");
  save_transformer(path.path, model);

  Transformer<T> loaded = load_transformer<T>(path.path);
  CHECK(loaded.config().layers == config.layers);
  CHECK(loaded.config().d_model == config.d_model);
  CHECK(loaded.config().heads == config.heads);
  CHECK(loaded.config().d_ff == config.d_ff);
  CHECK(loaded.config().causal == config.causal);
  REQUIRE(loaded.config().scale.has_value());
  CHECK(*loaded.config().scale == *config.scale);
  CHECK_FALSE(loaded.config().qk_norm.has_value());

  const auto a = model.parameters(), b = loaded.parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].name == b[i].name);
    CHECK(a[i].shape == b[i].shape);
    CHECK(a[i].values() == b[i].values());
  }
  const Matrix<T> x = random_input<T>(5, config.d_model, 11);
  CHECK(model.forward(x) == loaded.forward(x));

  // The file records the configuration as strings.
  const auto file = SafetensorsFile::read(path.path);
  CHECK(file.metadata().at("causal") == "true");
  CHECK(file.metadata().at("d_ff") == "12");
  CHECK(file.dtype("blocks.0.attn.q.weight") == (sizeof(T) == 4 ? "F32" : "F64"));
  CHECK(file.shape("blocks.1.mlp.fc1.weight") == std::vector<Index>{12, 8});
}

TEST_CASE("a checkpoint saved in double loads as float and vice versa", "[io][checkpoint]") {
  TransformerConfig config = small_config();
  config.causal = false;
  config.qk_norm = 2.5;
  Transformer<double> model(config);
  randomise(model, 3);
  TempPath path("model_double");
  save_transformer(path.path, model);
  Transformer<float> as_float = load_transformer<float>(path.path);
  CHECK(*as_float.config().qk_norm == 2.5);
  CHECK_FALSE(as_float.config().causal);
  const auto a = model.parameters();
  const auto b = as_float.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].values().cast<float>() == b[i].values());

  TempPath path_float("model_float");
  save_transformer(path_float.path, as_float);
  Transformer<double> back = load_transformer<double>(path_float.path);
  const auto c = back.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i].values().cast<double>() == c[i].values());
}

TEST_CASE("loading rejects missing, misshapen and unexpected tensors", "[io][checkpoint]") {
  Transformer<double> model(small_config());
  TempPath good("good"), bad("bad");
  save_transformer(good.path, model);
  const SafetensorsFile original = SafetensorsFile::read(good.path);

  SECTION("missing tensor") {
    SafetensorsFile f = original;
    f.remove("blocks.1.attn.v.bias");
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("missing") &&
                                                              Contains("blocks.1.attn.v.bias") &&
                                                              Contains(bad.path));
  }
  SECTION("wrong shape") {
    SafetensorsFile f = original;
    const std::vector<double> v(16, 0.0);
    f.add<double>("blocks.0.ln1.weight", {16}, v.data());
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path),
                      Contains("blocks.0.ln1.weight") && Contains("[16]") && Contains("[8]"));
  }
  SECTION("unexpected extra tensor") {
    SafetensorsFile f = original;
    const double one = 1;
    f.add<double>("blocks.2.ln1.weight", {1}, &one);
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path),
                      Contains("unexpected") && Contains("blocks.2.ln1.weight"));
  }
  SECTION("wrong dtype") {
    SafetensorsFile f = original;
    f.add_raw("ln_f.weight", "I64", {8}, std::vector<std::uint8_t>(64, 0));
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("I64"));
  }
  SECTION("metadata missing or malformed") {
    SafetensorsFile f = original;
    f.metadata().erase("heads");
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("\"heads\""));
    f = original;
    f.metadata()["causal"] = "yes";
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("causal"));
    f = original;
    f.metadata()["d_model"] = "8x";
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("integer"));
    f = original;
    f.metadata()["heads"] = "3";
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("invalid model"));
    f = original;
    f.metadata()["scale"] = "fast";
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("must be a number"));
    // Metadata claiming a huge model must fail cleanly rather than try to allocate it.
    f = original;
    f.metadata()["d_model"] = "1000000000";
    f.metadata()["heads"] = "1";
    f.write(bad.path);
    CHECK_THROWS_WITH(load_transformer<double>(bad.path), Contains("holds only"));
  }
}

TEMPLATE_TEST_CASE("parameter lists round-trip, and a failed load changes nothing",
                   "[io][checkpoint]", float, double) {
  using T = TestType;
  Transformer<T> model(small_config());
  randomise(model, 5);
  TempPath path("params");
  save_parameters(path.path, model.parameters(), {{"step", "42"}});

  Transformer<T> other(small_config());
  const auto metadata = load_parameters(path.path, other.parameters());
  CHECK(metadata.at("step") == "42");
  const auto a = model.parameters(), b = other.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].values() == b[i].values());

  // Gradients are stored under a prefix, beside the values, and restored from it.
  std::mt19937_64 rng(9);
  for (const auto& p : a) {
    auto grads = p.grads();
    detail::fill_normal(grads, rng, 1.0);
  }
  SafetensorsFile both;
  store_parameters(both, a);
  store_parameters(both, a, "grad.", ParameterBuffer::gradients);
  CHECK(both.size() == 2 * a.size());
  zero_grad(b);
  restore_parameters(both, b, "grad.", ParameterBuffer::gradients);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].grads() == b[i].grads());

  // A mismatch found late must not leave half the parameters overwritten.
  Transformer<T> fresh(small_config());
  const auto before = fresh.parameters()[0].values().eval();
  SafetensorsFile partial = SafetensorsFile::read(path.path);
  partial.remove(a.back().name);
  CHECK_THROWS_AS(restore_parameters(partial, fresh.parameters()), FormatError);
  CHECK(fresh.parameters()[0].values() == before);

  // Duplicate names cannot be stored.
  ParameterList<T> twice = {a[0], a[0]};
  SafetensorsFile f;
  CHECK_THROWS_WITH(store_parameters(f, twice), Contains("twice"));
}
