#pragma once
// The pre-LN transformer block (design.md section 1):
//   h = x + MHA(LN1(x)),  y = h + MLP(LN2(h)).
//
// The row-wise layers run fused, in blocks of Threading::row_block rows split between threads:
// stage "pre" (LN1 and the Q, K, V projections), then attention on the whole sequence, then
// stage "post" (output projection, residual, LN2, MLP, residual). What the backward pass needs
// is either kept (the default) or, with recomputation on, rebuilt from the block input and the
// attention output, the only things kept then (docs/memory.md):
//
//   kept, always      x (by the caller), the attention output O (n x D), its normalisers (n x H)
//   kept, cached mode LN1(x), Q, K, V and their norms, h, LN2(h), the MLP's two n x F activations
//   recomputed        the cached-mode activations, one row block at a time (Q, K, V whole)

#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/config.hpp"
#include "polygrad/layers/layer_norm.hpp"
#include "polygrad/layers/mlp.hpp"
#include "polygrad/layers/multihead_attention.hpp"

namespace polygrad {

/// One pre-LN block. Parameters "ln1.*", "attn.{q,k,v,o}.*", "ln2.*", "mlp.{fc1,fc2}.*".
template <class T>
class TransformerBlock : public CompositeLayer<TransformerBlock<T>, T> {
 public:
  /// A block of width config.d_model with config.heads heads and MLP width config.d_ff;
  /// `method` nullptr means ExactAttention<T>. Throws if the configuration is inconsistent.
  explicit TransformerBlock(const TransformerConfig& config,
                            std::shared_ptr<const AttentionMethod<T>> method = nullptr)
      : D_((config.validate(), config.d_model)),
        F_(config.d_ff),
        ln1_(config.d_model),
        attn_(config.attention(), std::move(method)),
        ln2_(config.d_model),
        mlp_(config.d_model, config.d_ff) {}

  /// y for x (n x D), checked, or for a packed batch of sequences that `offsets` delimits
  /// (attention/packed.hpp); keeps a copy of x for backward(dy).
  Matrix<T> forward(const Matrix<T>& x, const SequenceOffsets& offsets = {}) {
    detail::require_input(x, D_, "TransformerBlock input");
    check_offsets(offsets, x.rows(), "TransformerBlock");
    set_sequences(offsets);
    ParameterList<T> params;
    this->collect_parameters("", params);
    detail::require_finite_parameters(params);
    x_ = x;
    Matrix<T> y;
    forward(x_, y);
    return y;
  }

  /// Returns dx for dy (n x D); accumulates every parameter gradient.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(attn_.attended(), "TransformerBlock");
    require_shape(dy, x_.rows(), D_, "TransformerBlock output gradient");
    require_finite(dy, "TransformerBlock output gradient");
    Matrix<T> d = dy;
    backward(x_, d);
    return d;
  }

  /// y (resized to n x D) for x, which the caller keeps unchanged until backward(x, d): the
  /// form a model uses, with no copy of x and no check of its values (the model checked them).
  void forward(const Matrix<T>& x, Matrix<T>& y) {
    const Index n = x.rows();
    require_shape(x, n, D_, "TransformerBlock input");
    prepare(n);
    y.resize(n, D_);
    for_rows(n, attn_.projection_work_per_row(),
             [&](int p, Index b, Index s) { pre_forward_rows(x, p, b, s); });
    within("attn", [&] { attn_.attend(n); });
    for_rows(n, post_work_per_row(), [&](int p, Index b, Index s) {
      Post post = post_rows(p, b, s);
      post_forward_rows(x, post, b, s);
      y.middleRows(b, s) = post.h + post.m;
    });
  }

