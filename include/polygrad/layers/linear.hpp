#pragma once
// Linear: y = x W^T + b, W stored [out, in] (DESIGN.md section 1, the PyTorch convention).

#include "polygrad/layers/layer.hpp"

namespace polygrad {

/// A fully connected layer. Parameters "weight" [out, in] and, with a bias, "bias" [out].
template <class T>
class Linear {
 public:
  /// A layer from `in` to `out` features, weights zero until init() or assignment.
  Linear(Index in, Index out, bool bias = true) : in_(in), out_(out), has_bias_(bias) {
    require<ShapeError>(in >= 1 && out >= 1, "Linear needs in >= 1 and out >= 1, got in = ", in,
                        ", out = ", out);
    weight_ = Matrix<T>::Zero(out, in);
    weight_grad_ = Matrix<T>::Zero(out, in);
    bias_ = Vector<T>::Zero(bias ? out : 0);
    bias_grad_ = Vector<T>::Zero(bias ? out : 0);
  }

  /// y = x W^T + b for x of shape n x in; caches x (for dW).
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, in_, "Linear input");
    Matrix<T> y = x * weight_.transpose();  // (n, out)
    if (has_bias_) y.rowwise() += bias_.transpose();
    x_ = x;
    cached_ = true;
    return y;
  }

  /// Returns dx = dy W; accumulates dW += dy^T x and db += column sums of dy.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "Linear");
    require_shape(dy, x_.rows(), out_, "Linear output gradient");
    weight_grad_.noalias() += dy.transpose() * x_;
    if (has_bias_) bias_grad_ += dy.colwise().sum().transpose();
    Matrix<T> dx = dy * weight_;  // (n, in)
    cached_ = false;
    return dx;
  }

  /// Appends "prefix.weight" and, with a bias, "prefix.bias".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_));
    if (has_bias_)
      out.push_back(detail::view_of(detail::join_name(prefix, "bias"), bias_, bias_grad_));
  }

  /// Sets the weight and bias gradients to zero.
  void zero_grad() {
    weight_grad_.setZero();
    bias_grad_.setZero();
  }

  /// W ~ Normal(0, stddev^2), b = 0.
  void init(std::mt19937_64& rng, double stddev) {
    detail::fill_normal(weight_, rng, stddev);
    bias_.setZero();
  }

  /// Input features.
  Index in_features() const { return in_; }
  /// Output features.
  Index out_features() const { return out_; }
  /// Whether the layer adds a bias.
  bool has_bias() const { return has_bias_; }
  /// W, [out, in].
  Matrix<T>& weight() { return weight_; }
  const Matrix<T>& weight() const { return weight_; }
  /// b, [out] (empty without a bias).
  Vector<T>& bias() { return bias_; }
  const Vector<T>& bias() const { return bias_; }
  /// dL/dW accumulated by backward().
  const Matrix<T>& weight_grad() const { return weight_grad_; }
  /// dL/db accumulated by backward().
  const Vector<T>& bias_grad() const { return bias_grad_; }

 private:
  Index in_, out_;
  bool has_bias_;
  Matrix<T> weight_, weight_grad_;  // (out, in)
  Vector<T> bias_, bias_grad_;      // (out)
  Matrix<T> x_;                     // cached for backward: the input, (n, in)
  bool cached_ = false;
};

}  // namespace polygrad
