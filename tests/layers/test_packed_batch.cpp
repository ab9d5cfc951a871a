// A packed batch of sequences (attention/packed.hpp) is the per-sequence loop done at once:
// the same outputs and gradients, and no sequence sees another.
#include <catch2/catch.hpp>

#include <map>

#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/language_model.hpp"
#include "polygrad/loss/cross_entropy.hpp"
#include "support/configs.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

const std::vector<Index> lengths = {1, 37, 64, 300};

TransformerConfig small_config(bool causal) {
  TransformerConfig c = test::small_transformer();
  c.d_ff = 24;
  c.causal = causal;
  // Causal polynomial attention needs a bound known before the data: QK normalisation. The
  // bidirectional models plan every (sequence, head) from its own queries and keys.
  if (causal) c.qk_norm = 2.0;
  return c;
}

using Method = std::shared_ptr<const AttentionMethod<double>>;

std::vector<std::pair<std::string, Method>> methods() {
  PolyOptions adjoint, paper;
  adjoint.degree = paper.degree = 5;
  adjoint.chunk = paper.chunk = 16;
  paper.route = PolyRoute::paper;
  return {{"exact", nullptr},
          {"poly adjoint", std::make_shared<PolyAttention<double>>(adjoint)},
          {"poly paper", std::make_shared<PolyAttention<double>>(paper)}};
}

using Tensors = std::map<std::string, Matrix<double>>;

/// Output, input gradient and every parameter gradient of one packed pass.
Tensors packed_pass(Transformer<double>& model, const Matrix<double>& x, const Matrix<double>& dy,
                    const SequenceOffsets& offsets) {
  Tensors out;
  model.zero_grad();
  out["output"] = model.forward(x, offsets);
  out["input"] = model.backward(dy);
  for (const auto& p : model.parameters()) out[p.name] = p.grads();
  return out;
}

/// The same from one pass per sequence, the parameter gradients summed over the sequences.
Tensors loop_pass(Transformer<double>& model, const Matrix<double>& x, const Matrix<double>& dy,
                  const SequenceOffsets& offsets) {
  Tensors out;
  out["output"].resize(x.rows(), x.cols());
  out["input"].resize(x.rows(), x.cols());
  model.zero_grad();
  for (std::size_t b = 0; b + 1 < offsets.size(); ++b) {
    const Index begin = offsets[b], rows = offsets[b + 1] - begin;
    out["output"].middleRows(begin, rows) = model.forward(x.middleRows(begin, rows));
    out["input"].middleRows(begin, rows) = model.backward(dy.middleRows(begin, rows));
  }
  for (const auto& p : model.parameters()) out[p.name] = p.grads();
  return out;
}

/// Every tensor of a within `tolerance` of b's, relative to its norm. The key bias's gradient
/// is zero in exact arithmetic (softmax ignores a shift of a score row), so both sides hold
/// only rounding noise there, summed in different orders; it is compared relative to 1e-3 of
/// the largest gradient instead.
void require_same(const Tensors& a, const Tensors& b, double tolerance) {
  double largest = 0;
  for (const auto& [name, value] : b) largest = std::max(largest, value.norm());
  for (const auto& [name, value] : a) {
    INFO("tensor " << name);
    const Matrix<double>& reference = b.at(name);
    const bool vanishing = name.find("attn.k.bias") != std::string::npos;
    const double scale = vanishing ? std::max(reference.norm(), 1e-3 * largest) : reference.norm();
    CHECK((value - reference).norm() <= tolerance * scale);
  }
}

}  // namespace

/// Calls check(model, label) for a 2-thread model of every method, causal and not, initialised
/// from `seed`.
template <class Check>
void for_each_model(std::uint64_t seed, Check&& check) {
  for (const bool causal : {true, false}) {
    for (const auto& [label, method] : methods()) {
      INFO("attention " << label << (causal ? ", causal" : ", bidirectional"));
      Transformer<double> model(small_config(causal), method);
      model.init(seed, 0.3);
      model.set_threading(Threading{2, 0.0});
      check(model);
    }
  }
}

TEST_CASE("packed batch gradients equal the per-sequence loop's", "[layers][packed]") {
  std::mt19937_64 rng(11);
  const SequenceOffsets offsets = offsets_of_lengths(lengths);
  const Index n = offsets.back();
  for_each_model(5, [&](Transformer<double>& model) {
    const Matrix<double> x = test::random_matrix(n, 16, rng);
    const Matrix<double> dy = test::random_matrix(n, 16, rng);
    const Tensors packed = packed_pass(model, x, dy, offsets);
    // One plan per sequence and head, each for its own length.
    const auto plans = model.attention_plans().front();
    REQUIRE(plans.size() == 2 * lengths.size());
    for (std::size_t i = 0; i < plans.size(); ++i) CHECK(plans[i].n == lengths[i / 2]);
    require_same(packed, loop_pass(model, x, dy, offsets), 1e-12);
  });
}

