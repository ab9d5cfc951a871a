#include <catch2/catch.hpp>

#include "polygrad/attention/naive.hpp"
#include "polygrad/layers/multihead_attention.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

AttentionConfig attention(Index d_model, Index heads, bool causal = false,
                          std::optional<double> scale = std::nullopt,
                          std::optional<double> qk_norm = std::nullopt) {
  AttentionConfig config;
  config.d_model = d_model;
  config.heads = heads;
  config.causal = causal;
  config.scale = scale;
  config.qk_norm = qk_norm;
  return config;
}

/// Naive attention that records the AttentionShape it was called with and describes itself.
template <class T>
class RecordingAttention final : public AttentionMethod<T> {
 public:
  mutable AttentionShape last;
  mutable int calls = 0;

  std::string name() const override { return "recording"; }
  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    last = shape;
    ++calls;
    return std::make_unique<Context>(NaiveAttention<T>().forward(Q, K, V, shape, O), calls);
  }

 private:
  class Context final : public AttentionContext<T> {
   public:
    Context(std::unique_ptr<AttentionContext<T>> inner, int call)
        : inner_(std::move(inner)), call_(call) {}
    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      inner_->backward(Q, K, V, O, dO, dQ, dK, dV);
    }
    std::string describe() const override { return "recording call " + std::to_string(call_); }

   private:
    std::unique_ptr<AttentionContext<T>> inner_;
    int call_;
  };
};

ParameterList<double> params_of(MultiHeadAttention<double>& mha) {
  ParameterList<double> params;
  mha.collect_parameters("attn", params);
  return params;
}

/// The layer's output written out from its weights, head by head, with the naive reference.
Matrix<double> reference_mha(MultiHeadAttention<double>& mha, const Matrix<double>& x,
                             std::optional<double> tau) {
  auto project = [&](Linear<double>& l) {
    Matrix<double> y = x * l.weight().transpose();
    y.rowwise() += l.bias().transpose();
    return y;
  };
  Matrix<double> Q = project(mha.q()), K = project(mha.k()), V = project(mha.v());
  const Index H = mha.heads(), dh = mha.d_model() / H;
  Matrix<double> O(x.rows(), x.cols());
  for (Index h = 0; h < H; ++h) {
    Matrix<double> q = Q.middleCols(h * dh, dh), k = K.middleCols(h * dh, dh);
    if (tau) {
      q.rowwise().normalize();
      k.rowwise().normalize();
    }
    O.middleCols(h * dh, dh) = exact::reference::attention_forward<double>(
        q, k, V.middleCols(h * dh, dh), tau ? *tau : 1.0 / std::sqrt(double(dh)), mha.causal());
  }
  Matrix<double> y = O * mha.o().weight().transpose();
  y.rowwise() += mha.o().bias().transpose();
  return y;
}

}  // namespace

TEST_CASE("MultiHeadAttention gradients match central differences", "[layers][mha]") {
  std::mt19937_64 rng(41);
  const Index D = 6, H = 2, n = 5;
  for (bool causal : {false, true}) {
    for (std::optional<double> tau : {std::optional<double>{}, std::optional<double>{2.5}}) {
      MultiHeadAttention<double> mha(attention(D, H, causal, std::nullopt, tau),
                                     std::make_shared<NaiveAttention<double>>());
      auto params = params_of(mha);
      test::randomize(params, rng);
      const Matrix<double> x = test::random_matrix(n, D, rng);
      INFO("causal " << causal << ", qk_norm " << (tau ? *tau : 0.0));
      CHECK(test::relative_error(mha.forward(x), reference_mha(mha, x, tau)) < 1e-12);
      test::require_small(test::check_layer_gradients(mha, x, params, rng));
    }
  }
}

TEST_CASE("MultiHeadAttention with the default method (ExactAttention)", "[layers][mha]") {
  std::mt19937_64 rng(42);
  MultiHeadAttention<double> mha(attention(6, 3, true, 0.7, std::nullopt));
  CHECK(mha.attention().name() == "exact");
  auto params = params_of(mha);
  test::randomize(params, rng);
  const Matrix<double> x = test::random_matrix(7, 6, rng);
  test::require_small(test::check_layer_gradients(mha, x, params, rng));

  // Softmax ignores a constant added to a score row, and the key bias adds q_i . b_k to row i:
  // its gradient vanishes identically (without QK normalisation). A check that the test data
  // behind the 1e-3 error floor of check_gradients is what we think it is.
  mha.zero_grad();
  mha.forward(x);
  mha.backward(test::random_matrix(7, 6, rng));
  CHECK(mha.k().bias_grad().norm() <= 1e-12 * mha.q().weight_grad().norm());

  // Same weights through the naive reference: the exact method agrees with it.
  const Matrix<double> y_exact = mha.forward(x);
  mha.set_attention(std::make_shared<NaiveAttention<double>>());
  CHECK(test::relative_error(mha.forward(x), y_exact) < 1e-12);
}

