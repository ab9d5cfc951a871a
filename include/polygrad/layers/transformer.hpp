#pragma once
// The model: L pre-LN blocks and a final LayerNorm, model(x) = LN_f(block_L(...block_1(x)))
// (design.md section 1), on one sequence or on a packed batch of sequences (attention/packed.hpp):
// the row-wise layers run on all rows at once, attention on each sequence alone.

#include <chrono>
#include <functional>
#include <utility>
#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/block.hpp"

namespace polygrad {

/// What a model pass reports after each block, for progress lines and profiles.
struct LayerEvent {
  bool backward = false;  ///< the backward pass (else the forward pass)
  /// This block (0 for the first) and how many there are.
  ///@{
  Index layer = 0, layers = 0;
  ///@}
  double seconds = 0;            ///< wall time of this block in this pass
  double attention_seconds = 0;  ///< of which the attention method took this much
};

/// A stack of TransformerBlocks followed by LayerNorm "ln_f". Parameter names, in order:
/// blocks.{i}.ln1.weight|bias [D], blocks.{i}.attn.{q,k,v,o}.weight [D, D] and .bias [D],
/// blocks.{i}.ln2.weight|bias [D], blocks.{i}.mlp.fc1.weight [F, D], blocks.{i}.mlp.fc1.bias [F],
/// blocks.{i}.mlp.fc2.weight [D, F], blocks.{i}.mlp.fc2.bias [D], then ln_f.weight|bias [D].
/// Move-only (each attention layer owns its pending context).
///
/// The model keeps the residual stream -- every block's input and the input of ln_f, (L + 1)
/// matrices n x D -- in buffers that live as long as it does; each block keeps what its backward
/// pass needs (block.hpp; with set_recompute(true) only its attention output and normalisers).
/// Its input and parameters are checked once, in forward(); the blocks check nothing more.
template <class T>
class Transformer : public CompositeLayer<Transformer<T>, T> {
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
    share_buffers();
    init(default_seed);
  }

  using CompositeLayer<Transformer<T>, T>::init;

  /// Deterministic initialisation from std::mt19937_64(seed): every Linear weight
  /// ~ Normal(0, stddev^2) (Box-Muller on the generator's raw output, so the same on every
  /// platform), drawn in parameter-name order; biases zero; LayerNorm gain 1, shift 0.
  void init(std::uint64_t seed, double stddev = default_init_std) {
    std::mt19937_64 rng(seed);
    init(rng, stddev);
  }

  /// The output (n x D) for x (n x D); every block keeps what its backward needs. With
  /// `offsets`, x is a packed batch of sequences (attention/packed.hpp) and each sequence attends
  /// to itself only: the rows of one sequence never change another's output or gradients.
  /// Throws NumericError if x or a parameter holds NaN or infinity.
  Matrix<T> forward(const Matrix<T>& x, const SequenceOffsets& offsets = {}) {
    if (shard_.split()) {
      require<Error>(offsets.size() <= 2, "Transformer: a packed batch of sequences cannot also ",
                     "be split across processes; split one long sequence, or pack sequences on ",
                     "each process without a shard");
      check_shard(x);
    } else {
      detail::require_input(x, config_.d_model, "Transformer input");
    }
    check_offsets(offsets, x.rows(), "Transformer");
    for (auto& block : blocks_) block.set_sequences(offsets);
    detail::require_finite_parameters(parameters());
    const Index n = x.rows(), L = Index(blocks_.size());
    stream_.resize(std::size_t(L + 1));
    stream_[0] = x;
    for (Index l = 0; l < L; ++l) {
      const auto start = std::chrono::steady_clock::now();
      TransformerBlock<T>& block = blocks_[std::size_t(l)];
      Matrix<T>& out = stream_[std::size_t(l + 1)];
      within(block_name(l), [&] {
        block.forward(stream_[std::size_t(l)], out);
        // Split sequences check the model's output on every rank at once instead (no hang).
        if (!shard_.split()) require_finite(out, "the block's output");
      });
      report(false, l, start, block.attn().attention_seconds().first);
    }
    Matrix<T> y(n, config_.d_model);
    const Matrix<T>& last = stream_.back();
    detail::for_row_blocks(n, threading_, detail::row_parts(threading_, n, 8.0 * config_.d_model),
                           [&](int, Index b, Index s) {
                             ln_f_.forward_rows(last.middleRows(b, s), y.middleRows(b, s));
                           });
    const bool finite = y.allFinite();
    if (shard_.split()) finite_on_every_rank(finite);
    require<NumericError>(finite, "the Transformer's output contains NaN or infinity ",
                          "although its input and parameters are finite: an activation ",
                          "overflowed; use double or smaller weights");
    cached_ = true;
    return y;
  }

