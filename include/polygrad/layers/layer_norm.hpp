#pragma once
// LayerNorm: per row (x - mean) / sqrt(var + 1e-5) * gamma + beta, biased variance
// (design.md section 1).

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/rowwise_passes.hpp"

namespace polygrad {

/// Layer normalisation over the D features of each row. Parameters "weight" (gamma, [D], ones)
/// and "bias" (beta, [D], zeros).
template <class T>
class LayerNorm {
 public:
  /// The epsilon added to the variance.
  static constexpr double eps = 1e-5;

  /// A LayerNorm over D features, gamma = 1, beta = 0.
  explicit LayerNorm(Index D) : D_(D) {
    require<ShapeError>(D >= 1, "LayerNorm needs D >= 1, got ", D);
    weight_ = Vector<T>::Ones(D);
    bias_ = Vector<T>::Zero(D);
    weight_grad_ = Vector<T>::Zero(D);
    bias_grad_ = Vector<T>::Zero(D);
  }

  /// The parameters' gradients, shaped like them: what one thread accumulates over its rows.
  struct Gradient {
    /// (D) each: the gradients of gamma and beta.
    ///@{
    Vector<T> weight, bias;
    ///@}
  };

  /// Normalises every row of x (n x D); caches x (the backward pass recomputes each row's mean
  /// and 1/sqrt(var + eps), O(D) per row).
  Matrix<T> forward(const Matrix<T>& x) {
    return passes_.forward(*this, x, "LayerNorm", 8.0 * double(D_), threading_);
  }

  /// Returns dx; accumulates dgamma += sum_i dy_i o xhat_i and dbeta += sum_i dy_i.
  Matrix<T> backward(const Matrix<T>& dy) {
    return passes_.backward(*this, dy, "LayerNorm", 16.0 * double(D_), threading_);
  }

  /// y = (x - mean) / sqrt(var + eps) o gamma + beta per row, for a block of rows (no cache,
  /// no checks).
  void forward_rows(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    const auto gamma = weight_.transpose().array();
    const auto beta = bias_.transpose().array();
    for (Index i = 0; i < x.rows(); ++i) {
      const auto xi = x.row(i).array();
      const T mean = xi.mean();
      const T rstd = T(1) / std::sqrt((xi - mean).square().mean() + T(eps));
      y.row(i) = ((xi - mean) * rstd * gamma + beta).matrix();
    }
  }

  /// dx for a block of rows of the input x and the output gradient dy (dx may alias dy), and
  /// g.weight += sum_i dy_i o xhat_i, g.bias += sum_i dy_i. In the forward pass this was
  /// y = xhat o gamma + beta, xhat = (x - mean) * rstd; per row,
  /// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat o xhat)) with dxhat = dy o gamma.
  void backward_rows(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx,
                     Gradient& g) const {
    const auto gamma = weight_.transpose().array();
    for (Index i = 0; i < x.rows(); ++i) {
      const auto xi = x.row(i).array();
      const T mean = xi.mean();
      const T rstd = T(1) / std::sqrt((xi - mean).square().mean() + T(eps));
      const auto xhat = (xi - mean) * rstd;
      const auto dyi = dy.row(i).array();
      g.weight += (dyi * xhat).matrix().transpose();
      g.bias += dy.row(i).transpose();
      const T mean_dxhat = (dyi * gamma).mean();
      const T mean_dxhat_xhat = (dyi * gamma * xhat).mean();
      dx.row(i) = (rstd * (dyi * gamma - mean_dxhat - xhat * mean_dxhat_xhat)).matrix();
    }
  }

  /// A zero gradient of this layer's shapes.
  Gradient zero_gradient() const { return {Vector<T>::Zero(D_), Vector<T>::Zero(D_)}; }

  /// Adds g into the layer's gradients.
  void accumulate(const Gradient& g) {
    weight_grad_ += g.weight;
    bias_grad_ += g.bias;
  }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

  /// Appends "prefix.weight" (gamma) and "prefix.bias" (beta).
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_,
                                  ParameterRole::norm));
    out.push_back(
        detail::view_of(detail::join_name(prefix, "bias"), bias_, bias_grad_, ParameterRole::norm));
  }

  /// Sets the gamma and beta gradients to zero.
  void zero_grad() {
    weight_grad_.setZero();
    bias_grad_.setZero();
  }

  /// gamma = 1, beta = 0 (the random generator is not used; the argument keeps one interface).
  void init(std::mt19937_64& /*rng*/, double /*stddev*/) {
    weight_.setOnes();
    bias_.setZero();
  }

  /// Number of features D.
  Index features() const { return D_; }
  /// gamma, [D].
  Vector<T>& weight() { return weight_; }
  /// gamma, read-only.
  const Vector<T>& weight() const { return weight_; }
  /// beta, [D].
  Vector<T>& bias() { return bias_; }
  /// beta, read-only.
  const Vector<T>& bias() const { return bias_; }

 private:
  Index D_;
  Vector<T> weight_, bias_, weight_grad_, bias_grad_;  // (D)
  detail::RowwisePasses<T> passes_;                    // keeps the input for backward
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_LAYER_NORM_INSTANCES(how, T) how class LayerNorm<T>;
POLYGRAD_INSTANCES(POLYGRAD_LAYER_NORM_INSTANCES)

}  // namespace polygrad
