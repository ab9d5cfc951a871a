#pragma once
// The forward pass of a LanguageModel for inference: logits with nothing kept for a backward
// pass. Where LanguageModel::forward keeps every block's input, Q, K, V, the attention output
// and the MLP's n x d_ff activations, this keeps the residual stream (n x D), one block's Q, K,
// V and attention output at a time (4 n x D) and, per thread, a row block's MLP activations --
// plus whatever the attention method needs while it runs. The Decoder's prefill and
// polygrad_train's held-out evaluation use it.

#include <memory>
#include <vector>

#include "polygrad/attention/packed.hpp"
#include "polygrad/core/instances.hpp"
#include "polygrad/layers/language_model.hpp"

namespace polygrad {
namespace detail {

/// One block's inference rows, n x D each (the norms n x H), kept across the blocks of a pass.
template <class T>
struct InferenceRows {
  Matrix<T> q, k, v, o, norms;

  void resize(Index n, Index D, Index heads) {
    q.resize(n, D);
    k.resize(n, D);
    v.resize(n, D);
    o.resize(n, D);
    norms.resize(n, heads);
  }
};

/// tok_emb[ids] + pos_emb[positions] (n x D). Throws ShapeError for an id outside the vocabulary.
template <class T>
Matrix<T> embed_rows(LanguageModel<T>& model, const std::vector<int>& ids,
                     const std::vector<int>& positions, const char* who) {
  const Index n = Index(ids.size()), vocab = model.config().vocab;
  Matrix<T> x(n, model.config().transformer.d_model);
  for (Index i = 0; i < n; ++i) {
    const int id = ids[std::size_t(i)];
    require<ShapeError>(id >= 0 && id < vocab, who, ": token id ", id, " (row ", i,
                        ") is outside the vocabulary [0, ", vocab, ")");
    x.row(i) = model.token_embedding().weight().row(id) +
               model.position_embedding().weight().row(positions[std::size_t(i)]);
  }
  return x;
}

/// x (n x D) <- block(x), keeping nothing: rows.q, rows.k, rows.v get the projections of
/// LN1(x) (normalised per head under QK normalisation), attend(q, k, v, o) fills rows.o with
/// the attention output, then x <- h + MLP(LN2(h)) for h = x + O(o), a row block at a time.
template <class T, class Attend>
void infer_block(TransformerBlock<T>& block, Matrix<T>& x, InferenceRows<T>& rows,
                 Attend&& attend) {
  MultiHeadAttention<T>& attn = block.attn();
  const Threading& threading = attn.threading();
  const Index n = x.rows(), D = x.cols(), H = attn.heads();
  const Index F = block.mlp().fc1().out_features(),
              rows_per_block = std::max<Index>(threading.row_block, 1);
  rows.resize(n, D, H);
  int parts = row_parts(threading, n, 3.0 * double(D) * double(D));
  std::vector<Matrix<T>> a(std::size_t(parts), Matrix<T>(std::min(n, rows_per_block), D));
  for_row_blocks(n, threading, parts, [&](int part, Index b, Index s) {
    auto ab = a[std::size_t(part)].topRows(s);
    block.ln1().forward_rows(x.middleRows(b, s), ab);
    attn.q().forward_rows(ab, rows.q.middleRows(b, s));
    attn.k().forward_rows(ab, rows.k.middleRows(b, s));
    attn.v().forward_rows(ab, rows.v.middleRows(b, s));
    if (attn.qk_norm()) {
      normalise_head_rows<T>(rows.q.middleRows(b, s), rows.norms.middleRows(b, s));
      normalise_head_rows<T>(rows.k.middleRows(b, s), rows.norms.middleRows(b, s));
    }
  });
  attend(rows.q, rows.k, rows.v, rows.o);
  parts = row_parts(threading, n, double(D) * double(D + 2 * F));
  struct Scratch {
    Matrix<T> h, u, f, g;
  };
  const Index r = std::min(n, rows_per_block);
  std::vector<Scratch> scratch(std::size_t(parts), Scratch{Matrix<T>(r, D), Matrix<T>(r, D),
                                                           Matrix<T>(r, F), Matrix<T>(r, F)});
  for_row_blocks(n, threading, parts, [&](int part, Index b, Index s) {
    Scratch& w = scratch[std::size_t(part)];
    auto h = w.h.topRows(s);
    attn.o().forward_rows(rows.o.middleRows(b, s), h);
    h += x.middleRows(b, s);
    block.ln2().forward_rows(h, w.u.topRows(s));
    block.mlp().forward_rows(w.u.topRows(s), w.f.topRows(s), w.g.topRows(s), x.middleRows(b, s));
    x.middleRows(b, s) += h;
  });
}

/// LN_f(x) (rows x D) times the LM head: logits (rows x vocab). Throws NumericError for NaN or
/// infinity in them.
template <class T>
Matrix<T> infer_logits_of(LanguageModel<T>& model, const ConstMatrixRef<T>& x, const char* who) {
  Matrix<T> y(x.rows(), x.cols());
  model.transformer().ln_f().forward_rows(x, y);
  Matrix<T> logits(x.rows(), model.config().vocab);
  logits.noalias() = y * model.head().weight().transpose();
  require<NumericError>(logits.allFinite(), who, ": the logits contain NaN or infinity ",
                        "although the parameters are finite: an activation overflowed; use ",
                        "double or smaller weights");
  return logits;
}

}  // namespace detail

/// Logits (n x vocab) of `ids` with nothing kept for a backward pass (see the file comment):
/// the same function as LanguageModel::forward, or forward_packed with `offsets`
/// (attention/packed.hpp: each sequence at positions 0, 1, ... of its own, attending to itself
/// only). `method` replaces the attention of every layer for this call (nullptr: the model's
/// own), so that, say, a model trained with polynomial gradients is evaluated with exact
/// attention without being changed. Leaves the model as it was, a pending backward included.
/// Throws ShapeError for an id outside the vocabulary, bad offsets or a sequence longer than
/// the context, Error for a model split across processes, NumericError for a parameter or
/// result that is not finite.
template <class T>
Matrix<T> infer_logits(LanguageModel<T>& model, const std::vector<int>& ids,
                       const SequenceOffsets& offsets = {},
                       std::shared_ptr<const AttentionMethod<T>> method = nullptr) {
  constexpr const char* who = "infer_logits";
  Transformer<T>& transformer = model.transformer();
  require<Error>(!transformer.shard().split(), who, ": the model is split across processes ",
                 "(set_shard); infer on a model without a shard");
  require<ShapeError>(!ids.empty(), who, ": no tokens; pass at least one");
  check_offsets(offsets, Index(ids.size()), who);
  detail::require_finite_parameters(model.parameters());
  Matrix<T> x = detail::embed_rows(model, ids, model.positions(Index(ids.size()), offsets), who);
  detail::InferenceRows<T> rows;
  for (Index l = 0; l < transformer.config().layers; ++l) {
    TransformerBlock<T>& block = transformer.block(l);
    const MultiHeadAttention<T>& attn = block.attn();
    detail::infer_block(
        block, x, rows,
        [&](const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) {
          AttentionShape shape(attn.heads(), attn.causal(), attn.scale(),
                               attn.qk_norm().value_or(0.0));
          shape.threading = attn.threading();
          attention_forward_packed(method ? *method : attn.attention(), q, k, v, shape, offsets, o);
        });
  }
  return detail::infer_logits_of<T>(model, x, who);
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_INFER_LOGITS_INSTANCES(how, T)                             \
  how Matrix<T> infer_logits<T>(LanguageModel<T>&, const std::vector<int>&, \
                                const SequenceOffsets&,                     \
                                std::shared_ptr<const AttentionMethod<T>>);
POLYGRAD_INSTANCES(POLYGRAD_INFER_LOGITS_INSTANCES)

}  // namespace polygrad
