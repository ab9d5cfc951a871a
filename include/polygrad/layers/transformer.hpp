#pragma once
// The model: L pre-LN blocks and a final LayerNorm, model(x) = LN_f(block_L(...block_1(x)))
// (DESIGN.md section 1). Per sequence: a batch is a loop over sequences.

#include <vector>

#include "polygrad/layers/block.hpp"

namespace polygrad {

/// A stack of TransformerBlocks followed by LayerNorm "ln_f". Parameter names, in order:
/// blocks.{i}.ln1.weight|bias [D], blocks.{i}.attn.{q,k,v,o}.weight [D, D] and .bias [D],
/// blocks.{i}.ln2.weight|bias [D], blocks.{i}.mlp.fc1.weight [F, D], blocks.{i}.mlp.fc1.bias [F],
/// blocks.{i}.mlp.fc2.weight [D, F], blocks.{i}.mlp.fc2.bias [D], then ln_f.weight|bias [D].
/// Move-only (each attention layer owns its pending context).
template <class T>
class Transformer {
 public:
  /// The seed a fresh Transformer is initialised with.
  static constexpr std::uint64_t default_seed = 0x706f6c79;  // "poly"
  /// The standard deviation of the initial Linear weights.
  static constexpr double default_init_std = 0.02;

  /// A model for `config` (validated), initialised with init(default_seed); `method` nullptr
  /// means ExactAttention<T> in every block.
  explicit Transformer(const TransformerConfig& config,
                       std::shared_ptr<const AttentionMethod<T>> method = nullptr)
      : config_((config.validate(), config)), ln_f_(config.d_model) {
    blocks_.reserve(static_cast<std::size_t>(config.layers));
    for (Index i = 0; i < config.layers; ++i) blocks_.emplace_back(config, method);
    init(default_seed);
  }

  /// Deterministic initialisation from std::mt19937_64(seed): every Linear weight
  /// ~ Normal(0, stddev^2) (Box-Muller on the generator's raw output, so the same on every
  /// platform), drawn in parameter-name order; biases zero; LayerNorm gain 1, shift 0.
  void init(std::uint64_t seed, double stddev = default_init_std) {
    std::mt19937_64 rng(seed);
    for (auto& block : blocks_) block.init(rng, stddev);
    ln_f_.init(rng, stddev);
  }

  /// The output (n x D) for x (n x D); every layer caches what its backward needs.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, config_.d_model, "Transformer input");
    Matrix<T> h = x;
    for (auto& block : blocks_) h = block.forward(h);
    return ln_f_.forward(h);
  }

  /// Returns dL/dx for dL/dy (n x D); accumulates every parameter gradient.
  Matrix<T> backward(const Matrix<T>& dy) {
    require_finite(dy, "Transformer output gradient");
    Matrix<T> d = ln_f_.backward(dy);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) d = it->backward(d);
    return d;
  }

  /// Appends prefix.blocks.{i}.* and prefix.ln_f.* (see the class comment).
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].collect_parameters(
          detail::join_name(prefix, ("blocks." + std::to_string(i)).c_str()), out);
    ln_f_.collect_parameters(detail::join_name(prefix, "ln_f"), out);
  }

  /// Every parameter, named without a prefix ("blocks.0.ln1.weight", ..., "ln_f.bias").
  ParameterList<T> parameters() {
    ParameterList<T> out;
    collect_parameters("", out);
    return out;
  }

  /// Sets every gradient to zero.
  void zero_grad() {
    for (auto& block : blocks_) block.zero_grad();
    ln_f_.zero_grad();
  }

  /// Uses `method` (nullptr: ExactAttention<T>) in every block from the next forward() on.
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    for (auto& block : blocks_) block.set_attention(method);
  }

  /// One string per block: describe() of its last attention context.
  std::vector<std::string> describe_attention() const {
    std::vector<std::string> out;
    for (const auto& block : blocks_) out.push_back(block.describe_attention());
    return out;
  }

  /// One vector per block: the head plans of its last attention forward pass.
  std::vector<std::vector<HeadPlan>> attention_plans() const {
    std::vector<std::vector<HeadPlan>> out;
    for (const auto& block : blocks_) out.push_back(block.attention_plans());
    return out;
  }

  /// The configuration the model was built with.
  const TransformerConfig& config() const { return config_; }
  /// Block i, 0 <= i < L.
  TransformerBlock<T>& block(Index i) {
    require<Error>(i >= 0 && i < Index(blocks_.size()), "block index ", i, " out of range [0, ",
                   blocks_.size(), ")");
    return blocks_[static_cast<std::size_t>(i)];
  }
  /// The final LayerNorm.
  LayerNorm<T>& ln_f() { return ln_f_; }

 private:
  TransformerConfig config_;
  std::vector<TransformerBlock<T>> blocks_;
  LayerNorm<T> ln_f_;
};

}  // namespace polygrad
