#pragma once
// LayerNorm: per row (x - mean) / sqrt(var + 1e-5) * gamma + beta, biased variance
// (DESIGN.md section 1).

#include "polygrad/layers/layer.hpp"

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

  /// Normalises every row of x (n x D); caches xhat and 1/sqrt(var + eps) per row.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, D_, "LayerNorm input");
    const Index n = x.rows();
    xhat_.resize(n, D_);
    rstd_.resize(n);
    for (Index i = 0; i < n; ++i) {
      const T mean = x.row(i).mean();
      const auto centred = (x.row(i).array() - mean).eval();
      const T var = centred.square().mean();
      rstd_(i) = T(1) / std::sqrt(var + T(eps));
      xhat_.row(i) = centred * rstd_(i);
    }
    Matrix<T> y = (xhat_.array().rowwise() * weight_.transpose().array()).matrix();
    y.rowwise() += bias_.transpose();
    cached_ = true;
    return y;
  }

  /// Returns dx; accumulates dgamma += sum_i dy_i o xhat_i and dbeta += sum_i dy_i.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "LayerNorm");
    require_shape(dy, xhat_.rows(), D_, "LayerNorm output gradient");
    weight_grad_ += (dy.array() * xhat_.array()).colwise().sum().matrix().transpose();
    bias_grad_ += dy.colwise().sum().transpose();
    // In the forward pass this was y = xhat o gamma + beta, xhat = (x - mean) * rstd; per row,
    // dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat o xhat)).
    const Matrix<T> dxhat = (dy.array().rowwise() * weight_.transpose().array()).matrix();
    Matrix<T> dx(dy.rows(), D_);
    for (Index i = 0; i < dy.rows(); ++i) {
      const T mean_dxhat = dxhat.row(i).mean();
      const T mean_dxhat_xhat = dxhat.row(i).dot(xhat_.row(i)) / T(D_);
      dx.row(i) = rstd_(i) * (dxhat.row(i).array() - mean_dxhat -
                              xhat_.row(i).array() * mean_dxhat_xhat).matrix();
    }
    cached_ = false;
    return dx;
  }

  /// Appends "prefix.weight" (gamma) and "prefix.bias" (beta).
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_));
    out.push_back(detail::view_of(detail::join_name(prefix, "bias"), bias_, bias_grad_));
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
  const Vector<T>& weight() const { return weight_; }
  /// beta, [D].
  Vector<T>& bias() { return bias_; }
  const Vector<T>& bias() const { return bias_; }

 private:
  Index D_;
  Vector<T> weight_, bias_, weight_grad_, bias_grad_;  // (D)
  Matrix<T> xhat_;  // cached for backward: the normalised input, (n, D)
  Vector<T> rstd_;  // cached for backward: 1 / sqrt(var + eps) per row, (n)
  bool cached_ = false;
};

}  // namespace polygrad
