// LanguageModel: embeddings, positions, Transformer and LM head in one class, with named
// parameters, exact gradients and a file that holds its configuration.
#include <catch2/catch.hpp>

#include "polygrad/io/language_model_file.hpp"
#include "polygrad/loss/cross_entropy.hpp"
#include "support/configs.hpp"
#include "support/finite_difference.hpp"
#include "support/temp_path.hpp"

using namespace polygrad;

namespace {

LanguageModelConfig tiny_config() {
  LanguageModelConfig c = test::small_language_model(7, 12);
  c.transformer.d_model = 8;
  c.transformer.d_ff = 12;
  c.transformer.qk_norm = 2.0;
  return c;
}

}  // namespace

TEST_CASE("LanguageModel names its parameters in order", "[layers][language_model]") {
  LanguageModel<float> model(tiny_config());
  const ParameterList<float> params = model.parameters();
  REQUIRE(params.size() == 2 + 2 * 16 + 2 + 1);
  CHECK(params.front().name == "tok_emb.weight");
  CHECK(params.front().shape == std::vector<Index>{7, 8});
  CHECK(params[1].name == "pos_emb.weight");
  CHECK(params[1].shape == std::vector<Index>{12, 8});
  CHECK(params[2].name == "transformer.blocks.0.ln1.weight");
  CHECK(params.back().name == "lm_head.weight");
  CHECK(params.back().shape == std::vector<Index>{7, 8});
}

TEST_CASE("LanguageModel gradients match central differences of the cross-entropy",
          "[layers][language_model]") {
  LanguageModel<double> model(tiny_config());
  std::mt19937_64 rng(7);
  test::randomize(model.parameters(), rng, 0.3);
  const std::vector<int> ids = {3, 0, 6, 6, 1};
  const std::vector<int> targets = {0, ignore_target, 6, 1, 2};
  const Index first = 4;  // positions 4..8
  const auto loss = [&] { return cross_entropy_loss(model.forward(ids, first), targets).value; };
  model.zero_grad();
  model.backward(cross_entropy_loss(model.forward(ids, first), targets).grad);
  for (const auto& p : model.parameters()) {
    INFO(p.name);
    const Vector<double> numeric = test::numeric_gradient(loss, p.value, p.size());
    const Vector<double> analytic = p.grads();
    // Unused embedding rows have exactly zero gradients on both sides.
    CHECK((numeric - analytic).norm() <= 1e-7 * std::max(1.0, analytic.norm()));
  }
}

TEST_CASE("LanguageModel refuses positions past its context and unknown tokens",
          "[layers][language_model]") {
  LanguageModel<double> model(tiny_config());
  CHECK_THROWS_WITH(model.forward(std::vector<int>(13, 1)),
                    Catch::Contains("positions 0 .. 12 do not fit its context of 12"));
  CHECK_THROWS_WITH(model.forward({1, 2}, 11), Catch::Contains("positions 11 .. 12"));
  CHECK_THROWS_WITH(model.forward({1, 7}), Catch::Contains("tok_emb: token id 7 at position 1"));
  LanguageModelConfig bad = tiny_config();
  bad.context = 0;
  CHECK_THROWS_AS(LanguageModel<double>(bad), ShapeError);
}

TEST_CASE("A LanguageModel file holds its configuration and restores the same logits",
          "[layers][language_model][io]") {
  LanguageModelConfig config = tiny_config();
  LanguageModel<float> model(config, nullptr, /*seed=*/42);
  const std::vector<int> ids = {1, 2, 3, 4, 5, 6};
  const Matrix<float> logits = model.forward(ids);
  const test::TempPath path("language_model.safetensors");
  save_language_model(path.path, model, {{"tokenizer", "bytes"}});

  LanguageModel<float> loaded = load_language_model<float>(path.path);
  CHECK(loaded.config().vocab == 7);
  CHECK(loaded.config().context == 12);
  CHECK(loaded.config().transformer.qk_norm == 2.0);
  CHECK(loaded.forward(ids) == logits);  // bit for bit
  CHECK(SafetensorsFile::read(path.path).metadata().at("tokenizer") == "bytes");

  LanguageModel<double> as_double = load_language_model<double>(path.path);
  CHECK(test::relative_error(as_double.forward(ids), logits.cast<double>()) <= 1e-6);

  CHECK_THROWS_WITH(save_language_model(path.path, model, {{"vocab", "9"}}),
                    Catch::Contains("would overwrite the model's configuration"));
  // Metadata that promises far more than the file holds is refused before anything is allocated.
  SafetensorsFile forged = SafetensorsFile::read(path.path);
  forged.metadata()["vocab"] = "1000000000";
  forged.write(path.path);
  CHECK_THROWS_WITH(load_language_model<float>(path.path),
                    Catch::Contains("the checkpoint is incomplete or corrupt"));
  save_transformer(path.path, model.transformer());
  CHECK_THROWS_WITH(load_language_model<float>(path.path),
                    Catch::Contains("not a LanguageModel file"));
}
