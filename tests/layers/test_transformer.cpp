#include <catch2/catch.hpp>

#include <map>

#include "polygrad/attention/naive.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "support/configs.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

TransformerConfig small_config(Index layers, Index D, Index H, Index F, bool causal) {
  TransformerConfig config = test::small_transformer();
  config.layers = layers;
  config.d_model = D;
  config.heads = H;
  config.d_ff = F;
  config.causal = causal;
  return config;
}

template <class T>
std::shared_ptr<const AttentionMethod<T>> naive_method() {
  return std::make_shared<NaiveAttention<T>>();
}

}  // namespace

TEST_CASE("Transformer gradients match central differences", "[layers][transformer]") {
  std::mt19937_64 rng(61);
  SECTION("2 causal layers, 2 heads, naive attention") {
    Transformer<double> model(small_config(2, 6, 2, 8, true), naive_method<double>());
    auto params = model.parameters();
    test::randomize(params, rng);
    const Matrix<double> x = test::random_matrix(5, 6, rng);
    test::require_small(test::check_layer_gradients(model, x, params, rng));
  }
  // The default method runs in the causality test below and in test_multihead_attention; here
  // the naive one keeps the ~1000 forward passes of the check cheap.
  SECTION("2 non-causal layers, 3 heads, QK normalisation") {
    TransformerConfig config = small_config(2, 6, 3, 5, false);
    config.qk_norm = 1.5;
    Transformer<double> model(config, naive_method<double>());
    auto params = model.parameters();
    test::randomize(params, rng);
    const Matrix<double> x = test::random_matrix(4, 6, rng);
    test::require_small(test::check_layer_gradients(model, x, params, rng));
  }
}

TEST_CASE("Transformer parameter names and shapes", "[layers][transformer]") {
  const Index D = 4, F = 6;
  Transformer<float> model(small_config(2, D, 2, F, true));
  std::vector<std::pair<std::string, std::vector<Index>>> expected;
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    expected.push_back({b + "ln1.weight", {D}});
    expected.push_back({b + "ln1.bias", {D}});
    for (const char* p : {"q", "k", "v", "o"}) {
      expected.push_back({b + "attn." + p + ".weight", {D, D}});
      expected.push_back({b + "attn." + p + ".bias", {D}});
    }
    expected.push_back({b + "ln2.weight", {D}});
    expected.push_back({b + "ln2.bias", {D}});
    expected.push_back({b + "mlp.fc1.weight", {F, D}});
    expected.push_back({b + "mlp.fc1.bias", {F}});
    expected.push_back({b + "mlp.fc2.weight", {D, F}});
    expected.push_back({b + "mlp.fc2.bias", {D}});
  }
  expected.push_back({"ln_f.weight", {D}});
  expected.push_back({"ln_f.bias", {D}});

  const auto params = model.parameters();
  REQUIRE(params.size() == expected.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    CHECK(params[i].name == expected[i].first);
    CHECK(params[i].shape == expected[i].second);
  }
  CHECK(model.config().d_ff == F);
}

TEST_CASE("Transformer initialisation is deterministic", "[layers][transformer]") {
  const auto config = small_config(2, 8, 2, 16, true);
  Transformer<double> a(config), b(config);
  Transformer<float> f(config);
  auto pa = a.parameters(), pb = b.parameters();
  auto pf = f.parameters();
  double sum_sq = 0;
  Index count = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].name);
    CHECK(pa[i].values() == pb[i].values());
    CHECK(test::relative_error(pa[i].values(), pf[i].values()) < 1e-7);
    const std::string& name = pa[i].name;
    const bool is_norm = name.find("ln") != std::string::npos;
    if (pa[i].shape.size() == 2) {
      sum_sq += pa[i].values().squaredNorm();
      count += pa[i].size();
    } else if (is_norm && name.find("weight") != std::string::npos) {
      CHECK(pa[i].values().isOnes());
    } else {
      CHECK(pa[i].values().isZero(0));
    }
  }
  CHECK(std::sqrt(sum_sq / double(count)) ==
        Approx(Transformer<double>::default_init_std).epsilon(0.1));

  a.init(7);
  CHECK(pa[2].values() != pb[2].values());
  b.init(7);
  CHECK(pa[2].values() == pb[2].values());
  a.init(Transformer<double>::default_seed);
  Transformer<double> fresh(config);
  CHECK(pa[2].values() == fresh.parameters()[2].values());
}