TEST_CASE("changing one sequence of a packed batch changes no other", "[layers][packed]") {
  std::mt19937_64 rng(12);
  const SequenceOffsets offsets = offsets_of_lengths(lengths);
  const Index n = offsets.back();
  for_each_model(6, [&](Transformer<double>& model) {
    Matrix<double> x = test::random_matrix(n, 16, rng);
    const Matrix<double> dy = test::random_matrix(n, 16, rng);
    const Matrix<double> y = model.forward(x, offsets);
    const Matrix<double> dx = model.backward(dy);
    x.middleRows(offsets[2], lengths[2]) = test::random_matrix(lengths[2], 16, rng);  // sequence 2
    const Matrix<double> y2 = model.forward(x, offsets);
    const Matrix<double> dx2 = model.backward(dy);
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      INFO("sequence " << b);
      const Index begin = offsets[b], rows = lengths[b];
      const bool same_output = y2.middleRows(begin, rows) == y.middleRows(begin, rows);
      const bool same_gradient = dx2.middleRows(begin, rows) == dx.middleRows(begin, rows);
      CHECK(same_output == (b != 2));
      CHECK(same_gradient == (b != 2));
    }
  });
}

TEST_CASE("LanguageModel::forward_packed restarts the positions of every sequence",
          "[layers][packed]") {
  LanguageModelConfig config;
  config.vocab = 11;
  config.context = 40;
  config.transformer = small_config(true);
  LanguageModel<double> model(config);
  model.init(7, 0.3);
  std::mt19937_64 rng(13);
  const std::vector<Index> sizes = {1, 37, 40, 9};
  const SequenceOffsets offsets = offsets_of_lengths(sizes);
  std::vector<int> ids(std::size_t(offsets.back())), targets(ids.size());
  for (auto& id : ids) id = int(rng() % 11);
  for (auto& t : targets) t = rng() % 5 == 0 ? ignore_target : int(rng() % 11);

  model.zero_grad();
  const Matrix<double> logits = model.forward_packed(ids, offsets);
  const auto loss = cross_entropy_loss(logits, targets);
  model.backward(loss.grad);
  Tensors packed;
  for (const auto& p : model.parameters()) packed[p.name] = p.grads();

  // The loop: each sequence at positions 0.., its loss weighted by its share of counted targets.
  const double counted = double(
      std::count_if(targets.begin(), targets.end(), [](int t) { return t != ignore_target; }));
  model.zero_grad();
  for (std::size_t b = 0; b < sizes.size(); ++b) {
    const auto first = std::ptrdiff_t(offsets[b]), last = std::ptrdiff_t(offsets[b + 1]);
    const std::vector<int> seq(ids.begin() + first, ids.begin() + last);
    const std::vector<int> seq_targets(targets.begin() + first, targets.begin() + last);
    const Matrix<double> seq_logits = model.forward(seq);
    CHECK((seq_logits - logits.middleRows(first, last - first)).norm() <=
          1e-12 * seq_logits.norm());
    const double share = double(std::count_if(seq_targets.begin(), seq_targets.end(),
                                              [](int t) { return t != ignore_target; }));
    if (share == 0) {
      model.backward(Matrix<double>::Zero(seq_logits.rows(), seq_logits.cols()));
      continue;
    }
    model.backward(cross_entropy_loss(seq_logits, seq_targets).grad * (share / counted));
  }
  Tensors loop;
  for (const auto& p : model.parameters()) loop[p.name] = p.grads();
  require_same(packed, loop, 1e-12);
}

TEST_CASE("bad sequence offsets are refused with what to change", "[layers][packed]") {
  Transformer<double> model(small_config(false));
  const Matrix<double> x = Matrix<double>::Ones(10, 16);
  CHECK_THROWS_WITH(model.forward(x, {0, 4, 9}), Catch::Contains("from 0 to the 10 rows"));
  CHECK_THROWS_WITH(model.forward(x, {1, 4, 10}), Catch::Contains("offsets[0] = 0"));
  CHECK_THROWS_WITH(model.forward(x, {0, 4, 4, 10}), Catch::Contains("sequence 1 is empty"));
  CHECK_THROWS_AS(offsets_of_lengths({3, 0, 2}), ShapeError);
  LanguageModelConfig config;
  config.context = 8;
  config.transformer = small_config(false);
  LanguageModel<double> lm(config);
  CHECK_THROWS_WITH(lm.forward_packed(std::vector<int>(12, 1), {0, 3, 12}),
                    Catch::Contains("sequence 1 has 9 tokens, more than its context of 8"));
  // A batch of one sequence is the single-sequence call.
  CHECK(lm.forward_packed(std::vector<int>(5, 1), {0, 5}) == lm.forward(std::vector<int>(5, 1)));
}
