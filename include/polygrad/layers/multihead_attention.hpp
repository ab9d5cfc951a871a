#pragma once
// Multi-head attention: Q, K, V projections, an AttentionMethod for softmax(c Q K^T) V per head,
// and the output projection (DESIGN.md section 1). With QK normalisation every score lies in
// [-tau, tau] by construction, which the method receives as a certified bound (section 3).

#include <memory>
#include <optional>
#include <utility>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/method.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

namespace detail {

/// Rows whose norm is below this are divided by it instead of their norm (no division by 0).
constexpr double qk_norm_floor = 1e-12;

/// Divides each d_h-wide head segment of every row of X by max(|segment|, floor). Returns the
/// normalised matrix and writes the unclamped norms to `norms` (n x H).
template <class T>
Matrix<T> normalise_heads(const Matrix<T>& X, Index heads, Matrix<T>& norms) {
  const Index dh = X.cols() / heads;
  Matrix<T> Xn(X.rows(), X.cols());
  norms.resize(X.rows(), heads);
  for (Index i = 0; i < X.rows(); ++i) {
    for (Index h = 0; h < heads; ++h) {
      const auto seg = X.row(i).segment(h * dh, dh);
      norms(i, h) = seg.norm();
      Xn.row(i).segment(h * dh, dh) = seg / std::max(norms(i, h), T(qk_norm_floor));
    }
  }
  return Xn;
}

/// Backward of normalise_heads: with y = x / |x|, dx = (dy - y (y . dy)) / |x|; a clamped row
/// was divided by a constant, so dx = dy / floor there.
template <class T>
Matrix<T> normalise_heads_backward(const Matrix<T>& dY, const Matrix<T>& Y,
                                   const Matrix<T>& norms) {
  const Index heads = norms.cols();
  const Index dh = Y.cols() / heads;
  Matrix<T> dX(Y.rows(), Y.cols());
  for (Index i = 0; i < Y.rows(); ++i) {
    for (Index h = 0; h < heads; ++h) {
      const auto y = Y.row(i).segment(h * dh, dh);
      const auto dy = dY.row(i).segment(h * dh, dh);
      auto dx = dX.row(i).segment(h * dh, dh);
      if (norms(i, h) > T(qk_norm_floor)) {
        dx = (dy - y.dot(dy) * y) / norms(i, h);
      } else {
        dx = dy / T(qk_norm_floor);
      }
    }
  }
  return dX;
}

}  // namespace detail

/// Multi-head self-attention with H heads of size d_h = d_model / H. Parameters "q", "k", "v",
/// "o", each a Linear d_model -> d_model with bias ("q.weight" [D, D], "q.bias" [D], ...).
template <class T>
class MultiHeadAttention {
 public:
  /// `scale` is c in S = c Q K^T (1/sqrt(d_h) when absent). `qk_norm` = tau normalises q and k
  /// per head to unit norm and uses c = tau (then `scale` is ignored). `method` computes the
  /// attention itself; nullptr means ExactAttention<T>.
  MultiHeadAttention(Index d_model, Index heads, bool causal = false,
                     std::optional<double> scale = std::nullopt,
                     std::optional<double> qk_norm = std::nullopt,
                     std::shared_ptr<const AttentionMethod<T>> method = nullptr)
      : d_model_(d_model),
        heads_(heads),
        causal_(causal),
        qk_norm_(qk_norm),
        q_(d_model, d_model),
        k_(d_model, d_model),
        v_(d_model, d_model),
        o_(d_model, d_model) {
    require<ShapeError>(heads >= 1 && d_model % heads == 0, "d_model (", d_model,
                        ") must be a positive multiple of the number of heads (", heads, ")");
    require<Error>(!scale || (std::isfinite(*scale) && *scale > 0),
                   "attention scale must be finite and positive, got ", scale ? *scale : 0.0);
    require<Error>(!qk_norm || (std::isfinite(*qk_norm) && *qk_norm > 0),
                   "qk_norm (tau) must be finite and positive, got ", qk_norm ? *qk_norm : 0.0);
    if (qk_norm) {
      scale_ = *qk_norm;
    } else {
      scale_ = scale ? *scale : 1.0 / std::sqrt(double(d_model / heads));
    }
    set_attention(std::move(method));
  }

