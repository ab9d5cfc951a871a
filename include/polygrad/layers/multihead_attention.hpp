#pragma once
// Multi-head attention: Q, K, V projections, an AttentionMethod for softmax(c Q K^T) V per head,
// and the output projection (design.md section 1). With QK normalisation every score lies in
// [-tau, tau] by construction, which the method receives as a certified bound (section 3).
//
// The layer runs in three stages: project_rows (row-wise: Q, K, V of a block of rows), attend
// (the method on the whole sequence) and, backwards, attend_backward and project_rows_backward.
// They are private: forward() and backward() run them in order, and TransformerBlock, a friend,
// calls them one by one to fuse them with its LayerNorms and residuals (it applies the output
// projection o, an ordinary Linear, itself).

#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/method.hpp"
#include "polygrad/attention/packed.hpp"
#include "polygrad/core/instances.hpp"
#include "polygrad/layers/composite.hpp"
#include "polygrad/layers/config.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

namespace detail {

/// Rows whose norm is below this are divided by it instead of their norm (no division by 0).
constexpr double qk_norm_floor = 1e-12;

/// Divides each d_h-wide head segment of every row of X by max(|segment|, floor), in place,
/// and writes the unclamped norms to `norms` (rows x H).
template <class T>
void normalise_head_rows(MatrixRef<T> X, MatrixRef<T> norms) {
  const Index heads = norms.cols(), dh = X.cols() / heads;
  for (Index i = 0; i < X.rows(); ++i) {
    for (Index h = 0; h < heads; ++h) {
      auto seg = X.row(i).segment(h * dh, dh);
      norms(i, h) = seg.norm();
      seg /= std::max(norms(i, h), T(qk_norm_floor));
    }
  }
}

/// Backward of normalise_head_rows, in place: with y = x / |x|, dx = (dy - y (y . dy)) / |x|
/// replaces dY; a clamped row was divided by a constant, so dx = dy / floor there.
template <class T>
void normalise_head_rows_backward(MatrixRef<T> dY, const ConstMatrixRef<T>& Y,
                                  const ConstMatrixRef<T>& norms) {
  const Index heads = norms.cols(), dh = Y.cols() / heads;
  for (Index i = 0; i < Y.rows(); ++i) {
    for (Index h = 0; h < heads; ++h) {
      const auto y = Y.row(i).segment(h * dh, dh);
      auto dy = dY.row(i).segment(h * dh, dh);
      if (norms(i, h) > T(qk_norm_floor)) {
        dy = (dy - y.dot(dy) * y) / norms(i, h);
      } else {
        dy /= T(qk_norm_floor);
      }
    }
  }
}

}  // namespace detail

/// What an attention layer's method reads: Q, K, V (normalised under QK normalisation) and
/// their norms. Layers that recompute their activations share one (Transformer), since then only
/// one layer's inputs are needed at a time.
template <class T>
struct AttentionInputs {
  /// (n, D) each, head h in columns [h d_h, (h + 1) d_h): the projected queries, keys and
  /// values; under QK normalisation Q and K are divided, per row and head, by their norms.
  ///@{
  Matrix<T> Q, K, V;
  ///@}
  /// (n, H) each: the norm of every row's head segment of Q and K before normalisation;
  /// filled under QK normalisation only.
  ///@{
  Matrix<T> q_norms, k_norms;
  ///@}
};

/// The gradients of an attention layer's backward pass: dO (filled by the caller) and dQ, dK,
/// dV (by the method). Needed only during one layer's backward pass, so a model's blocks share one.
template <class T>
struct AttentionGradients {
  /// (n, D) each: the gradients of the attention output O and of its inputs Q, K, V.
  ///@{
  Matrix<T> dO, dQ, dK, dV;
  ///@}
};

template <class T>
class TransformerBlock;  // runs the stages of MultiHeadAttention (layers/block.hpp)

/// Multi-head self-attention with H heads of size d_h = d_model / H. Parameters "q", "k", "v",
/// "o", each a Linear d_model -> d_model with bias ("q.weight" [D, D], "q.bias" [D], ...).
template <class T>
class MultiHeadAttention : public CompositeLayer<MultiHeadAttention<T>, T> {
 public:
  /// The gradients of the Q, K, V projections: what one thread accumulates over its rows (the
  /// output projection o is a Linear of its own).
  struct Gradient {
    /// The gradients of the projections q, k and v.
    ///@{
    typename Linear<T>::Gradient q, k, v;
    ///@}
  };

