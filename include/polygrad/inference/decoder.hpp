#pragma once
// Decoding one token at a time from a causal LanguageModel, with nothing kept for a backward
// pass. Each layer keeps, per head, what the next token's attention needs:
//
//   - polynomial attention (the model's method is PolyAttention on every head): the running
//     state S = sum_j w o m(kh_j) [v_j 1]^T, k x (d_h + 1), of the features of the keys seen so
//     far (design.md section 9: the scan's state after the last key). A new token adds
//     its key and reads m(qh_i)^T S, O(k d_h) per head whatever the context length: the
//     recurrent form of the approximate model, the same function as its full forward pass.
//   - exact attention: the keys and values of every token so far, so a new token costs O(n d_h).
//
// The polynomial state needs an approximation fixed before the data -- QK normalisation or
// PolyOptions::bound -- since a bound taken from the data would change with every token.

#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "polygrad/attention/poly.hpp"
#include "polygrad/core/instances.hpp"
#include "polygrad/inference/forward.hpp"
#include "polygrad/layers/language_model.hpp"

namespace polygrad {

/// Logits of the next token, one token at a time, from a causal LanguageModel's parameters.
/// Reads the model's parameters in place: the model must outlive the decoder and not change
/// while it is in use (train, then decode). The attention of every layer is that of the model's
/// method: PolyAttention (every head) decodes from its recurrent state, ExactAttention from a
/// cache of keys and values.
template <class T>
class Decoder {
 public:
  /// A decoder at position 0. Throws PlanError for a model that cannot decode token by token:
  /// bidirectional, method "auto" (its per-head choice depends on the length), or polynomial
  /// attention whose bound comes from the data.
  explicit Decoder(LanguageModel<T>& model) : model_(model) {
    const TransformerConfig& config = model.config().transformer;
    require<PlanError>(config.causal, "Decoder: the model is bidirectional (every token sees ",
                       "later ones), so it cannot decode one token at a time; use a causal model");
    const Index H = config.heads, dh = config.d_model / config.heads;
    layers_.resize(std::size_t(config.layers));
    for (Index l = 0; l < config.layers; ++l) {
      const MultiHeadAttention<T>& attn = model.transformer().block(l).attn();
      const auto* poly = dynamic_cast<const PolyAttention<T>*>(&attn.attention());
      require<PlanError>(attn.attention().name() != "auto", "Decoder: method auto chooses the ",
                         "path of every head from the sequence length; decode with method poly ",
                         "or exact");
      if (!poly) continue;  // exact: a cache of keys and values
      const PolyOptions& options = poly->options();
      require<PlanError>(options.bound > 0 || attn.qk_norm(), "Decoder: the polynomial ",
                         "attention of layer ", l, " takes its bound R from the data, which ",
                         "changes with every token; use ",
                         detail::one_of({detail::named("QK normalisation", options.names.qk_norm),
                                         detail::named("a fixed bound", options.names.bound)}));
      AttentionShape shape(1, true, attn.scale(), attn.qk_norm().value_or(0.0));
      const Matrix<T> none(0, dh);
      Layer& layer = layers_[std::size_t(l)];
      for (Index h = 0; h < H; ++h) {
        layer.heads.push_back(make_poly_approximation(none, none, shape, options));
        const PolyApproximation& a = layer.heads.back();
        layer.states.push_back(Matrix<double>::Zero(dh + 1, a.features.size()));
      }
    }
    reset();
  }

  /// Back to position 0: forgets every token.
  void reset() {
    position_ = 0;
    for (Layer& layer : layers_) {
      for (Matrix<double>& S : layer.states) S.setZero();
      layer.keys.resize(0, 0);
      layer.values.resize(0, 0);
    }
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

  /// Whether layer l attends from the polynomial state (else from its key and value cache).
  bool recurrent(Index l) const { return !layers_.at(std::size_t(l)).heads.empty(); }

  /// The plan of head h of layer l (a recurrent layer): degree, rank, bound, certified error.
  const HeadPlan& plan(Index l, Index h) const {
    return layers_.at(std::size_t(l)).heads.at(std::size_t(h)).plan;
  }

 private:
  struct Layer {
    std::vector<PolyApproximation> heads;  // per head; empty for an exact layer
    std::vector<Matrix<double>> states;  // per head, (d_h + 1, k): sum_j [v_j 1]^T (w o m(kh_j))^T
    Matrix<T> keys, values;              // exact layer: (capacity, D), rows < position used
  };

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
      Layer& layer = layers_[std::size_t(l)];
      detail::infer_block(
          block, x, rows_,
          [&](const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) {
            if (n == 1) return attend(layer, attn, q, k, v, o);
            AttentionShape shape(attn.heads(), true, attn.scale(), attn.qk_norm().value_or(0.0));
            shape.threading = attn.threading();
            attn.attention().forward(q, k, v, shape, o);
            remember(layer, attn, k, v);
          });
    }
    position_ += n;
    return detail::infer_logits_of<T>(model_, x.bottomRows(1), who).row(0).transpose();
  }