  /// The backward pass in place: d holds dL/dy on entry and dL/dx on return. x is the input of
  /// the last forward(x, y).
  void backward(const Matrix<T>& x, Matrix<T>& d) {
    detail::require_forward(attn_.attended(), "TransformerBlock");
    const Index n = x.rows();
    require_shape(d, n, D_, "TransformerBlock output gradient");
    AttentionGradients<T>& grads = attn_.gradients();
    grads.dO.resize(n, D_);
    // Stage post, backwards: d becomes dL/dh, and dO = dL/dh Wo.
    {
      const int parts = detail::row_parts(threading_, n, 3 * post_work_per_row());
      std::vector<PostGradient> g(std::size_t(parts), zero_post_gradient());
      for_rows_on(n, parts, [&](int p, Index b, Index s) {
        Post post = post_rows(p, b, s);
        if (recompute_) post_forward_rows(x, post, b, s);
        post_backward_rows(post, d.middleRows(b, s), b, p, g[std::size_t(p)]);
      });
      for (const PostGradient& part : g) accumulate(part);
    }
    // Attention, backwards, on Q, K, V as attend() saw them.
    if (recompute_) {
      for_rows(n, attn_.projection_work_per_row(),
               [&](int p, Index b, Index s) { pre_forward_rows(x, p, b, s); });
    }
    within("attn", [&] { attn_.attend_backward(); });
    // Stage pre, backwards: d becomes dL/dx = dL/dh + LN1'(dL/da).
    const int parts = detail::row_parts(threading_, n, 2 * attn_.projection_work_per_row());
    std::vector<PreGradient> g(std::size_t(parts), zero_pre_gradient());
    for_rows_on(n, parts, [&](int p, Index b, Index s) {
      Scratch& w = scratch_[std::size_t(p)];
      const auto xb = x.middleRows(b, s);
      auto a = activation(a_, w.a, b, s);
      if (recompute_) ln1_.forward_rows(xb, a);
      auto da = w.du.topRows(s);
      attn_.project_rows_backward(a, b, da, g[std::size_t(p)].attn);
      auto dx = w.dh.topRows(s);
      ln1_.backward_rows(xb, da, dx, g[std::size_t(p)].ln1);
      d.middleRows(b, s) += dx;
    });
    for (const PreGradient& part : g) accumulate(part);
  }

  /// With recomputation on, forward keeps only what the class comment lists as always kept and
  /// backward recomputes the rest; off (the default), everything is kept. The gradients are the
  /// same either way (to rounding: the row-wise layers repeat the same operations). Throws
  /// Error between a forward and its backward, whose buffers depend on the setting.
  void set_recompute(bool on) {
    require<Error>(!attn_.attended(), "set_recompute between forward and backward: run the ",
                   "pending backward pass first");
    recompute_ = on;
  }
  /// Whether recomputation is on (set_recompute).
  bool recompute() const { return recompute_; }

  /// The threads its passes may use, here and in its attention method.
  void set_threading(const Threading& threading) {
    threading_ = threading;
    attn_.set_threading(threading);
  }

  /// The part of the sequence this process holds (MultiHeadAttention::set_shard).
  void set_shard(const SequenceShard& shard) { attn_.set_shard(shard); }

  /// The sequences of the rows the next forward(x, y) receives (MultiHeadAttention::set_sequences).
  void set_sequences(const SequenceOffsets& offsets) { attn_.set_sequences(offsets); }

  /// Uses shared buffers for attention's Q, K, V and gradients (see MultiHeadAttention).
  void share_buffers(std::shared_ptr<AttentionInputs<T>> inputs,
                     std::shared_ptr<AttentionGradients<T>> gradients) {
    attn_.share_buffers(std::move(inputs), std::move(gradients));
  }

  // ---- The row stages, shared by training (forward above) and inference (inference/forward.hpp). ----

  /// Stage pre on rows x (s x D): a = LN1(x), then attention's projections of a into q, k, v
  /// (s x D each) and, under QK normalisation, their norms (s x H each;
  /// MultiHeadAttention::project). Writes its arguments only.
  void pre_rows(const ConstMatrixRef<T>& x, MatrixRef<T> a, MatrixRef<T> q, MatrixRef<T> k,
                MatrixRef<T> v, MatrixRef<T> q_norms, MatrixRef<T> k_norms) const {
    ln1_.forward_rows(x, a);
    attn_.project(a, q, k, v, q_norms, k_norms);
  }

