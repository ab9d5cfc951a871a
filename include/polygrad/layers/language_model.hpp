#pragma once
// A language model: token embedding + learned position embedding -> Transformer -> LM head,
// token ids in, logits out. io/language_model_file.hpp saves and loads it with its
// configuration; loss/cross_entropy.hpp scores its logits.

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/composite.hpp"
#include "polygrad/layers/embedding.hpp"
#include "polygrad/layers/lm_head.hpp"
#include "polygrad/layers/transformer.hpp"

namespace polygrad {

/// The shape of a LanguageModel.
struct LanguageModelConfig {
  Index vocab = 256;              ///< token ids lie in [0, vocab)
  Index context = 256;            ///< positions lie in [0, context): the longest sequence it takes
  TransformerConfig transformer;  ///< the blocks between the embeddings and the head

  /// Throws ShapeError (or Error) naming the first inconsistent field.
  void validate() const {
    require<ShapeError>(vocab >= 1, "LanguageModelConfig: vocab must be >= 1, got ", vocab);
    require<ShapeError>(context >= 1, "LanguageModelConfig: context must be >= 1, got ", context);
    transformer.validate();
  }
};

/// Token ids (n of them, at positions first .. first + n - 1) to logits (n x vocab):
/// x = tok_emb[ids] + pos_emb[positions], logits = lm_head(Transformer(x)). Parameters, in order:
/// tok_emb.weight [vocab, D], pos_emb.weight [context, D], transformer.* (transformer.hpp),
/// lm_head.weight [vocab, D]. Move-only, like the Transformer it holds.
template <class T>
class LanguageModel : public CompositeLayer<LanguageModel<T>, T> {
 public:
  /// A model for `config` (validated), initialised with init(seed); `method` nullptr means
  /// ExactAttention<T> in every block.
  explicit LanguageModel(const LanguageModelConfig& config,
                         std::shared_ptr<const AttentionMethod<T>> method = nullptr,
                         std::uint64_t seed = Transformer<T>::default_seed)
      : config_((config.validate(), config)),
        tok_emb_(config.vocab, config.transformer.d_model),
        pos_emb_(config.context, config.transformer.d_model),
        transformer_(config.transformer, std::move(method)),
        lm_head_(config.transformer.d_model, config.vocab) {
    init(seed);
  }

  using CompositeLayer<LanguageModel<T>, T>::init;

  /// Deterministic initialisation from one std::mt19937_64(seed), the parts in parameter order:
  /// embeddings and Linear weights ~ Normal(0, stddev^2), biases zero, LayerNorm gain one.
  void init(std::uint64_t seed, double stddev = Transformer<T>::default_init_std) {
    std::mt19937_64 rng(seed);
    init(rng, stddev);
  }

  /// Logits (n x vocab) of the tokens `ids` at positions first, first + 1, ...; keeps what
  /// backward() needs. Throws Error for an id outside the vocabulary or a position outside the
  /// context.
  Matrix<T> forward(const std::vector<int>& ids, Index first = 0) {
    const Index n = Index(ids.size());
    require<ShapeError>(first >= 0 && first + n <= config_.context, "LanguageModel: positions ",
                        first, " .. ", first + n - 1, " do not fit its context of ",
                        config_.context, " positions; pass at most ", config_.context,
                        " tokens or build the model with a longer context");
    std::vector<int> positions(ids.size());
    for (Index i = 0; i < n; ++i) positions[std::size_t(i)] = int(first + i);
    return forward_positions(ids, positions, {});
  }

  /// Logits (n x vocab) of a packed batch: the sequences that `offsets` delimits in `ids`
  /// (attention/packed.hpp), each at positions 0, 1, ... of its own and attending to itself
  /// only, in one pass over all n rows; keeps what backward() needs. Throws ShapeError for bad
  /// offsets or a sequence longer than the context.
  Matrix<T> forward_packed(const std::vector<int>& ids, const SequenceOffsets& offsets) {
    const Index n = Index(ids.size());
    check_offsets(offsets, n, "LanguageModel::forward_packed");
    require<ShapeError>(!offsets.empty(), "LanguageModel::forward_packed: pass the offsets of ",
                        "the sequences (offsets_of_lengths), or call forward() for one sequence");
    return forward_positions(ids, positions(n, offsets), offsets);
  }