TEST_CASE("MultiHeadAttention passes scale and score bound to its method", "[layers][mha]") {
  std::mt19937_64 rng(43);
  auto method = std::make_shared<RecordingAttention<double>>();
  const Matrix<double> x = test::random_matrix(4, 8, rng);

  MultiHeadAttention<double> plain(attention(8, 2, true, std::nullopt, std::nullopt), method);
  CHECK(plain.describe_attention().empty());
  plain.forward(x);
  CHECK(method->last.heads == 2);
  CHECK(method->last.causal);
  CHECK(method->last.scale == Approx(0.5));  // 1 / sqrt(d_h), d_h = 4
  CHECK(method->last.score_bound == 0.0);
  CHECK(plain.describe_attention() == "recording call 1");

  MultiHeadAttention<double> scaled(attention(8, 4, false, 0.3, std::nullopt), method);
  scaled.forward(x);
  CHECK(method->last.scale == 0.3);
  CHECK_FALSE(method->last.causal);

  MultiHeadAttention<double> normed(attention(8, 2, false, 0.3, 3.0),
                                    method);  // tau overrides the scale
  normed.forward(x);
  CHECK(method->last.scale == 3.0);
  CHECK(method->last.score_bound == 3.0);
  CHECK(normed.describe_attention() == "recording call 3");
}

TEST_CASE("QK normalisation divides by max(norm, 1e-12) per head", "[layers][mha]") {
  Matrix<double> Y(2, 4), norms(2, 2);
  Y << 3, 4, 0, 0,  //
      0, 0, 1, 0;
  detail::normalise_head_rows<double>(Y, norms);  // in place
  CHECK(Y(0, 0) == Approx(0.6));
  CHECK(Y(0, 1) == Approx(0.8));
  CHECK(Y.block(0, 2, 1, 2).norm() == 0.0);  // a zero segment stays zero, no NaN
  CHECK(norms(0, 0) == Approx(5.0));
  CHECK(Y(1, 2) == 1.0);
  Matrix<double> dX = Matrix<double>::Ones(2, 4);
  detail::normalise_head_rows_backward<double>(dX, Y, norms);  // in place
  CHECK(dX.allFinite());
  CHECK(dX(0, 2) == Approx(1e12));  // the clamped branch divides by the floor
}

TEST_CASE("MultiHeadAttention rejects bad configurations and inputs", "[layers][mha]") {
  CHECK_THROWS_AS(MultiHeadAttention<double>(attention(6, 4)), ShapeError);
  CHECK_THROWS_WITH(MultiHeadAttention<double>(attention(6, 4)),
                    Catch::Contains("multiple of the number of heads"));
  CHECK_THROWS_AS(MultiHeadAttention<double>(attention(6, 2, false, -1.0)), Error);
  CHECK_THROWS_AS(MultiHeadAttention<double>(attention(6, 2, false, std::nullopt, 0.0)), Error);
  // The model's configuration is validated by the same code, with the same message.
  TransformerConfig model;
  model.d_model = 6;
  model.heads = 4;
  CHECK_THROWS_WITH(model.validate(), Catch::Contains("multiple of the number of heads"));
  MultiHeadAttention<float> mha(attention(6, 2, true, std::nullopt, std::nullopt),
                                std::make_shared<NaiveAttention<float>>());
  CHECK_THROWS_AS(mha.forward(Matrix<float>::Zero(3, 5)), ShapeError);
  CHECK_THROWS_AS(mha.backward(Matrix<float>::Zero(3, 6)), Error);
  Matrix<float> x = Matrix<float>::Zero(3, 6);
  x(2, 0) = std::nanf("");
  CHECK_THROWS_AS(mha.forward(x), NumericError);
  mha.forward(Matrix<float>::Ones(3, 6));
  CHECK_THROWS_AS(mha.backward(Matrix<float>::Zero(2, 6)), ShapeError);
}
