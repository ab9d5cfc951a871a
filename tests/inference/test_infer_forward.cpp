// infer_logits: the logits of LanguageModel::forward (and forward_packed) with nothing kept for
// a backward pass, leaving the model as it was.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "polygrad/attention/factory.hpp"
#include "polygrad/inference/forward.hpp"
#include "support/compare.hpp"
#include "support/configs.hpp"

using namespace polygrad;

namespace {

LanguageModelConfig small_model(bool causal) {
  LanguageModelConfig c = test::small_language_model(11, 300);
  c.transformer.causal = causal;
  c.transformer.qk_norm = 2.0;
  return c;
}

std::vector<int> random_tokens(Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int& id : ids) id = int(rng() % 11);
  return ids;
}

/// The method `name` of the factory, with the backward route `route` when it is polynomial.
std::shared_ptr<const AttentionMethod<double>> method_named(const std::string& name,
                                                            PolyRoute route = PolyRoute::adjoint) {
  PolyOptions options;
  options.route = route;
  return make_attention<double>(name, options);
}

}  // namespace

TEST_CASE("infer_logits gives forward's logits, for one sequence and for a packed batch",
          "[inference][forward]") {
  const std::vector<int> ids = random_tokens(402, 31);
  const SequenceOffsets offsets = offsets_of_lengths({1, 37, 64, 300});
  for (const bool causal : {true, false}) {
    for (const auto& [name, route] :
         std::vector<std::pair<std::string, PolyRoute>>{{"exact", PolyRoute::adjoint},
                                                        {"poly", PolyRoute::adjoint},
                                                        {"poly", PolyRoute::paper}}) {
      INFO((causal ? "causal " : "bidirectional ") << name << " " << to_string(route));
      LanguageModel<double> model(small_model(causal), method_named(name, route));
      model.init(32, 0.3);
      const std::vector<int> one(ids.begin(), ids.begin() + 300);
      CHECK(test::relative_error(infer_logits(model, one), model.forward(one)) <= 1e-12);
      CHECK(test::relative_error(infer_logits(model, ids, offsets),
                                 model.forward_packed(ids, offsets)) <= 1e-12);
    }
  }
}

TEST_CASE("infer_logits keeps nothing and changes nothing", "[inference][forward]") {
  const std::vector<int> ids = random_tokens(120, 33), other = random_tokens(90, 34);
  LanguageModel<double> model(small_model(true), method_named("poly"));
  model.init(35, 0.3);
  LanguageModel<double> twin(small_model(true), method_named("poly"));
  twin.init(35, 0.3);
  // A forward pass, an inference pass on other tokens with another method, then the backward:
  // the gradients are those of the forward pass alone.
  const Matrix<double> logits = model.forward(ids);
  const Matrix<double> with_exact = infer_logits(model, other, {}, method_named("exact"));
  model.backward(logits);
  twin.backward(twin.forward(ids));
  const ParameterList<double> got = model.parameters(), want = twin.parameters();
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].grads() == want[i].grads());
  // The method given replaced the model's for that call only.
  CHECK(model.transformer().block(0).attn().attention().name() == "poly");
  LanguageModel<double> exact(small_model(true));
  exact.init(35, 0.3);
  CHECK(test::relative_error(with_exact, exact.forward(other)) <= 1e-12);
  CHECK(test::relative_error(infer_logits(model, other), with_exact) > 1e-8);  // poly is not exact
}

TEST_CASE("infer_logits refuses bad tokens, offsets and parameters", "[inference][forward]") {
  LanguageModel<float> model(small_model(true));
  CHECK_THROWS_AS(infer_logits(model, {}), ShapeError);
  CHECK_THROWS_WITH(infer_logits(model, {1, 11}),
                    Catch::Contains("token id 11 (row 1) is outside the vocabulary"));
  CHECK_THROWS_WITH(infer_logits(model, std::vector<int>(301, 1)),
                    Catch::Contains("more than its context of 300"));
  CHECK_THROWS_AS(infer_logits(model, std::vector<int>(10, 1), {0, 4, 9}), ShapeError);
  model.parameters()[3].values()(0) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(infer_logits(model, {1, 2}), NumericError);
}
