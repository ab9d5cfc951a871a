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
  Matrix<T> q, k, v, o, q_norms, k_norms;

  void resize(Index n, Index D, Index heads) {
    for (Matrix<T>* m : {&q, &k, &v, &o}) m->resize(n, D);
    q_norms.resize(n, heads);
    k_norms.resize(n, heads);
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

/// x (n x D) <- block(x), keeping nothing: the block's own row stages (TransformerBlock::pre_rows
/// and post_rows) on the caller's buffers, a row block at a time. rows.q, rows.k, rows.v get the
/// projections of LN1(x) (normalised per head under QK normalisation), attend(q, k, v, o)
/// fills rows.o with the attention output, then x <- h + MLP(LN2(h)) for h = x + O(o).
template <class T, class Attend>
void infer_block(const TransformerBlock<T>& block, Matrix<T>& x, InferenceRows<T>& rows,
                 Attend&& attend) {
  const MultiHeadAttention<T>& attn = block.attn();
  const Threading& threading = attn.threading();
  const Index n = x.rows(), D = x.cols(), H = attn.heads();
  const Index F = block.d_ff(), r = std::min(n, std::max<Index>(threading.row_block, 1));
  rows.resize(n, D, H);
  int parts = row_parts(threading, n, attn.projection_work_per_row());
  std::vector<Matrix<T>> a(std::size_t(parts), Matrix<T>(r, D));
  for_row_blocks(n, threading, parts, [&](int part, Index b, Index s) {
    block.pre_rows(x.middleRows(b, s), a[std::size_t(part)].topRows(s), rows.q.middleRows(b, s),
                   rows.k.middleRows(b, s), rows.v.middleRows(b, s), rows.q_norms.middleRows(b, s),
                   rows.k_norms.middleRows(b, s));
  });
  attend(rows.q, rows.k, rows.v, rows.o);
  parts = row_parts(threading, n, block.post_work_per_row());
  struct Scratch {
    Matrix<T> h, u, m, f, g;
  };
  std::vector<Scratch> scratch(
      std::size_t(parts),
      Scratch{Matrix<T>(r, D), Matrix<T>(r, D), Matrix<T>(r, D), Matrix<T>(r, F), Matrix<T>(r, F)});
  for_row_blocks(n, threading, parts, [&](int part, Index b, Index s) {
    Scratch& w = scratch[std::size_t(part)];
    block.post_rows(x.middleRows(b, s), rows.o.middleRows(b, s), w.h.topRows(s), w.u.topRows(s),
                    w.f.topRows(s), w.g.topRows(s), w.m.topRows(s));
    x.middleRows(b, s) = w.h.topRows(s) + w.m.topRows(s);
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