  /// The position of each of n rows: 0, 1, ... from the start of its sequence (`offsets`, which
  /// the caller has checked; empty: one sequence of n rows). Throws ShapeError for a sequence
  /// longer than the context.
  std::vector<int> positions(Index n, const SequenceOffsets& offsets) const {
    const SequenceOffsets whole = {0, n};
    const SequenceOffsets& bounds = offsets.empty() ? whole : offsets;
    std::vector<int> out(std::size_t(n), 0);
    for (std::size_t b = 0; b + 1 < bounds.size(); ++b) {
      const Index length = bounds[b + 1] - bounds[b];
      require<ShapeError>(length <= config_.context, "LanguageModel: sequence ", b, " has ", length,
                          " tokens, more than its context of ", config_.context,
                          " positions; split it or build the model with a longer context");
      for (Index i = 0; i < length; ++i) out[std::size_t(bounds[b] + i)] = int(i);
    }
    return out;
  }

  /// Accumulates every parameter gradient for dL/dlogits (n x vocab).
  void backward(const Matrix<T>& dlogits) {
    const Matrix<T> dy = within("lm_head", [&] { return lm_head_.backward(dlogits); });
    const Matrix<T> dx = within("transformer", [&] { return transformer_.backward(dy); });
    tok_emb_.backward(dx);
    pos_emb_.backward(dx);
  }

  /// The parts, in parameter order: "tok_emb", "pos_emb", "transformer", "lm_head" (see
  /// CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    visit("tok_emb", tok_emb_);
    visit("pos_emb", pos_emb_);
    visit("transformer", transformer_);
    visit("lm_head", lm_head_);
  }

  /// Every parameter, named as in a checkpoint ("tok_emb.weight", ..., "lm_head.weight").
  ParameterList<T> parameters() {
    ParameterList<T> out;
    this->collect_parameters("", out);
    return out;
  }

  /// Uses `method` (nullptr: ExactAttention<T>) in every block from the next forward() on.
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    transformer_.set_attention(std::move(method));
  }
  /// The threads every pass may use (core/threading.hpp).
  void set_threading(const Threading& threading) {
    transformer_.set_threading(threading);
    lm_head_.set_threading(threading);
  }

  /// The configuration the model was built with.
  const LanguageModelConfig& config() const { return config_; }
  /// The token embedding "tok_emb", [vocab, D] (for inference/forward.hpp and the Decoder).
  Embedding<T>& token_embedding() { return tok_emb_; }
  /// The position embedding "pos_emb", [context, D].
  Embedding<T>& position_embedding() { return pos_emb_; }
  /// The LM head "lm_head", D -> vocab.
  LMHead<T>& head() { return lm_head_; }
  /// The Transformer between the embeddings and the head (for its recompute, shard, plans).
  Transformer<T>& transformer() { return transformer_; }
  /// The Transformer, read-only.
  const Transformer<T>& transformer() const { return transformer_; }

 private:
  /// tok_emb[ids] + pos_emb[positions] through the Transformer and the head.
  Matrix<T> forward_positions(const std::vector<int>& ids, const std::vector<int>& positions,
                              const SequenceOffsets& offsets) {
    Matrix<T> x = within("tok_emb", [&] { return tok_emb_.forward(ids); });
    x += pos_emb_.forward(positions);
    const Matrix<T> y = within("transformer", [&] { return transformer_.forward(x, offsets); });
    return lm_head_.forward(y);
  }

  LanguageModelConfig config_;
  Embedding<T> tok_emb_, pos_emb_;
  Transformer<T> transformer_;
  LMHead<T> lm_head_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_LANGUAGE_MODEL_INSTANCES(how, T) how class LanguageModel<T>;
POLYGRAD_INSTANCES(POLYGRAD_LANGUAGE_MODEL_INSTANCES)

}  // namespace polygrad
