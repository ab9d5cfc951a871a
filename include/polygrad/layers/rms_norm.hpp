#pragma once
// RMSNorm (Zhang and Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019), the
// normalisation of Llama- and Qwen-style blocks: per row x / sqrt(mean(x^2) + eps) * gamma, no
// centring and no shift.

#include <cmath>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/rowwise_passes.hpp"

namespace polygrad {

/// Root-mean-square normalisation over the D features of each row. Parameter "weight" (gamma,
/// [D], ones); no bias.
template <class T>
class RMSNorm {
 public:
  /// The epsilon of Llama's and Qwen3's configurations (`rms_norm_eps`).
  static constexpr double default_eps = 1e-6;

  /// An RMSNorm over D features, gamma = 1, eps added to the mean square. ShapeError if D < 1,
  /// Error if eps is not finite and positive.
  explicit RMSNorm(Index D, double eps = default_eps) : D_(D), eps_(eps) {
    require<ShapeError>(D >= 1, "RMSNorm needs D >= 1, got ", D);
    require<Error>(std::isfinite(eps) && eps > 0, "RMSNorm needs a finite eps > 0, got ", eps);
    weight_ = Vector<T>::Ones(D);
    weight_grad_ = Vector<T>::Zero(D);
  }

  /// The parameter's gradient, shaped like it: what one thread accumulates over its rows.
  struct Gradient {
    Vector<T> weight;  ///< (D), dL/dgamma
  };

  /// Normalises every row of x (n x D); caches x (the backward pass recomputes each row's
  /// 1/rms, O(D) per row).
  Matrix<T> forward(const Matrix<T>& x) {
    return passes_.forward(*this, x, "RMSNorm", 4.0 * double(D_), threading_);
  }

  /// Returns dx; accumulates dgamma += sum_i dy_i o xhat_i.
  Matrix<T> backward(const Matrix<T>& dy) {
    return passes_.backward(*this, dy, "RMSNorm", 8.0 * double(D_), threading_);
  }

  /// y = x r o gamma per row, r = 1 / sqrt(mean(x^2) + eps), for a block of rows (no cache, no
  /// checks); y may alias x.
  void forward_rows(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    const auto gamma = weight_.transpose().array();
    for (Index i = 0; i < x.rows(); ++i)
      y.row(i) = (x.row(i).array() * (inverse_rms(x.row(i)) * gamma)).matrix();
  }

  /// dx for a block of rows of the input x and the output gradient dy (dx may alias dy), and
  /// g.weight += sum_i dy_i o xhat_i. In the forward pass this was y = xhat o gamma, xhat = x r;
  /// per row, with dxhat = dy o gamma, dx = r (dxhat - xhat mean(dxhat o xhat)).
  void backward_rows(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx,
                     Gradient& g) const {
    const auto gamma = weight_.transpose().array();
    for (Index i = 0; i < x.rows(); ++i) {
      const T r = inverse_rms(x.row(i));
      const auto xhat = x.row(i).array() * r;
      const auto dyi = dy.row(i).array();
      g.weight += (dyi * xhat).matrix().transpose();
      const T mean_dxhat_xhat = (dyi * gamma * xhat).mean();
      dx.row(i) = (r * (dyi * gamma - xhat * mean_dxhat_xhat)).matrix();
    }
  }

  /// A zero gradient of this layer's shapes.
  Gradient zero_gradient() const { return {Vector<T>::Zero(D_)}; }

  /// Adds g into the layer's gradient.
  void accumulate(const Gradient& g) { weight_grad_ += g.weight; }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

  /// Appends "prefix.weight" (gamma).
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_,
                                  ParameterRole::norm));
  }

  /// Sets the gamma gradient to zero.
  void zero_grad() { weight_grad_.setZero(); }

  /// gamma = 1 (the random generator is not used; the arguments keep one interface).
  void init(std::mt19937_64& /*rng*/, double /*stddev*/) { weight_.setOnes(); }

  /// Number of features D.
  Index features() const { return D_; }
  /// The epsilon added to the mean square.
  double eps() const { return eps_; }
  /// gamma, [D].
  Vector<T>& weight() { return weight_; }
  /// gamma, read-only.
  const Vector<T>& weight() const { return weight_; }
  /// dL/dgamma accumulated by backward().
  const Vector<T>& weight_grad() const { return weight_grad_; }

 private:
  template <class Row>
  T inverse_rms(const Row& x) const {
    return T(1) / std::sqrt(x.squaredNorm() / T(D_) + T(eps_));
  }

  Index D_;
  double eps_;
  Vector<T> weight_, weight_grad_;   // (D)
  detail::RowwisePasses<T> passes_;  // keeps the input for backward
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_RMS_NORM_INSTANCES(how, T) how class RMSNorm<T>;
POLYGRAD_INSTANCES(POLYGRAD_RMS_NORM_INSTANCES)

}  // namespace polygrad