  /// Stage post on rows x (s x D) with attention output o (s x D): h = x + o Wo^T + bo,
  /// u = LN2(h), the MLP's activations f and g (s x F) and m = MLP(u); the block's output is
  /// h + m. Writes its arguments only.
  void post_rows(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& o, MatrixRef<T> h,
                 MatrixRef<T> u, MatrixRef<T> f, MatrixRef<T> g, MatrixRef<T> m) const {
    attn_.o().forward_rows(o, h);
    h += x;
    ln2_.forward_rows(h, u);
    mlp_.forward_rows(u, f, g, m);
  }

  /// Multiply-adds per row of post_rows.
  double post_work_per_row() const { return double(D_) * double(D_) + mlp_.work_per_row(); }

  /// The parts, in parameter order: "ln1", "attn", "ln2", "mlp" (see CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    visit("ln1", ln1_);
    visit("attn", attn_);
    visit("ln2", ln2_);
    visit("mlp", mlp_);
  }

  /// Replaces the attention method (nullptr: ExactAttention<T>).
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    attn_.set_attention(std::move(method));
  }

  /// describe() of the last attention context.
  std::string describe_attention() const { return attn_.describe_attention(); }

  /// The head plans of the last attention pass.
  const std::vector<HeadPlan>& attention_plans() const { return attn_.attention_plans(); }

  /// d_ff, the MLP's width F.
  Index d_ff() const { return F_; }
  /// The LayerNorm before attention, "ln1".
  LayerNorm<T>& ln1() { return ln1_; }
  /// The attention layer, "attn".
  MultiHeadAttention<T>& attn() { return attn_; }
  /// The attention layer, read-only.
  const MultiHeadAttention<T>& attn() const { return attn_; }
  /// The LayerNorm before the MLP, "ln2".
  LayerNorm<T>& ln2() { return ln2_; }
  /// The MLP, "mlp".
  MLP<T>& mlp() { return mlp_; }

 private:
  // Per-thread buffers of one row block: (row_block, D) or (row_block, F).
  struct Scratch {
    Matrix<T> a, h, u, m, du, dh;  // (B, D)
    Matrix<T> f, g, dg;            // (B, F)
  };
  // The activations of stage post for one row block: kept ones or the thread's scratch.
  struct Post {
    MatrixRef<T> h, u, f, g, m;
  };
  struct PostGradient {
    typename Linear<T>::Gradient o;
    typename LayerNorm<T>::Gradient ln2;
    typename MLP<T>::Gradient mlp;
  };
  struct PreGradient {
    typename MultiHeadAttention<T>::Gradient attn;
    typename LayerNorm<T>::Gradient ln1;
  };

  /// Sizes the kept activations (none with recomputation) and the scratch for n rows.
  void prepare(Index n) {
    attn_.prepare(n);
    const Index kept = recompute_ ? 0 : n;
    a_.resize(kept, D_);
    h_.resize(kept, D_);
    u_.resize(kept, D_);
    f_.resize(kept, F_);
    g_.resize(kept, F_);
    const Index B = std::min(std::max<Index>(threading_.row_block, 1), n);
    scratch_.resize(std::size_t(detail::thread_count(threading_)));
    for (Scratch& w : scratch_) {
      for (Matrix<T>* m : {&w.a, &w.h, &w.u, &w.m, &w.du, &w.dh}) m->resize(B, D_);
      for (Matrix<T>* m : {&w.f, &w.g, &w.dg}) m->resize(B, F_);
    }
  }

  /// Rows [b, b + s) of a kept activation, or of the thread's scratch with recomputation.
  MatrixRef<T> activation(Matrix<T>& kept, Matrix<T>& scratch, Index b, Index s) {
    return recompute_ ? MatrixRef<T>(scratch.topRows(s)) : MatrixRef<T>(kept.middleRows(b, s));
  }

  Post post_rows(int p, Index b, Index s) {
    Scratch& w = scratch_[std::size_t(p)];
    return {activation(h_, w.h, b, s), activation(u_, w.u, b, s), activation(f_, w.f, b, s),
            activation(g_, w.g, b, s), w.m.topRows(s)};
  }

  template <class Body>
  void for_rows(Index n, double work_per_row, Body&& body) {
    for_rows_on(n, detail::row_parts(threading_, n, work_per_row), body);
  }

  template <class Body>
  void for_rows_on(Index n, int parts, Body&& body) {
    detail::for_row_blocks(n, threading_, parts, body);
  }

  // a = LN1(x) and Q, K, V for rows [b, b + s), into the layer's buffers.
  void pre_forward_rows(const Matrix<T>& x, int p, Index b, Index s) {
    AttentionInputs<T>& in = attn_.inputs();
    pre_rows(x.middleRows(b, s), activation(a_, scratch_[std::size_t(p)].a, b, s),
             in.Q.middleRows(b, s), in.K.middleRows(b, s), in.V.middleRows(b, s),
             in.q_norms.middleRows(b, s), in.k_norms.middleRows(b, s));
  }

  // post_rows for rows [b, b + s), into the kept activations or the thread's scratch.
  void post_forward_rows(const Matrix<T>& x, Post& post, Index b, Index s) {
    post_rows(x.middleRows(b, s), attn_.output().middleRows(b, s), post.h, post.u, post.f, post.g,
              post.m);
  }

  // d: dL/dy of rows [b, b + s) on entry, dL/dh on return; fills dO of those rows.
  void post_backward_rows(Post& post, MatrixRef<T> d, Index b, int p, PostGradient& g) {
    Scratch& w = scratch_[std::size_t(p)];
    const Index s = d.rows();
    auto du = w.du.topRows(s), dh = w.dh.topRows(s);
    // In the forward pass this was y = h + MLP(LN2(h)).
    mlp_.backward_rows(post.u, post.f, post.g, d, du, w.dg.topRows(s), g.mlp);
    ln2_.backward_rows(post.h, du, dh, g.ln2);
    d += dh;
    // And h = x + O Wo^T + bo.
    attn_.gradients().dO.middleRows(b, s).noalias() = d * attn_.o().weight();
    attn_.o().add_gradients(attn_.output().middleRows(b, s), d, g.o);
  }

  PostGradient zero_post_gradient() const {
    return {attn_.o().zero_gradient(), ln2_.zero_gradient(), mlp_.zero_gradient()};
  }
  PreGradient zero_pre_gradient() const { return {attn_.zero_gradient(), ln1_.zero_gradient()}; }
  void accumulate(const PostGradient& g) {
    attn_.o().accumulate(g.o);
    ln2_.accumulate(g.ln2);
    mlp_.accumulate(g.mlp);
  }
  void accumulate(const PreGradient& g) {
    attn_.accumulate(g.attn);
    ln1_.accumulate(g.ln1);
  }

  Index D_, F_;
  LayerNorm<T> ln1_;
  MultiHeadAttention<T> attn_;
  LayerNorm<T> ln2_;
  MLP<T> mlp_;
  bool recompute_ = false;
  Threading threading_;
  Matrix<T> x_;          // the input, when called on its own (forward(x))
  Matrix<T> a_, h_, u_;  // kept without recomputation: LN1(x), h, LN2(h), (n, D)
  Matrix<T> f_, g_;      // kept without recomputation: the MLP's fc1 and GELU outputs, (n, F)
  std::vector<Scratch> scratch_;  // one per thread
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_BLOCK_INSTANCES(how, T) how class TransformerBlock<T>;
POLYGRAD_INSTANCES(POLYGRAD_BLOCK_INSTANCES)

}  // namespace polygrad
