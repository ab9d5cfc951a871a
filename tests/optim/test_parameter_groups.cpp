// Parameter groups: AdamW's weight decay applies to the weights of linear maps and, by default,
// to nothing else (not biases, LayerNorm gains and shifts, embeddings).
#include <catch2/catch.hpp>

#include <map>

#include "polygrad/layers/language_model.hpp"
#include "polygrad/optim/adamw.hpp"
#include "support/configs.hpp"

using namespace polygrad;

namespace {

LanguageModelConfig tiny_config() {
  LanguageModelConfig c = test::small_language_model(11, 8);
  c.transformer.layers = 1;
  c.transformer.d_model = 8;
  c.transformer.d_ff = 16;
  return c;
}

}  // namespace

TEST_CASE("Layers say what each parameter is", "[optim][groups]") {
  LanguageModel<double> model(tiny_config());
  std::map<std::string, ParameterRole> role;
  for (const auto& p : model.parameters()) role[p.name] = p.role;
  CHECK(role.at("tok_emb.weight") == ParameterRole::embedding);
  CHECK(role.at("pos_emb.weight") == ParameterRole::embedding);
  CHECK(role.at("transformer.blocks.0.ln1.weight") == ParameterRole::norm);
  CHECK(role.at("transformer.blocks.0.ln2.bias") == ParameterRole::norm);
  CHECK(role.at("transformer.ln_f.weight") == ParameterRole::norm);
  CHECK(role.at("transformer.blocks.0.attn.q.weight") == ParameterRole::matrix);
  CHECK(role.at("transformer.blocks.0.attn.q.bias") == ParameterRole::bias);
  CHECK(role.at("transformer.blocks.0.mlp.fc1.weight") == ParameterRole::matrix);
  CHECK(role.at("transformer.blocks.0.mlp.fc2.bias") == ParameterRole::bias);
  CHECK(role.at("lm_head.weight") == ParameterRole::matrix);
  CHECK(std::string(to_string(ParameterRole::norm)) == "norm");
}

TEST_CASE("AdamW decays only the weights of linear maps by default", "[optim][groups]") {
  LanguageModel<double> model(tiny_config());
  const ParameterList<double> params = model.parameters();
  for (const auto& p : params) p.values().setConstant(0.5);  // every parameter non-zero
  model.zero_grad();  // zero gradients: a step moves a parameter by its decay alone
  AdamWOptions options;
  options.lr = 0.1;
  options.weight_decay = 0.2;

  SECTION("the default: matrices") {
    AdamW<double> optimiser(params, options);
    optimiser.step();
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      INFO(p.name);
      const bool matrix = p.role == ParameterRole::matrix;
      CHECK(optimiser.decays(i) == matrix);
      const double expected = matrix ? 0.5 * (1 - 0.1 * 0.2) : 0.5;
      CHECK(p.values().isConstant(expected, 1e-15));
    }
  }
  SECTION("DecayOn::all decays everything, as one PyTorch parameter group") {
    options.decay_on = DecayOn::all;
    AdamW<double> optimiser(params, options);
    optimiser.step();
    for (const auto& p : params) {
      INFO(p.name);
      CHECK(p.values().isConstant(0.5 * (1 - 0.1 * 0.2), 1e-15));
    }
  }
}
