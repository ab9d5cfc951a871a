#pragma once
// GELU, the exact erf form: gelu(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
// (DESIGN.md section 1).

#include "polygrad/layers/layer.hpp"

namespace polygrad {

/// Elementwise GELU. No parameters.
template <class T>
class GELU {
 public:
  /// gelu of every entry of x (n x any width); caches x.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, x.cols(), "GELU input");
    x_ = x;
    cached_ = true;
    return x.unaryExpr([](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(inv_sqrt2))); });
  }

  /// dx = dy o gelu'(x), gelu'(x) = Phi(x) + x phi(x) with phi the standard normal density.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "GELU");
    require_shape(dy, x_.rows(), x_.cols(), "GELU output gradient");
    const Matrix<T> slope = x_.unaryExpr([](T v) {
      const T cdf = T(0.5) * (T(1) + std::erf(v * T(inv_sqrt2)));
      const T pdf = T(inv_sqrt2pi) * std::exp(T(-0.5) * v * v);
      return cdf + v * pdf;
    });
    cached_ = false;
    return (dy.array() * slope.array()).matrix();
  }

  /// GELU has no parameters; appends nothing.
  void collect_parameters(const std::string& /*prefix*/, ParameterList<T>& /*out*/) {}

  /// GELU has no parameters; does nothing.
  void zero_grad() {}

 private:
  static constexpr double inv_sqrt2 = 0.70710678118654752440084436210485;
  static constexpr double inv_sqrt2pi = 0.39894228040143267793994605993438;
  Matrix<T> x_;  // cached for backward: the input
  bool cached_ = false;
};

}  // namespace polygrad
