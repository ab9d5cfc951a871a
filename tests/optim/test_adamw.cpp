#include <catch2/catch.hpp>
#include <map>

#include "polygrad/attention/naive.hpp"
#include "polygrad/layers/embedding.hpp"
#include "polygrad/layers/lm_head.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/cross_entropy.hpp"
#include "polygrad/optim/adamw.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

template <class T>
struct Param {
  Vector<T> value = Vector<T>(3), grad = Vector<T>(3);
  ParameterList<T> list(const std::string& name = "w") {
    return {detail::view_of(name, value, grad)};
  }
};

/// A made-up gradient for step s, entry j.
double gradient_at(int s, int j) { return std::sin(1.0 + 3.0 * s + j) * (j == 1 ? 1e-3 : 1.0); }

}  // namespace

TEMPLATE_TEST_CASE("AdamW matches hand-computed updates", "[optim][adamw]", float, double) {
  AdamWOptions o;
  o.lr = 0.01;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  Param<TestType> p;
  double w[3] = {0.5, -1.0, 2.0}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  for (int j = 0; j < 3; ++j) p.value(j) = TestType(w[j]);
  AdamW<TestType> opt(p.list(), o);
  for (int s = 0; s < 3; ++s) {
    const int t = s + 1;
    for (int j = 0; j < 3; ++j) {
      const double g = gradient_at(s, j);
      p.grad(j) = TestType(g);
      w[j] *= 1 - o.lr * o.weight_decay;  // decoupled decay
      m[j] = o.beta1 * m[j] + (1 - o.beta1) * g;
      v[j] = o.beta2 * v[j] + (1 - o.beta2) * g * g;
      const double mhat = m[j] / (1 - std::pow(o.beta1, t));
      const double vhat = v[j] / (1 - std::pow(o.beta2, t));
      w[j] -= o.lr * mhat / (std::sqrt(vhat) + o.eps);
    }
    opt.step();
    for (int j = 0; j < 3; ++j) CHECK(double(p.value(j)) == Approx(w[j]).epsilon(1e-6));
  }
  CHECK(opt.step_count() == 3);
  const auto state = opt.state();
  REQUIRE(state.size() == 2);
  CHECK(state[0].first == "exp_avg.w");
  CHECK(state[1].first == "exp_avg_sq.w");
  for (int j = 0; j < 3; ++j) {
    CHECK(double((*state[0].second)(j)) == Approx(m[j]).epsilon(1e-5));
    CHECK(double((*state[1].second)(j)) == Approx(v[j]).epsilon(1e-5));
  }
}

TEST_CASE("AdamW resumes exactly from its saved state", "[optim][adamw]") {
  Param<double> a, b;
  a.value << 1, 2, 3;
  b.value = a.value;
  AdamW<double> straight(a.list());
  auto first = std::make_unique<AdamW<double>>(b.list());
  auto set_grads = [](Param<double>& p, int s) {
    for (int j = 0; j < 3; ++j) p.grad(j) = gradient_at(s, j);
  };
  for (int s = 0; s < 4; ++s) {
    set_grads(a, s);
    straight.step();
  }
  set_grads(b, 0);
  first->step();
  // "Save" the state by name, throw the optimiser away, "load" it into a new one.
  std::map<std::string, Vector<double>> saved;
  for (const auto& [name, buffer] : first->state()) saved[name] = *buffer;
  const auto steps = first->step_count();
  first.reset();
  AdamW<double> resumed(b.list());
  for (const auto& [name, buffer] : resumed.state()) *buffer = saved.at(name);
  resumed.set_step_count(steps);
  for (int s = 1; s < 4; ++s) {
    set_grads(b, s);
    resumed.step();
  }
  CHECK(a.value == b.value);
}

TEST_CASE("AdamW trains a tiny language model", "[optim][adamw]") {
  TransformerConfig config;
  config.layers = 1;
  config.d_model = 8;
  config.heads = 2;
  config.d_ff = 16;
  const Index vocab = 5;
  Transformer<double> model(config, std::make_shared<NaiveAttention<double>>());
  Embedding<double> embed(vocab, config.d_model);
  LMHead<double> head(config.d_model, vocab);
  std::mt19937_64 rng(121);
  embed.init(rng, 1.0);
  head.init(rng, 0.3);
  ParameterList<double> params = model.parameters();
  embed.collect_parameters("embed", params);
  head.collect_parameters("lm_head", params);
  AdamWOptions options;
  options.lr = 1e-2;
  AdamW<double> opt(params, options);

  const std::vector<int> inputs = {0, 1, 2, 3, 4, 0, 1, 2};
  const std::vector<int> targets = {1, 2, 3, 4, 0, 1, 2, 3};  // next token
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    opt.zero_grad();
    const auto loss =
        cross_entropy_loss(head.forward(model.forward(embed.forward(inputs))), targets);
    embed.backward(model.backward(head.backward(loss.grad)));
    opt.step();
    if (step == 0) first = loss.value;
    last = loss.value;
  }
  INFO("first " << first << ", last " << last);
  CHECK(last < 0.3 * first);
}

TEST_CASE("AdamW rejects non-finite gradients and bad hyperparameters", "[optim][adamw]") {
  Param<float> p;
  p.value << 1, 2, 3;
  p.grad << 0, 0, INFINITY;
  AdamW<float> opt(p.list("blocks.0.mlp.fc1.weight"));
  CHECK_THROWS_AS(opt.step(), NumericError);
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("blocks.0.mlp.fc1.weight"));
  CHECK(opt.step_count() == 0);
  CHECK(p.value(2) == 3.0f);
  AdamWOptions bad;
  bad.beta2 = 1.0;
  CHECK_THROWS_AS(AdamW<float>(p.list(), bad), Error);
  bad = AdamWOptions{};
  bad.eps = 0;
  CHECK_THROWS_AS(AdamW<float>(p.list(), bad), Error);
  CHECK_THROWS_AS(opt.set_lr(std::nan("")), Error);
  CHECK_THROWS_AS(opt.set_step_count(-1), Error);
}