  /// Returns dL/dx for dL/dy (n x D); accumulates every parameter gradient.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "Transformer");
    const Index n = stream_.front().rows(), L = Index(blocks_.size());
    require_shape(dy, n, config_.d_model, "Transformer output gradient");
    if (shard_.split()) {
      require_on_every_rank<NumericError>(*shard_.group, dy.allFinite(), "the Transformer ",
                                          "output gradient contains NaN or infinity");
    } else {
      require_finite(dy, "Transformer output gradient");
    }
    Matrix<T> d(n, config_.d_model);
    {
      const Matrix<T>& last = stream_.back();
      const int parts = detail::row_parts(threading_, n, 16.0 * config_.d_model);
      std::vector<typename LayerNorm<T>::Gradient> g(std::size_t(parts), ln_f_.zero_gradient());
      detail::for_row_blocks(n, threading_, parts, [&](int p, Index b, Index s) {
        ln_f_.backward_rows(last.middleRows(b, s), dy.middleRows(b, s), d.middleRows(b, s),
                            g[std::size_t(p)]);
      });
      detail::accumulate_parts(ln_f_, g);
    }
    for (Index l = L - 1; l >= 0; --l) {
      const auto start = std::chrono::steady_clock::now();
      TransformerBlock<T>& block = blocks_[std::size_t(l)];
      within(block_name(l), [&] { block.backward(stream_[std::size_t(l)], d); });
      report(true, l, start, block.attn().attention_seconds().second);
    }
    cached_ = false;
    return d;
  }

  /// The parts, in parameter order: "blocks.0", ..., "blocks.{L-1}", "ln_f" (see
  /// CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    for (std::size_t i = 0; i < blocks_.size(); ++i) visit(block_name(Index(i)), blocks_[i]);
    visit("ln_f", ln_f_);
  }

  /// Every parameter, named without a prefix ("blocks.0.ln1.weight", ..., "ln_f.bias").
  ParameterList<T> parameters() {
    ParameterList<T> out;
    this->collect_parameters("", out);
    return out;
  }

  /// Uses `method` (nullptr: ExactAttention<T>) in every block from the next forward() on.
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    for (auto& block : blocks_) block.set_attention(method);
  }

  /// With recomputation on, each block keeps only its attention output and normalisers between
  /// forward and backward and recomputes the rest (block.hpp, docs/memory.md); the blocks then
  /// share one set of Q, K, V buffers. Off (the default), everything is kept.
  void set_recompute(bool on) {
    require<Error>(!cached_, "set_recompute between forward and backward: run the pending ",
                   "backward pass first");
    recompute_ = on;
    for (auto& block : blocks_) block.set_recompute(on);
    share_buffers();
  }
  /// Whether recomputation is on (set_recompute).
  bool recompute() const { return recompute_; }

  /// The threads every pass of the model may use (core/threading.hpp).
  void set_threading(const Threading& threading) {
    threading_ = threading;
    for (auto& block : blocks_) block.set_threading(threading);
  }
  /// The threads the passes may use (set_threading).
  const Threading& threading() const { return threading_; }

  /// The part of the sequence this process holds when it is split across processes
  /// (parallel/group.hpp; design.md section 8). forward() then takes this shard's rows, every
  /// rank's parameters must be the same (checked), and backward() leaves each rank the
  /// gradients of its own rows: sum_gradients (parallel/reduce.hpp) adds them up.
  void set_shard(const SequenceShard& shard) {
    require<Error>(!cached_, "set_shard between forward and backward: run the pending backward ",
                   "pass first");
    shard_ = shard;
    for (auto& block : blocks_) block.set_shard(shard);
  }
  /// The part of the sequence this process holds (set_shard).
  const SequenceShard& shard() const { return shard_; }

  /// Called after each block of each pass (progress lines, profiles); empty for none.
  void set_observer(std::function<void(const LayerEvent&)> observer) {
    observer_ = std::move(observer);
  }

  /// Seconds the attention methods took in the last forward and backward passes, all blocks.
  std::pair<double, double> attention_seconds() const {
    std::pair<double, double> total{0, 0};
    for (const auto& block : blocks_) {
      total.first += block.attn().attention_seconds().first;
      total.second += block.attn().attention_seconds().second;
    }
    return total;
  }

  /// One string per block: describe() of its last attention context.
  std::vector<std::string> describe_attention() const {
    std::vector<std::string> out;
    for (const auto& block : blocks_) out.push_back(block.describe_attention());
    return out;
  }

  /// One vector per block: the head plans of its last attention pass.
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
  /// "blocks.{l}": block l's name in parameter names and error locations.
  static std::string block_name(Index l) { return "blocks." + std::to_string(l); }

  /// The checks of forward() on a split sequence, made on every rank at once so that all throw
  /// together: the input's shape and values, and the same parameters everywhere (their sum
  /// in double, taken in one order, is the same bit for bit when they are).
  void check_shard(const Matrix<T>& x) {
    SequenceGroup& group = *shard_.group;
    require_on_every_rank<ShapeError>(group, x.cols() == config_.d_model, "Transformer input: ",
                                      "every rank's rows must have d_model = ", config_.d_model,
                                      " columns; this rank's have ", x.cols());
    require_on_every_rank<NumericError>(group, x.allFinite(), "Transformer input contains NaN ",
                                        "or infinity; check the input data");
    double sum = 0;
    for (const auto& p : parameters()) sum += p.values().template cast<double>().sum();
    require_same_on_every_rank<Error>(group, sum, "Transformer: the ranks hold different ",
                                      "parameters; initialise them with the same seed or load ",
                                      "the same checkpoint on every rank");
  }

  /// Throws the same NumericError on every rank if any rank's output is not finite.
  void finite_on_every_rank(bool finite) {
    require_on_every_rank<NumericError>(*shard_.group, finite, "the Transformer's output ",
                                        "contains NaN or infinity although its input and ",
                                        "parameters are finite: an activation overflowed; use ",
                                        "double or smaller weights");
  }

  // Attention gradients are needed by one block at a time, so every block uses one set; with
  // recomputation Q, K, V are too.
  void share_buffers() {
    auto gradients = std::make_shared<AttentionGradients<T>>();
    auto inputs = recompute_ ? std::make_shared<AttentionInputs<T>>() : nullptr;
    for (auto& block : blocks_) block.share_buffers(inputs, gradients);
  }

  void report(bool backward, Index layer, std::chrono::steady_clock::time_point start,
              double attention_seconds) const {
    if (!observer_) return;
    LayerEvent e;
    e.backward = backward;
    e.layer = layer;
    e.layers = Index(blocks_.size());
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    e.attention_seconds = attention_seconds;
    observer_(e);
  }

  TransformerConfig config_;
  std::vector<TransformerBlock<T>> blocks_;
  LayerNorm<T> ln_f_;
  std::vector<Matrix<T>> stream_;  // cached for backward: the input of each block and of ln_f
  bool cached_ = false, recompute_ = false;
  Threading threading_;
  SequenceShard shard_;
  std::function<void(const LayerEvent&)> observer_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_TRANSFORMER_INSTANCES(how, T) how class Transformer<T>;
POLYGRAD_INSTANCES(POLYGRAD_TRANSFORMER_INSTANCES)

}  // namespace polygrad