  /// A layer for `config` (validated: AttentionConfig::validate). `method` computes the
  /// attention itself; nullptr means ExactAttention<T>.
  explicit MultiHeadAttention(const AttentionConfig& config,
                              std::shared_ptr<const AttentionMethod<T>> method = nullptr)
      : d_model_((config.validate(), config.d_model)),
        heads_(config.heads),
        causal_(config.causal),
        qk_norm_(config.qk_norm),
        scale_(config.attention_scale()),
        q_(config.d_model, config.d_model),
        k_(config.d_model, config.d_model),
        v_(config.d_model, config.d_model),
        o_(config.d_model, config.d_model),
        inputs_(std::make_shared<AttentionInputs<T>>()),
        gradients_(std::make_shared<AttentionGradients<T>>()) {
    set_attention(std::move(method));
  }

  /// concat_h softmax(c Q_h K_h^T) V_h Wo^T + bo for x (n x d_model), or for a packed batch of
  /// sequences that `offsets` delimits (attention/packed.hpp), each attending to itself only.
  /// Checks x and the parameters; caches x, Q, K, V (normalised, with their norms, under
  /// qk_norm), the attention output and the method's context.
  Matrix<T> forward(const Matrix<T>& x, const SequenceOffsets& offsets = {}) {
    detail::require_input(x, d_model_, "MultiHeadAttention input");
    check_offsets(offsets, x.rows(), "MultiHeadAttention");
    set_sequences(offsets);
    ParameterList<T> params;
    this->collect_parameters("", params);
    detail::require_finite_parameters(params);
    context_.reset();  // a forward that throws below must not leave an older context usable
    const Index n = x.rows();
    x_ = x;
    prepare(n);
    detail::for_row_blocks(n, threading_, parts(n, 3),
                           [&](int, Index b, Index s) { project_rows(x_.middleRows(b, s), b); });
    attend(n);
    Matrix<T> y(n, d_model_);
    detail::for_row_blocks(n, threading_, parts(n, 1), [&](int, Index b, Index s) {
      o_.forward_rows(O_.middleRows(b, s), y.middleRows(b, s));
    });
    return y;
  }

