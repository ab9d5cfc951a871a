#pragma once
// The pre-LN transformer block (DESIGN.md section 1):
//   h = x + MHA(LN1(x)),  y = h + MLP(LN2(h)).

#include "polygrad/layers/config.hpp"
#include "polygrad/layers/layer_norm.hpp"
#include "polygrad/layers/mlp.hpp"
#include "polygrad/layers/multihead_attention.hpp"

namespace polygrad {

/// One pre-LN block. Parameters "ln1.*", "attn.{q,k,v,o}.*", "ln2.*", "mlp.{fc1,fc2}.*".
template <class T>
class TransformerBlock {
 public:
  /// A block of width config.d_model with config.heads heads and MLP width config.d_ff;
  /// `method` nullptr means ExactAttention<T>. Throws if the configuration is inconsistent.
  explicit TransformerBlock(const TransformerConfig& config,
                            std::shared_ptr<const AttentionMethod<T>> method = nullptr)
      : ln1_((config.validate(), config.d_model)),
        attn_(config.d_model, config.heads, config.causal, config.scale, config.qk_norm,
              std::move(method)),
        ln2_(config.d_model),
        mlp_(config.d_model, config.d_ff) {}

  /// y for x (n x D); the sublayers cache what their backward needs.
  Matrix<T> forward(const Matrix<T>& x) {
    Matrix<T> h = x + attn_.forward(ln1_.forward(x));
    Matrix<T> y = h + mlp_.forward(ln2_.forward(h));
    return y;
  }

  /// Returns dx; both residual paths add their gradients to the stream.
  Matrix<T> backward(const Matrix<T>& dy) {
    // In the forward pass this was y = h + MLP(LN2(h)).
    Matrix<T> dh = dy + ln2_.backward(mlp_.backward(dy));
    // In the forward pass this was h = x + MHA(LN1(x)).
    Matrix<T> dx = dh + ln1_.backward(attn_.backward(dh));
    return dx;
  }

  /// Appends prefix.ln1, prefix.attn, prefix.ln2, prefix.mlp in that order.
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    ln1_.collect_parameters(detail::join_name(prefix, "ln1"), out);
    attn_.collect_parameters(detail::join_name(prefix, "attn"), out);
    ln2_.collect_parameters(detail::join_name(prefix, "ln2"), out);
    mlp_.collect_parameters(detail::join_name(prefix, "mlp"), out);
  }

  /// Sets every gradient to zero.
  void zero_grad() {
    ln1_.zero_grad();
    attn_.zero_grad();
    ln2_.zero_grad();
    mlp_.zero_grad();
  }

  /// Linear weights ~ Normal(0, stddev^2), biases zero, LayerNorms gain 1 and shift 0.
  void init(std::mt19937_64& rng, double stddev) {
    ln1_.init(rng, stddev);
    attn_.init(rng, stddev);
    ln2_.init(rng, stddev);
    mlp_.init(rng, stddev);
  }

  /// Replaces the attention method (nullptr: ExactAttention<T>).
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    attn_.set_attention(std::move(method));
  }

  /// describe() of the last attention context.
  std::string describe_attention() const { return attn_.describe_attention(); }

  /// The head plans of the last attention forward pass.
  const std::vector<HeadPlan>& attention_plans() const { return attn_.attention_plans(); }

  /// The sublayers.
  LayerNorm<T>& ln1() { return ln1_; }
  MultiHeadAttention<T>& attn() { return attn_; }
  LayerNorm<T>& ln2() { return ln2_; }
  MLP<T>& mlp() { return mlp_; }

 private:
  LayerNorm<T> ln1_;
  MultiHeadAttention<T> attn_;
  LayerNorm<T> ln2_;
  MLP<T> mlp_;
};

}  // namespace polygrad
