#pragma once
// Decoding one token at a time from a causal LanguageModel, with nothing kept for a backward
// pass. Each layer keeps the DecodingState of its attention method (attention/method.hpp):
//
//   - polynomial attention: per head, the running state of the features of the keys seen so far
//     (attention/poly_decoding.hpp), so a new token costs O(k d_h) per head whatever the
//     context length: the recurrent form of the approximate model, the same function as its
//     full forward pass;
//   - exact attention: the keys and values of every token so far
//     (attention/exact_decoding.hpp), so a new token costs O(n d_h).
//
// The rows of a block run through the same stages as the model's inference pass
// (inference/forward.hpp).

#include <memory>
#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/inference/forward.hpp"
#include "polygrad/layers/language_model.hpp"

namespace polygrad {

/// Logits of the next token, one token at a time, from a causal LanguageModel's parameters.
/// Reads the model's parameters in place: the model must outlive the decoder and not change
/// while it is in use (train, then decode). Every layer decodes with its attention method's
/// DecodingState: PolyAttention from a recurrent state, ExactAttention from a cache of keys and
/// values.
template <class T>
class Decoder {
 public:
  /// A decoder at position 0. Throws PlanError for a model that cannot decode token by token:
  /// bidirectional, or a layer whose method cannot (AttentionMethod::decoding_state says why:
  /// method auto, polynomial attention whose bound comes from the data); the error's location
  /// names the layer.
  explicit Decoder(LanguageModel<T>& model) : model_(model) {
    const TransformerConfig& config = model.config().transformer;
    require<PlanError>(config.causal, "Decoder: the model is bidirectional (every token sees ",
                       "later ones), so it cannot decode one token at a time; use a causal model");
    for (Index l = 0; l < config.layers; ++l) {
      const MultiHeadAttention<T>& attn = model.transformer().block(l).attn();
      within_layer(l, [&] {
        layers_.push_back(attn.attention().decoding_state(shape_of(attn), attn.d_model()));
      });
    }
    reset();
  }

  /// Back to position 0: forgets every token.
  void reset() {
    position_ = 0;
    for (auto& layer : layers_) layer->reset();
  }

  /// Logits (vocab) of the token after `token`, which goes at position(); advances by one.
  /// Throws Error when the model's context is full, ShapeError for an id outside the vocabulary.
  Vector<T> step(int token) { return run({token}); }

  /// Starts again from `prompt` (at least one token): reset(), then the whole prompt in one
  /// pass -- the row-wise layers on all its rows, each layer's attention by the model's method
  /// on the whole prompt, the states or caches filled from its keys and values -- keeping only
  /// one layer's activations at a time. Returns the logits (vocab) of the token after the
  /// prompt; the next step() continues from there.
  Vector<T> prefill(const std::vector<int>& prompt) {
    require<ShapeError>(!prompt.empty(), "Decoder::prefill: the prompt is empty; pass at least ",
                        "one token");
    reset();
    return run(prompt);
  }

  /// The position of the next token: the number of tokens seen since reset().
  Index position() const { return position_; }

  /// Whether layer l attends from a recurrent state of fixed size (else from a cache of keys
  /// and values).
  bool recurrent(Index l) const { return layers_.at(std::size_t(l))->recurrent(); }

  /// How head h of layer l attends at each step (degree, rank, bound and certified error of a
  /// recurrent layer).
  HeadPlan plan(Index l, Index h) const {
    return layers_.at(std::size_t(l))->plans().at(std::size_t(h));
  }

 private:
  /// The shape of layer attn's attention, causal, as its forward pass has it.
  static AttentionShape shape_of(const MultiHeadAttention<T>& attn) {
    AttentionShape shape(attn.heads(), true, attn.scale(), attn.qk_norm().value_or(0.0));
    shape.threading = attn.threading();
    return shape;
  }

  /// body(), with the location of layer l's attention added to an Error it throws.
  template <class Body>
  static void within_layer(Index l, Body&& body) {
    try {
      body();
    } catch (Error& e) {
      e.add_location(detail::concat("transformer.blocks.", l, ".attn"));
      throw;
    }
  }

  /// Runs `ids` at positions position() .. position() + n - 1 (n > 1 only from position 0)
  /// and returns the logits (vocab) after the last of them.
  Vector<T> run(const std::vector<int>& ids) {
    constexpr const char* who = "Decoder";
    const Index n = Index(ids.size()), context = model_.config().context;
    require<Error>(position_ + n <= context, "Decoder: the model's context of ", context,
                   " positions is full; reset() or build the model with a longer context");
    std::vector<int> positions(ids.size());
    for (Index i = 0; i < n; ++i) positions[std::size_t(i)] = int(position_ + i);
    Matrix<T> x = detail::embed_rows(model_, ids, positions, who);
    Transformer<T>& transformer = model_.transformer();
    for (Index l = 0; l < Index(layers_.size()); ++l) {
      TransformerBlock<T>& block = transformer.block(l);
      const MultiHeadAttention<T>& attn = block.attn();
      DecodingState<T>& state = *layers_[std::size_t(l)];
      detail::infer_block(
          block, x, rows_,
          [&](const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) {
            within_layer(l, [&] {
              if (n == 1) return state.step(q, k, v, o);
              attn.attention().forward(q, k, v, shape_of(attn), o);
              state.remember(k, v);
            });
          });
    }
    position_ += n;
    return detail::infer_logits_of<T>(model_, x.bottomRows(1), who).row(0).transpose();
  }

  LanguageModel<T>& model_;
  std::vector<std::unique_ptr<DecodingState<T>>> layers_;  // per layer
  detail::InferenceRows<T> rows_;  // one block's rows, kept from step to step
  Index position_ = 0;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_DECODER_INSTANCES(how, T) how class Decoder<T>;
POLYGRAD_INSTANCES(POLYGRAD_DECODER_INSTANCES)

}  // namespace polygrad