  /// Returns dx; accumulates the gradients of q, k, v and o (through the QK normalisation's
  /// Jacobian when it is on).
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(context_ != nullptr, "MultiHeadAttention");
    require_shape(dy, O_.rows(), d_model_, "MultiHeadAttention output gradient");
    require_finite(dy, "MultiHeadAttention output gradient");
    const Index n = O_.rows();
    gradients_->dO.resize(n, d_model_);
    {
      const int p = parts(n, 2);
      std::vector<typename Linear<T>::Gradient> grads(std::size_t(p), o_.zero_gradient());
      detail::for_row_blocks(n, threading_, p, [&](int part, Index b, Index s) {
        gradients_->dO.middleRows(b, s).noalias() = dy.middleRows(b, s) * o_.weight();
        o_.add_gradients(O_.middleRows(b, s), dy.middleRows(b, s), grads[std::size_t(part)]);
      });
      detail::accumulate_parts(o_, grads);
    }
    attend_backward();
    Matrix<T> dx(n, d_model_);
    const int p = parts(n, 6);
    std::vector<Gradient> grads(std::size_t(p), zero_gradient());
    detail::for_row_blocks(n, threading_, p, [&](int part, Index b, Index s) {
      project_rows_backward(x_.middleRows(b, s), b, dx.middleRows(b, s), grads[std::size_t(part)]);
    });
    detail::accumulate_parts(*this, grads);
    return dx;
  }

  /// Wall-clock seconds of the method's last forward and backward calls.
  std::pair<double, double> attention_seconds() const { return attention_seconds_; }

  /// Multiply-adds per row of project_rows (backward: twice that).
  double projection_work_per_row() const { return 3.0 * double(d_model_) * double(d_model_); }

  /// A zero gradient of the projections' shapes.
  Gradient zero_gradient() const {
    return {q_.zero_gradient(), k_.zero_gradient(), v_.zero_gradient()};
  }

  /// Adds g into the projections' gradients.
  void accumulate(const Gradient& g) {
    q_.accumulate(g.q);
    k_.accumulate(g.k);
    v_.accumulate(g.v);
  }

  // ---- Parameters and configuration. ----

  /// The parts, in parameter order: the Linears "q", "k", "v", "o" (see CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    visit("q", q_);
    visit("k", k_);
    visit("v", v_);
    visit("o", o_);
  }

  /// Replaces the attention method (nullptr: ExactAttention<T>). Takes effect at the next
  /// forward(); a pending backward still uses the context of the last forward().
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    method_ = method ? std::move(method) : std::make_shared<ExactAttention<T>>();
  }

  /// The threads its passes (and its attention method's) may use.
  void set_threading(const Threading& threading) { threading_ = threading; }
  /// The threads its passes may use (set_threading).
  const Threading& threading() const { return threading_; }

  /// The part of the sequence this process holds when it is split across processes
  /// (parallel/group.hpp; design.md section 8): its rows are the layer's input, and the method
  /// joins its heads to the other shards'. The default is the whole sequence.
  void set_shard(const SequenceShard& shard) { shard_ = shard; }
  /// The part of the sequence this process holds (set_shard).
  const SequenceShard& shard() const { return shard_; }

  /// The sequences of the rows that the next attend() receives: a packed batch
  /// (attention/packed.hpp); empty for one sequence. forward() sets it from its argument.
  void set_sequences(const SequenceOffsets& offsets) { offsets_ = offsets; }
  /// The sequences of the last or next attend() (set_sequences).
  const SequenceOffsets& sequences() const { return offsets_; }

  /// The attention method in use.
  const AttentionMethod<T>& attention() const { return *method_; }

  /// describe() of the context of the last forward() (empty before the first forward).
  std::string describe_attention() const { return description_; }

  /// plans() of the context of the last pass: one HeadPlan per head (attention/plan.hpp); for a
  /// packed batch of B sequences, B H plans, sequence by sequence.
  const std::vector<HeadPlan>& attention_plans() const { return plans_; }

  /// d_model.
  Index d_model() const { return d_model_; }
  /// H.
  Index heads() const { return heads_; }
  /// Whether the causal mask is applied.
  bool causal() const { return causal_; }
  /// c passed to the method (tau under QK normalisation).
  double scale() const { return scale_; }
  /// tau when QK normalisation is on.
  std::optional<double> qk_norm() const { return qk_norm_; }
  /// The query projection "q", D -> D.
  Linear<T>& q() { return q_; }
  /// The key projection "k", D -> D.
  Linear<T>& k() { return k_; }
  /// The value projection "v", D -> D.
  Linear<T>& v() { return v_; }
  /// The output projection "o", D -> D.
  Linear<T>& o() { return o_; }
  /// The output projection, read-only.
  const Linear<T>& o() const { return o_; }

 private:
  template <class>
  friend class TransformerBlock;

  // ---- The stages, which forward() and backward() above run, and TransformerBlock (a friend)
  // fuses with its own row-wise layers; private, so that no caller runs them out of order. ----

  /// Sizes the input and output buffers for n rows (their storage is kept when the size is).
  void prepare(Index n) {
    AttentionInputs<T>& in = *inputs_;
    in.Q.resize(n, d_model_);
    in.K.resize(n, d_model_);
    in.V.resize(n, d_model_);
    in.q_norms.resize(n, heads_);
    in.k_norms.resize(n, heads_);
    O_.resize(n, d_model_);
  }

  /// Rows [begin, begin + a.rows()) of Q, K, V from the layer input a (normalised per head under
  /// qk_norm). Blocks of rows may run in parallel.
  void project_rows(const ConstMatrixRef<T>& a, Index begin) {
    AttentionInputs<T>& in = *inputs_;
    const Index s = a.rows();
    project(a, in.Q.middleRows(begin, s), in.K.middleRows(begin, s), in.V.middleRows(begin, s),
            in.q_norms.middleRows(begin, s), in.k_norms.middleRows(begin, s));
  }

  /// The projections of the layer input rows a (s x D) into q, k, v (s x D each), normalised
  /// per head under qk_norm with the norms written to q_norms and k_norms (s x H each, untouched
  /// otherwise). Writes its arguments only: project_rows() and inference
  /// (inference/forward.hpp) both run it.
  void project(const ConstMatrixRef<T>& a, MatrixRef<T> q, MatrixRef<T> k, MatrixRef<T> v,
               MatrixRef<T> q_norms, MatrixRef<T> k_norms) const {
    q_.forward_rows(a, q);
    k_.forward_rows(a, k);
    v_.forward_rows(a, v);
    if (qk_norm_) {
      detail::normalise_head_rows<T>(q, q_norms);
      detail::normalise_head_rows<T>(k, k_norms);
    }
  }

  /// The attention method on the whole sequence, or on each sequence of the packed batch that
  /// set_sequences() named: the output O (output()) and the context its backward needs. Throws NumericError naming Q, K or V and the row if one is not finite.
  void attend(Index n) {
    AttentionInputs<T>& in = *inputs_;
    require<ShapeError>(in.Q.rows() == n, "MultiHeadAttention::attend: prepare(", n,
                        ") and project_rows first");
    AttentionShape shape;
    shape.heads = heads_;
    shape.causal = causal_;
    shape.scale = scale_;
    shape.threading = threading_;
    // Q, K, V are checked here, so that an overflow in the projections is named where it
    // happens; a split sequence leaves that to the model's check on every rank (no hang).
    shape.inputs_checked = shard_.split();
    if (qk_norm_) shape.score_bound = *qk_norm_;  // |q| <= 1, |k| <= 1 and c = tau give |S| <= tau
    shape.shard = shard_;
    context_.reset();
    const auto start = std::chrono::steady_clock::now();
    check_offsets(offsets_, n, "MultiHeadAttention::attend");
    context_ = attention_forward_packed(*method_, in.Q, in.K, in.V, shape, offsets_, O_);
    attention_seconds_.first = seconds_since(start);
    plans_ = context_->plans();
    description_ = context_->describe();
  }

  /// The method's backward pass: dQ, dK, dV of gradients() from its dO, which the caller filled.
  /// Needs the inputs of attend() (recomputed by project_rows if they were not kept); consumes
  /// the context.
  void attend_backward() {
    detail::require_forward(context_ != nullptr, "MultiHeadAttention");
    AttentionInputs<T>& in = *inputs_;
    AttentionGradients<T>& g = *gradients_;
    const auto start = std::chrono::steady_clock::now();
    context_->backward(in.Q, in.K, in.V, O_, g.dO, g.dQ, g.dK, g.dV);
    attention_seconds_.second = seconds_since(start);
    plans_ = context_->plans();
    context_.reset();
  }

  /// da (assigned) for rows [begin, begin + a.rows()) of the layer input a, from dQ, dK, dV of
  /// gradients(); adds the projections' gradients into g. Under qk_norm dQ and dK are taken
  /// back through the normalisation in place.
  void project_rows_backward(const ConstMatrixRef<T>& a, Index begin, MatrixRef<T> da,
                             Gradient& g) {
    AttentionInputs<T>& in = *inputs_;
    AttentionGradients<T>& grads = *gradients_;
    const Index s = a.rows();
    auto dQ = grads.dQ.middleRows(begin, s), dK = grads.dK.middleRows(begin, s);
    const auto dV = grads.dV.middleRows(begin, s);
    if (qk_norm_) {
      detail::normalise_head_rows_backward<T>(dQ, in.Q.middleRows(begin, s),
                                              in.q_norms.middleRows(begin, s));
      detail::normalise_head_rows_backward<T>(dK, in.K.middleRows(begin, s),
                                              in.k_norms.middleRows(begin, s));
    }
    q_.add_gradients(a, dQ, g.q);
    k_.add_gradients(a, dK, g.k);
    v_.add_gradients(a, dV, g.v);
    da.noalias() = dQ * q_.weight();
    da.noalias() += dK * k_.weight();
    da.noalias() += dV * v_.weight();
  }

  /// The attention output of the last attend(), (n, D): the input of the output projection.
  const Matrix<T>& output() const { return O_; }
  /// The input buffers of attend(): Q, K, V and their norms, (n, D) and (n, H), sized by prepare().
  AttentionInputs<T>& inputs() { return *inputs_; }
  /// The gradient buffers; the caller fills dO before attend_backward().
  AttentionGradients<T>& gradients() { return *gradients_; }
  /// Whether attend() has a context waiting for attend_backward().
  bool attended() const { return context_ != nullptr; }

  /// Uses `inputs` for Q, K, V (shared by layers that recompute them) and `gradients` for the
  /// backward buffers; nullptr gives the layer buffers of its own.
  void share_buffers(std::shared_ptr<AttentionInputs<T>> inputs,
                     std::shared_ptr<AttentionGradients<T>> gradients) {
    inputs_ = inputs ? std::move(inputs) : std::make_shared<AttentionInputs<T>>();
    gradients_ = gradients ? std::move(gradients) : std::make_shared<AttentionGradients<T>>();
  }

  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  int parts(Index n, int projections) const {
    return detail::row_parts(threading_, n, projections * double(d_model_) * double(d_model_));
  }

  Index d_model_, heads_;
  bool causal_;
  std::optional<double> qk_norm_;
  double scale_ = 1.0;
  Linear<T> q_, k_, v_, o_;
  std::shared_ptr<const AttentionMethod<T>> method_;
  std::unique_ptr<AttentionContext<T>> context_;  // cached for backward; null when consumed
  std::shared_ptr<AttentionInputs<T>> inputs_;    // cached for backward unless recomputed
  std::shared_ptr<AttentionGradients<T>> gradients_;
  Matrix<T> O_;  // cached for backward: the attention output, (n, D)
  Matrix<T> x_;  // cached for backward when called on its own: the input, (n, D)
  std::string description_;
  std::vector<HeadPlan> plans_;
  std::pair<double, double> attention_seconds_{0.0, 0.0};
  Threading threading_;
  SequenceShard shard_;
  SequenceOffsets offsets_;  // the sequences of a packed batch; empty for one sequence
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_MULTIHEAD_ATTENTION_INSTANCES(how, T) how class MultiHeadAttention<T>;
POLYGRAD_INSTANCES(POLYGRAD_MULTIHEAD_ATTENTION_INSTANCES)

}  // namespace polygrad
