#pragma once
// GELU, the exact erf form: gelu(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
// (design.md section 1), with Phi(x) = erfc(-x / sqrt 2) / 2, which keeps its relative accuracy
// for negative x, where 1 + erf(x / sqrt 2) cancels. In double erfc is the C library's; in float
// it is a vectorised Chebyshev fit (Press et al., Numerical Recipes, 2nd ed., section 6.2,
// "erfcc": relative error below 1.2e-7 everywhere, float's own precision).

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "polygrad/core/instances.hpp"
#include "polygrad/detail/simd.hpp"
#include "polygrad/layers/layer.hpp"

namespace polygrad {

namespace detail {

constexpr double inv_sqrt2 = 0.70710678118654752440084436210485;
constexpr double inv_sqrt2pi = 0.39894228040143267793994605993438;

/// exp(-x^2 / 2) for a packet of floats, from x itself: x^2 = hi + lo exactly (hi = fl(x^2), lo
/// its rounding error, by a fused multiply-add), and exp(-hi / 2) (1 - lo / 2) keeps float's
/// relative precision where exp(-fl(x^2) / 2), or anything computed from fl(x / sqrt 2), would
/// lose up to 1e-5 of it at x ~ 12.
inline simd::Packet<float> gaussian_of(const simd::Packet<float>& x) {
  const auto hi = simd::mul(x, x);
  const auto lo = simd::fma(x, x, simd::mul(hi, simd::broadcast(-1.0f)));
  return simd::mul(simd::exp(simd::mul(hi, simd::broadcast(-0.5f))),
                   simd::fma(lo, simd::broadcast(-0.5f), simd::broadcast(1.0f)));
}

/// Phi(x) for a packet of floats, given g = gaussian_of(x) = exp(-x^2 / 2):
/// erfc(a) = t exp(-a^2) exp(P(t)) with t = 1 / (1 + a / 2) for a = |x| / sqrt 2, then
/// Phi(x) = erfc(a) / 2 for x < 0 and 1 - erfc(a) / 2 otherwise.
inline simd::Packet<float> normal_cdf(const simd::Packet<float>& x, const simd::Packet<float>& g) {
  using P = simd::Packet<float>;
  // P(t)'s coefficients, constant term first (Numerical Recipes, erfcc).
  static constexpr float c[10] = {-1.26551223f, 1.00002368f, 0.37409196f,  0.09678418f,
                                  -0.18628806f, 0.27886807f, -1.13520398f, 1.48851587f,
                                  -0.82215223f, 0.17087277f};
  const P one = simd::broadcast(1.0f);
  const P a = simd::mul(simd::abs(x), simd::broadcast(float(inv_sqrt2)));
  const P t = simd::div(one, simd::fma(a, simd::broadcast(0.5f), one));
  P poly = simd::broadcast(c[9]);
  for (int j = 8; j >= 0; --j) poly = simd::fma(poly, t, simd::broadcast(c[j]));
  const P half_erfc = simd::mul(simd::mul(simd::broadcast(0.5f), t), simd::mul(g, simd::exp(poly)));
  return simd::select_negative(x, half_erfc, simd::fma(half_erfc, simd::broadcast(-1.0f), one));
}

/// out = f(a, b) entry by entry, one packet of each at a time (out may alias a or b); the tail
/// of each row goes through zero-padded packets.
template <class T, class F>
void map_packets(MatrixRef<T> out, const ConstMatrixRef<T>& a, const ConstMatrixRef<T>& b, F&& f) {
  constexpr Index W = simd::width<T>;
  const Index cols = out.cols();
  for (Index i = 0; i < out.rows(); ++i) {
    const T* ai = a.data() + i * a.outerStride();
    const T* bi = b.data() + i * b.outerStride();
    T* oi = out.data() + i * out.outerStride();
    Index c = 0;
    for (; c + W <= cols; c += W) simd::store(oi + c, f(simd::load(ai + c), simd::load(bi + c)));
    if (c == cols) continue;
    alignas(64) T ta[W] = {}, tb[W] = {}, result[W];
    std::copy(ai + c, ai + cols, ta);
    std::copy(bi + c, bi + cols, tb);
    simd::store(result, f(simd::load(ta), simd::load(tb)));
    std::copy(result, result + (cols - c), oi + c);
  }
}

}  // namespace detail

/// Elementwise GELU. No parameters.
template <class T>
class GELU {
 public:
  /// gelu of every entry of x (n x any width); caches x.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, x.cols(), "GELU input");
    x_ = x;
    Matrix<T> y(x.rows(), x.cols());
    const int parts = detail::row_parts(threading_, x.rows(), 16.0 * double(x.cols()));
    detail::for_row_blocks(x.rows(), threading_, parts, [&](int, Index b, Index s) {
      forward_rows(x_.middleRows(b, s), y.middleRows(b, s));
    });
    cached_ = true;
    return y;
  }

  /// dx = dy o gelu'(x).
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "GELU");
    require_shape(dy, x_.rows(), x_.cols(), "GELU output gradient");
    Matrix<T> dx(dy.rows(), dy.cols());
    const int parts = detail::row_parts(threading_, dy.rows(), 24.0 * double(dy.cols()));
    detail::for_row_blocks(dy.rows(), threading_, parts, [&](int, Index b, Index s) {
      backward_rows(x_.middleRows(b, s), dy.middleRows(b, s), dx.middleRows(b, s));
    });
    cached_ = false;
    return dx;
  }

  /// y = gelu(x) for a block of rows; y may alias x.
  static void forward_rows(const ConstMatrixRef<T>& x, MatrixRef<T> y) {
    if constexpr (std::is_same_v<T, float>) {
      detail::map_packets<float>(y, x, x, [](const auto& v, const auto&) {
        return simd::mul(v, detail::normal_cdf(v, detail::gaussian_of(v)));
      });
    } else {
      y = x.unaryExpr([](T v) { return v * normal_cdf(v); });
    }
  }

  /// dx = dy o gelu'(x) for a block of rows, gelu'(x) = Phi(x) + x phi(x) with phi the standard
  /// normal density; dx may alias dy.
  static void backward_rows(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy,
                            MatrixRef<T> dx) {
    if constexpr (std::is_same_v<T, float>) {
      detail::map_packets<float>(dx, x, dy, [](const auto& v, const auto& dyv) {
        const auto g = detail::gaussian_of(v);  // exp(-v^2 / 2)
        const auto pdf = simd::mul(simd::broadcast(float(detail::inv_sqrt2pi)), g);
        return simd::mul(dyv, simd::fma(v, pdf, detail::normal_cdf(v, g)));
      });
    } else {
      dx = x.binaryExpr(dy, [](T v, T g) {
        return g * (normal_cdf(v) + v * T(detail::inv_sqrt2pi) * std::exp(T(-0.5) * v * v));
      });
    }
  }

  /// GELU has no parameters; appends nothing.
  void collect_parameters(const std::string& /*prefix*/, ParameterList<T>& /*out*/) {}

  /// GELU has no parameters; does nothing.
  void zero_grad() {}

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

 private:
  static T normal_cdf(T v) { return T(0.5) * std::erfc(-v * T(detail::inv_sqrt2)); }

  Matrix<T> x_;  // cached for backward: the input
  bool cached_ = false;
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_GELU_INSTANCES(how, T) how class GELU<T>;
POLYGRAD_INSTANCES(POLYGRAD_GELU_INSTANCES)

}  // namespace polygrad