  /// Takes the keys and values of a prompt (n x D) into the caches or the states.
  void remember(Layer& layer, const MultiHeadAttention<T>& attn, const Matrix<T>& k,
                const Matrix<T>& v) {
    if (layer.heads.empty()) {
      layer.keys = k;
      layer.values = v;
      return;
    }
    const Index H = attn.heads(), dh = attn.d_model() / H, n = k.rows();
    detail::parallel_for(H, detail::thread_count(attn.threading()), [&](Index hd) {
      const PolyApproximation& a = layer.heads[std::size_t(hd)];
      const Index rows = 256;
      Matrix<double> M(rows, a.features.size()), values(rows, dh + 1);
      for (Index b = 0; b < n; b += rows) {
        const Index s = std::min(rows, n - b);
        for (Index j = 0; j < s; ++j) {
          const Vector<double> kh =
              k.row(b + j).segment(hd * dh, dh).transpose().template cast<double>() * a.k_scale;
          M.row(j) =
              (monomials(a.features, kh).array() * a.pair_weight.array()).matrix().transpose();
        }
        values.topLeftCorner(s, dh) = v.block(b, hd * dh, s, dh).template cast<double>();
        values.col(dh).head(s).setOnes();
        layer.states[std::size_t(hd)].noalias() += values.topRows(s).transpose() * M.topRows(s);
      }
    });
  }

  /// The attention output o (1 x D) of the token at position() from its q, k, v (1 x D each),
  /// the heads in parallel when their work is worth it.
  void attend(Layer& layer, const MultiHeadAttention<T>& attn, const Matrix<T>& q,
              const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) {
    const Index H = attn.heads(), dh = attn.d_model() / H;
    const bool exact = layer.heads.empty();
    if (exact) {
      append(layer.keys, k);
      append(layer.values, v);
    }
    const Index n = position_ + 1;
    const double work =
        exact ? 4.0 * double(n) * double(dh) * double(H)
              : 4.0 * double(layer.heads[0].features.size()) * double(dh + 1) * double(H);
    const int threads = detail::threads_for(attn.threading(), H, work);
    detail::parallel_for(H, threads, [&](Index hd) {
      auto out = o.row(0).segment(hd * dh, dh);
      const auto qh = q.row(0).segment(hd * dh, dh);
      if (exact) {
        const auto keys = layer.keys.block(0, hd * dh, n, dh);
        const auto values = layer.values.block(0, hd * dh, n, dh);
        Vector<T> s = (keys * qh.transpose()) * T(attn.scale());
        s = (s.array() - s.maxCoeff()).exp().matrix();
        out = (s.transpose() * values) / s.sum();
        return;
      }
      const PolyApproximation& a = layer.heads[std::size_t(hd)];
      Matrix<double>& S = layer.states[std::size_t(hd)];
      RowVector<double> value(dh + 1);
      value << v.row(0).segment(hd * dh, dh).template cast<double>(), 1.0;
      const Vector<double> key =
          k.row(0).segment(hd * dh, dh).transpose().template cast<double>() * a.k_scale;
      const Vector<double> weighted_key = monomials(a.features, key).cwiseProduct(a.pair_weight);
      const Vector<double> query =
          monomials(a.features, qh.transpose().template cast<double>() * a.q_scale);
      const RowVector<double> numerator = read_and_add(S, query, weighted_key, value);
      const double z = numerator(dh);
      require<NumericError>(z > 0 && std::isfinite(z), "Decoder: the polynomial normaliser of ",
                            "head ", hd, " at position ", position_, " is ", z,
                            "; the plan's bound does not hold or its degree certifies nothing: ",
                            "raise the degree or use QK normalisation");
      out = (numerator.head(dh) / z).template cast<T>();
    });
  }

  /// m(q)^T S' for S' = S + w o m(k) [v 1], which it writes to S (stored transposed, (d_h + 1)
  /// x k): one pass over the state, whose size (megabytes per layer) sets a step's time.
  static RowVector<double> read_and_add(Matrix<double>& S, const Vector<double>& query,
                                        const Vector<double>& weighted_key,
                                        const RowVector<double>& value) {
    RowVector<double> numerator(S.rows());
    for (Index j = 0; j < S.rows(); ++j) {  // row by row, so that the row is in cache for both
      numerator(j) = S.row(j).dot(query.transpose());
      S.row(j) += value(j) * weighted_key.transpose();
    }
    return numerator + query.dot(weighted_key) * value;  // the new key's own term
  }

  /// The unweighted monomials m_f(x) of every feature f: (k).
  static Vector<double> monomials(const SymmetricFeatures& features, const Vector<double>& x) {
    Vector<double> m(features.size());
    m(0) = 1;
    for (Index f = 1; f < features.size(); ++f)
      m(f) = m(features.parent(f)) * x(features.last_coordinate(f));
    return m;
  }

  /// Writes row r (1 x D) at row position() of a cache, doubling its capacity when full.
  void append(Matrix<T>& cache, const Matrix<T>& r) const {
    if (cache.rows() <= position_) {
      const Index capacity =
          std::min<Index>(std::max<Index>(2 * cache.rows(), 64), model_.config().context);
      cache.conservativeResize(capacity, r.cols());
    }
    cache.row(position_) = r.row(0);
  }

  LanguageModel<T>& model_;
  std::vector<Layer> layers_;
  detail::InferenceRows<T> rows_;  // one block's rows, kept from step to step
  Index position_ = 0;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_DECODER_INSTANCES(how, T) how class Decoder<T>;
POLYGRAD_INSTANCES(POLYGRAD_DECODER_INSTANCES)

}  // namespace polygrad
