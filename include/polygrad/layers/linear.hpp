#pragma once
// Linear: y = x W^T + b, W stored [out, in] (design.md section 1, the PyTorch convention).

#include "polygrad/core/instances.hpp"
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

  /// The parameters' gradients, shaped like them: what one thread accumulates over its rows.
  struct Gradient {
    Matrix<T> weight;  ///< (out, in), dL/dW
    Vector<T> bias;    ///< (out), dL/db; empty without a bias
  };

  /// y = x W^T + b for x of shape n x in; caches x (for dW).
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, in_, "Linear input");
    x_ = x;
    Matrix<T> y(x.rows(), out_);
    const int parts = detail::row_parts(threading_, x.rows(), double(in_ * out_));
    detail::for_row_blocks(x.rows(), threading_, parts, [&](int, Index b, Index s) {
      forward_rows(x_.middleRows(b, s), y.middleRows(b, s));
    });
    cached_ = true;
    return y;
  }

  /// Returns dx = dy W; accumulates dW += dy^T x and db += column sums of dy.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "Linear");
    require_shape(dy, x_.rows(), out_, "Linear output gradient");
    const Index n = x_.rows();
    Matrix<T> dx(n, in_);
    const int parts = detail::row_parts(threading_, n, 2.0 * double(in_ * out_));
    std::vector<Gradient> grads(std::size_t(parts), zero_gradient());
    detail::for_row_blocks(n, threading_, parts, [&](int p, Index b, Index s) {
      add_gradients(x_.middleRows(b, s), dy.middleRows(b, s), grads[std::size_t(p)]);
      dx.middleRows(b, s).noalias() = dy.middleRows(b, s) * weight_;
    });
    detail::accumulate_parts(*this, grads);
    cached_ = false;
    return dx;
  }

  /// y = x W^T + b for a block of rows (no cache, no checks); y may not alias x.
  void forward_rows(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    y.noalias() = x * weight_.transpose();
    if (has_bias_) y.rowwise() += bias_.transpose();
  }

  /// g.weight += dy^T x and g.bias += column sums of dy, for a block of rows of the input x and
  /// the output gradient dy. The input gradient is dy W (weight()).
  void add_gradients(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, Gradient& g) const {
    g.weight.noalias() += dy.transpose() * x;
    if (has_bias_) g.bias += dy.colwise().sum().transpose();
  }

  /// A zero gradient of this layer's shapes.
  Gradient zero_gradient() const {
    return {Matrix<T>::Zero(out_, in_), Vector<T>::Zero(has_bias_ ? out_ : 0)};
  }

  /// Adds g into the layer's gradients.
  void accumulate(const Gradient& g) {
    weight_grad_ += g.weight;
    bias_grad_ += g.bias;
  }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

  /// Appends "prefix.weight" and, with a bias, "prefix.bias".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_));
    if (has_bias_)
      out.push_back(detail::view_of(detail::join_name(prefix, "bias"), bias_, bias_grad_,
                                    ParameterRole::bias));
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
  /// W, read-only.
  const Matrix<T>& weight() const { return weight_; }
  /// b, [out] (empty without a bias).
  Vector<T>& bias() { return bias_; }
  /// b, read-only.
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
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_LINEAR_INSTANCES(how, T) how class Linear<T>;
POLYGRAD_INSTANCES(POLYGRAD_LINEAR_INSTANCES)

}  // namespace polygrad