// What causality means for the gradients. Output row j depends only on input rows <= j. So:
//  - changing input rows > i leaves output rows <= i unchanged;
//  - for a loss that reads only output rows <= i, the input gradient is zero in rows > i, and its
//    rows <= i (and every parameter gradient) do not depend on input rows > i;
//  - for a loss that reads every row (e.g. MSE over the sequence), the gradient of input row i
//    DOES depend on later rows: later outputs read row i through attention.
TEST_CASE("A causal Transformer is causal in its outputs and gradients", "[layers][transformer]") {
  std::mt19937_64 rng(62);
  const Index n = 7, D = 8, i = 3;
  for (bool default_method : {false, true}) {
    INFO("default method " << default_method);
    Transformer<double> model(small_config(2, D, 2, 12, true),
                              default_method ? nullptr : naive_method<double>());
    test::randomize(model.parameters(), rng);
    const Matrix<double> x1 = test::random_matrix(n, D, rng);
    Matrix<double> x2 = x1;
    x2.bottomRows(n - i - 1) = test::random_matrix(n - i - 1, D, rng);

    Matrix<double> W = test::random_matrix(n, D, rng);
    Matrix<double> W_head = W;
    W_head.bottomRows(n - i - 1).setZero();  // the loss reads rows <= i only

    auto run = [&](const Matrix<double>& x, const Matrix<double>& dy, Matrix<double>& y,
                   Matrix<double>& dx, std::vector<Vector<double>>& grads) {
      model.zero_grad();
      y = model.forward(x);
      dx = model.backward(dy);
      grads.clear();
      for (const auto& p : model.parameters()) grads.push_back(p.grads());
    };
    Matrix<double> y1, y2, dx1, dx2;
    std::vector<Vector<double>> g1, g2;
    run(x1, W_head, y1, dx1, g1);
    run(x2, W_head, y2, dx2, g2);

    const double tol = 1e-13;
    CHECK(test::relative_error(y1.topRows(i + 1), y2.topRows(i + 1)) <= tol);
    CHECK(test::relative_error(y1.bottomRows(n - i - 1), y2.bottomRows(n - i - 1)) > 1e-6);
    CHECK(dx1.bottomRows(n - i - 1).norm() == 0.0);
    CHECK(dx2.bottomRows(n - i - 1).norm() == 0.0);
    CHECK(test::relative_error(dx1.topRows(i + 1), dx2.topRows(i + 1)) <= tol);
    for (std::size_t k = 0; k < g1.size(); ++k) CHECK(test::relative_error(g1[k], g2[k]) <= tol);

    // With a loss over every row the gradient of row i changes with the later inputs.
    run(x1, W, y1, dx1, g1);
    run(x2, W, y2, dx2, g2);
    CHECK(test::relative_error(dx1.topRows(i + 1), dx2.topRows(i + 1)) > 1e-6);
  }
}

TEST_CASE("Transformer in float agrees with double", "[layers][transformer]") {
  std::mt19937_64 rng(63);
  const auto config = small_config(2, 8, 2, 16, true);
  Transformer<double> md(config, naive_method<double>());
  Transformer<float> mf(config, naive_method<float>());
  md.init(5, 0.3);
  auto pd = md.parameters();
  auto pf = mf.parameters();
  REQUIRE(pd.size() == pf.size());
  for (std::size_t k = 0; k < pd.size(); ++k) pf[k].values() = pd[k].values().cast<float>();

  const Matrix<double> x = test::random_matrix(9, 8, rng);
  const Matrix<double> dy = test::random_matrix(9, 8, rng);
  const Matrix<double> yd = md.forward(x);
  const Matrix<double> dxd = md.backward(dy);
  const Matrix<double> yf = mf.forward(x.cast<float>()).cast<double>();
  const Matrix<double> dxf = mf.backward(dy.cast<float>()).cast<double>();
  CHECK(test::relative_error(yf, yd) <= 1e-4);
  CHECK(test::relative_error(dxf, dxd) <= 1e-4);
  double largest = 0;
  for (const auto& p : pd) largest = std::max(largest, p.grads().norm());
  for (std::size_t k = 0; k < pd.size(); ++k) {
    INFO(pd[k].name);
    if (pd[k].name.find("attn.k.bias") != std::string::npos) {
      // Identically zero without QK normalisation (softmax ignores a shift of a score row), so
      // both are rounding noise: check that they are small instead of comparing them.
      CHECK(pd[k].grads().norm() <= 1e-12 * largest);
      CHECK(pf[k].grads().cast<double>().norm() <= 1e-5 * largest);
    } else {
      CHECK(test::relative_error(pf[k].grads(), pd[k].grads()) <= 1e-4);
    }
  }
}

TEST_CASE("Transformer attention can be swapped and described", "[layers][transformer]") {
  Transformer<double> model(small_config(3, 4, 2, 4, false));
  model.set_attention(naive_method<double>());
  CHECK(model.block(0).attn().attention().name() == "naive");
  CHECK(model.block(2).attn().attention().name() == "naive");
  model.set_attention(nullptr);
  CHECK(model.block(1).attn().attention().name() == "exact");
  model.forward(Matrix<double>::Ones(2, 4));
  CHECK(model.describe_attention().size() == 3);
  CHECK_THROWS_AS(model.block(3), Error);
}

