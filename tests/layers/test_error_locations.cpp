// Errors raised inside a model name the tensor, the layer and the row (design.md section 7).
#include <catch2/catch.hpp>

#include <limits>

#include "polygrad/layers/transformer.hpp"
#include "support/configs.hpp"

using namespace polygrad;

namespace {

TransformerConfig four_layers() {
  TransformerConfig config = test::small_transformer();
  config.layers = 4;
  return config;
}

template <class T>
Matrix<T> random_input(Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Matrix<T> x(n, 16);
  detail::fill_normal(x, rng, 1.0);
  return x;
}

template <class T>
ParameterView<T> parameter(Transformer<T>& model, const std::string& name) {
  for (const auto& p : model.parameters())
    if (p.name == name) return p;
  FAIL("no parameter " << name);
  return {};
}

template <class E>
E thrown_by(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  FAIL("no exception of the expected type");
  throw;
}

}  // namespace

TEST_CASE("NaN in a model's input: the error names the input and its row", "[layers][error]") {
  Transformer<double> model(four_layers());
  Matrix<double> x = random_input<double>(24, 1);
  x(17, 3) = std::numeric_limits<double>::quiet_NaN();
  const auto e = thrown_by<NumericError>([&] { model.forward(x); });
  CHECK_THAT(e.what(), Catch::StartsWith("Transformer input contains NaN at row 17 (column 3)"));
}

TEST_CASE("NaN in a weight: the error names the parameter, its layer and its row",
          "[layers][error]") {
  Transformer<double> model(four_layers());
  const auto w = parameter(model, "blocks.2.attn.q.weight");  // [16, 16], row-major
  w.value[5 * 16 + 1] = std::numeric_limits<double>::quiet_NaN();
  const auto e = thrown_by<NumericError>([&] { model.forward(random_input<double>(24, 2)); });
  CHECK_THAT(e.what(), Catch::StartsWith("parameter 'blocks.2.attn.q.weight' contains NaN at row 5 "
                                         "(column 1)"));
}

TEST_CASE("an overflow inside a block names the block, the layer, the tensor and the row",
          "[layers][error]") {
  // Row 17 of the input is a spike in column 6, which LayerNorm maps to sqrt(15) ~ 3.9 there;
  // every other row has column 6 at its own mean, which LayerNorm maps to about 0. A weight of
  // 1e38 on column 6 of block 2's query projection then overflows float in row 17 only.
  Transformer<float> model(four_layers());
  Matrix<float> x = random_input<float>(24, 3);
  for (Index i = 0; i < x.rows(); ++i) {
    x(i, 6) = 0;
    x(i, 6) = x.row(i).sum() / 15;
  }
  x.row(17).setZero();
  x(17, 6) = 5;
  const auto w = parameter(model, "blocks.2.attn.q.weight");
  w.value[0 * 16 + 6] = 1e38f;
  const auto e = thrown_by<NumericError>([&] { model.forward(x); });
  CHECK(e.where() == "blocks.2.attn");
  CHECK_THAT(e.what(),
             Catch::StartsWith("blocks.2.attn: Q contains infinity at row 17 (column 0)"));
}

TEST_CASE("NaN in the output gradient: the error names it and its row", "[layers][error]") {
  Transformer<double> model(four_layers());
  model.forward(random_input<double>(24, 4));
  Matrix<double> dy = Matrix<double>::Ones(24, 16);
  dy(9, 2) = std::numeric_limits<double>::quiet_NaN();
  const auto e = thrown_by<NumericError>([&] { model.backward(dy); });
  CHECK_THAT(e.what(), Catch::StartsWith("Transformer output gradient contains NaN at row 9 "
                                         "(column 2)"));
}