  /// concat_h softmax(c Q_h K_h^T) V_h Wo^T + bo for x (n x d_model). Caches the attention
  /// context returned by the method, the normalised Q and K with their norms (qk_norm only),
  /// and through the four Linears their inputs.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, d_model_, "MultiHeadAttention input");
    context_.reset();  // a forward that throws below must not leave an older context usable
    Matrix<T> Q = q_.forward(x), K = k_.forward(x), V = v_.forward(x);
    AttentionShape shape;
    shape.heads = heads_;
    shape.causal = causal_;
    shape.scale = scale_;
    if (qk_norm_) {
      Q = detail::normalise_heads(Q, heads_, q_norms_);
      K = detail::normalise_heads(K, heads_, k_norms_);
      shape.score_bound = *qk_norm_;  // |q| <= 1, |k| <= 1 and c = tau give |S| <= tau
    }
    Matrix<T> O;
    context_ = method_->forward(Q, K, V, shape, O);
    description_ = context_->describe();
    plans_ = context_->plans();
    if (qk_norm_) {
      Qn_ = std::move(Q);
      Kn_ = std::move(K);
    }
    return o_.forward(O);
  }

  /// Returns dx; accumulates the gradients of q, k, v and o (through the QK normalisation's
  /// Jacobian when it is on).
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(context_ != nullptr, "MultiHeadAttention");
    const Matrix<T> dO = o_.backward(dy);
    Matrix<T> dQ, dK, dV;
    context_->backward(dO, dQ, dK, dV);
    context_.reset();
    if (qk_norm_) {
      dQ = detail::normalise_heads_backward(dQ, Qn_, q_norms_);
      dK = detail::normalise_heads_backward(dK, Kn_, k_norms_);
    }
    Matrix<T> dx = q_.backward(dQ);
    dx += k_.backward(dK);
    dx += v_.backward(dV);
    return dx;
  }

  /// Appends the views of "prefix.q", "prefix.k", "prefix.v", "prefix.o" (weight, bias each).
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    q_.collect_parameters(detail::join_name(prefix, "q"), out);
    k_.collect_parameters(detail::join_name(prefix, "k"), out);
    v_.collect_parameters(detail::join_name(prefix, "v"), out);
    o_.collect_parameters(detail::join_name(prefix, "o"), out);
  }

  /// Sets every gradient to zero.
  void zero_grad() {
    q_.zero_grad();
    k_.zero_grad();
    v_.zero_grad();
    o_.zero_grad();
  }

  /// Weights ~ Normal(0, stddev^2), biases zero (q, k, v, o in that order).
  void init(std::mt19937_64& rng, double stddev) {
    q_.init(rng, stddev);
    k_.init(rng, stddev);
    v_.init(rng, stddev);
    o_.init(rng, stddev);
  }

  /// Replaces the attention method (nullptr: ExactAttention<T>). Takes effect at the next
  /// forward(); a pending backward still uses the context of the last forward().
  void set_attention(std::shared_ptr<const AttentionMethod<T>> method) {
    method_ = method ? std::move(method) : std::make_shared<ExactAttention<T>>();
  }

  /// The attention method in use.
  const AttentionMethod<T>& attention() const { return *method_; }

  /// describe() of the context of the last forward() (empty before the first forward).
  std::string describe_attention() const { return description_; }

  /// plans() of the context of the last forward(): one HeadPlan per head (attention/plan.hpp).
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
  /// The projections.
  Linear<T>& q() { return q_; }
  Linear<T>& k() { return k_; }
  Linear<T>& v() { return v_; }
  Linear<T>& o() { return o_; }

 private:
  Index d_model_, heads_;
  bool causal_;
  std::optional<double> qk_norm_;
  double scale_ = 1.0;
  Linear<T> q_, k_, v_, o_;
  std::shared_ptr<const AttentionMethod<T>> method_;
  std::unique_ptr<AttentionContext<T>> context_;  // cached for backward; null when consumed
  Matrix<T> Qn_, Kn_;            // cached for backward (qk_norm): normalised Q and K, (n, D)
  Matrix<T> q_norms_, k_norms_;  // cached for backward (qk_norm): unclamped norms, (n, H)
  std::string description_;
  std::vector<HeadPlan> plans_;
};

}  // namespace polygrad
