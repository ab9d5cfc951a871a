#include <catch2/catch.hpp>

#include "polygrad/attention/naive.hpp"
#include "polygrad/layers/block.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

TEST_CASE("TransformerBlock gradients match central differences", "[layers][block]") {
  std::mt19937_64 rng(51);
  for (bool causal : {false, true}) {
    TransformerConfig config;
    config.d_model = 6;
    config.heads = 2;
    config.d_ff = 8;
    config.causal = causal;
    if (!causal) config.qk_norm = 2.0;
    TransformerBlock<double> block(config, std::make_shared<NaiveAttention<double>>());
    ParameterList<double> params;
    block.collect_parameters("b", params);
    REQUIRE(params.size() == 16);
    test::randomize(params, rng);
    const Matrix<double> x = test::random_matrix(5, 6, rng);
    INFO("causal " << causal);
    test::require_small(test::check_layer_gradients(block, x, params, rng));
  }
}

TEST_CASE("TransformerBlock is x + MHA(LN1(x)) then h + MLP(LN2(h))", "[layers][block]") {
  std::mt19937_64 rng(52);
  TransformerConfig config;
  config.d_model = 4;
  config.heads = 2;
  config.d_ff = 6;
  TransformerBlock<double> block(config, std::make_shared<NaiveAttention<double>>());
  ParameterList<double> params;
  block.collect_parameters("", params);
  test::randomize(params, rng);
  const Matrix<double> x = test::random_matrix(3, 4, rng);
  const Matrix<double> y = block.forward(x);
  // The sublayers, called one by one, give the same output.
  const Matrix<double> h = x + block.attn().forward(block.ln1().forward(x));
  const Matrix<double> expected = h + block.mlp().forward(block.ln2().forward(h));
  CHECK(test::relative_error(y, expected) < 1e-15);
  CHECK_THROWS_AS(block.forward(Matrix<double>::Zero(3, 5)), ShapeError);
}