TEST_CASE("Transformer rejects bad configurations, shapes and NaN", "[layers][transformer]") {
  CHECK_THROWS_AS(Transformer<double>(small_config(2, 6, 4, 8, true)), ShapeError);
  CHECK_THROWS_AS(Transformer<double>(small_config(0, 6, 2, 8, true)), ShapeError);
  Transformer<double> model(small_config(1, 4, 2, 4, true));
  CHECK_THROWS_WITH(model.forward(Matrix<double>::Zero(3, 5)),
                    Catch::Contains("Transformer input must be 3 x 4, got 3 x 5"));
  CHECK_THROWS_AS(model.forward(Matrix<double>::Zero(0, 4)), ShapeError);
  CHECK_THROWS_AS(model.backward(Matrix<double>::Zero(3, 4)), Error);
  Matrix<double> x = Matrix<double>::Ones(3, 4);
  x(0, 1) = std::nan("");
  CHECK_THROWS_AS(model.forward(x), NumericError);
  model.forward(Matrix<double>::Ones(3, 4));
  Matrix<double> dy = Matrix<double>::Zero(3, 4);
  dy(2, 2) = INFINITY;
  CHECK_THROWS_AS(model.backward(dy), NumericError);
}

namespace {

/// Output, input gradient and every parameter gradient of one pass, by name.
std::map<std::string, Matrix<double>> pass_results(Transformer<double>& model,
                                                   const Matrix<double>& x,
                                                   const Matrix<double>& dy) {
  std::map<std::string, Matrix<double>> out;
  model.zero_grad();
  out["output"] = model.forward(x);
  out["input"] = model.backward(dy);
  for (const auto& p : model.parameters()) out[p.name] = p.grads();
  return out;
}

/// Every tensor of a within `tolerance` of b's, relative to the larger norm or, when
/// `floor_fraction` > 0, at least that fraction of the largest tensor norm: some gradients are
/// zero in exact arithmetic (the key bias: softmax ignores a shift of a score row), and sums in
/// another order leave different rounding noise in them.
void require_same(const std::map<std::string, Matrix<double>>& a,
                  const std::map<std::string, Matrix<double>>& b, double tolerance,
                  double floor_fraction = 0) {
  REQUIRE(a.size() == b.size());
  double largest = 0;
  for (const auto& [name, value] : b) largest = std::max(largest, value.norm());
  for (const auto& [name, value] : a) {
    INFO("tensor " << name);
    const Matrix<double>& reference = b.at(name);
    CHECK(test::relative_error(value, reference, floor_fraction * largest) <= tolerance);
  }
}

}  // namespace

TEST_CASE("gradients with recomputation equal those without", "[layers][transformer]") {
  // The demo's shape of model (4 layers, 8 heads of d_h 8, QK normalisation), 300 tokens in row
  // blocks of 64 split between 2 threads, so that several blocks and parts are recomputed.
  std::mt19937_64 rng(64);
  PolyOptions adjoint, paper;
  adjoint.degree = paper.degree = 5;
  adjoint.chunk = paper.chunk = 32;
  paper.route = PolyRoute::paper;
  const std::vector<std::pair<std::string, std::shared_ptr<const AttentionMethod<double>>>>
      methods = {{"exact", nullptr},
                 {"poly adjoint", std::make_shared<PolyAttention<double>>(adjoint)},
                 {"poly paper", std::make_shared<PolyAttention<double>>(paper)}};
  Threading threading{2, 0.0};
  threading.row_block = 64;
  for (const auto& [label, method] : methods) {
    INFO("attention " << label);
    Transformer<double> model(TransformerConfig::demo(), method);
    model.init(9, 0.2);
    model.set_threading(threading);
    const Matrix<double> x = test::random_matrix(300, 64, rng);
    const Matrix<double> dy = test::random_matrix(300, 64, rng);
    const auto kept = pass_results(model, x, dy);
    model.set_recompute(true);
    const auto recomputed = pass_results(model, x, dy);
    require_same(recomputed, kept, 1e-12);
    model.set_recompute(false);  // and back: the buffers are set up again
    require_same(pass_results(model, x, dy), kept, 1e-12);
    model.forward(x);  // not between a forward and its backward, whose buffers depend on it
    CHECK_THROWS_WITH(model.set_recompute(true), Catch::Contains("run the pending backward"));
    model.backward(dy);
  }
}

TEST_CASE("recomputed Transformer gradients match central differences", "[layers][transformer]") {
  std::mt19937_64 rng(65);
  TransformerConfig config = small_config(2, 6, 3, 5, true);
  config.qk_norm = 1.5;
  Transformer<double> model(config, naive_method<double>());
  model.set_recompute(true);
  Threading threading;
  threading.row_block = 2;  // 5 rows: blocks of 2, 2 and 1
  model.set_threading(threading);
  auto params = model.parameters();
  test::randomize(params, rng);
  test::require_small(
      test::check_layer_gradients(model, test::random_matrix(5, 6, rng), params, rng));
}

TEST_CASE("a Transformer pass gives the same result on 1 and 2 threads", "[layers][transformer]") {
  std::mt19937_64 rng(66);
  Transformer<double> model(small_config(2, 16, 2, 24, true));
  model.init(3, 0.3);
  const Matrix<double> x = test::random_matrix(257, 16, rng),
                       dy = test::random_matrix(257, 16, rng);
  Threading serial = Threading::serial(), parallel{2, 0.0};
  serial.row_block = parallel.row_block = 32;
  model.set_threading(serial);
  const auto one = pass_results(model, x, dy);
  model.set_threading(parallel);
  require_same(pass_results(model, x, dy), one, 1e-12, 1e-3);
}
