#pragma once
// The gated feed-forward part of Llama- and Qwen-style blocks (Shazeer, "GLU Variants Improve
// Transformer", 2020, the SwiGLU variant):
//   SwiGLU(x) = (silu(x Wg^T) o (x Wu^T)) Wd^T,   silu(a) = a sigmoid(a),
// with no biases, and the parameter names of the transformers layout ("gate_proj", "up_proj",
// "down_proj").

#include <cmath>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/composite.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

namespace detail {

/// sigmoid(a) entry by entry: 1 / (1 + exp(-a)), which is 0 (not NaN) where exp(-a) overflows.
template <class Derived>
auto sigmoid(const Eigen::ArrayBase<Derived>& a) {
  using T = typename Derived::Scalar;
  return T(1) / (T(1) + (-a).exp());
}

}  // namespace detail

/// gate_proj (D -> F) and up_proj (D -> F), their product through SiLU, down_proj (F -> D).
/// Parameters "gate_proj.weight" [F, D], "up_proj.weight" [F, D], "down_proj.weight" [D, F].
template <class T>
class SwiGLU : public CompositeLayer<SwiGLU<T>, T> {
 public:
  /// The parameters' gradients: what one thread accumulates over its rows.
  struct Gradient {
    /// The gradients of gate_proj, up_proj and down_proj.
    ///@{
    typename Linear<T>::Gradient gate, up, down;
    ///@}
  };

  /// A SwiGLU of width D with hidden width F. ShapeError if either is below 1.
  SwiGLU(Index D, Index F) : gate_(D, F, false), up_(D, F, false), down_(F, D, false) {}

  /// down(silu(gate(x)) o up(x)); caches x and the three n x F activations gate(x), up(x) and
  /// their gated product.
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, gate_.in_features(), "SwiGLU input");
    const Index n = x.rows(), F = hidden_features();
    u_ = x;
    a_.resize(n, F);
    b_.resize(n, F);
    h_.resize(n, F);
    Matrix<T> y(n, down_.out_features());
    detail::for_row_blocks(n, threading_, parts(n, 1), [&](int, Index r, Index s) {
      forward_rows(u_.middleRows(r, s), a_.middleRows(r, s), b_.middleRows(r, s),
                   h_.middleRows(r, s), y.middleRows(r, s));
    });
    cached_ = true;
    return y;
  }

  /// Backward through down_proj, the gate and the two input projections; returns dx.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "SwiGLU");
    require_shape(dy, u_.rows(), down_.out_features(), "SwiGLU output gradient");
    const Index n = u_.rows();
    Matrix<T> dx(n, gate_.in_features());
    const int p = parts(n, 2);
    std::vector<Gradient> grads(std::size_t(p), zero_gradient());
    std::vector<Matrix<T>> scratch(std::size_t(2 * p));
    detail::for_row_blocks(n, threading_, p, [&](int part, Index r, Index s) {
      Matrix<T>& da = scratch[std::size_t(2 * part)];
      Matrix<T>& db = scratch[std::size_t(2 * part + 1)];
      da.resize(s, hidden_features());
      db.resize(s, hidden_features());
      backward_rows(u_.middleRows(r, s), a_.middleRows(r, s), b_.middleRows(r, s),
                    h_.middleRows(r, s), dy.middleRows(r, s), dx.middleRows(r, s), da, db,
                    grads[std::size_t(part)]);
    });
    detail::accumulate_parts(*this, grads);
    cached_ = false;
    return dx;
  }

  /// y = down(silu(a) o b) with a = gate(u), b = up(u), for a block of rows, leaving a, b and
  /// h = silu(a) o b (rows x F) for backward_rows.
  void forward_rows(const ConstMatrixRef<T>& u, MatrixRef<T> a, MatrixRef<T> b, MatrixRef<T> h,
                    MatrixRef<T> y) const {
    gate_.forward_rows(u, a);
    up_.forward_rows(u, b);
    h = (a.array() * detail::sigmoid(a.array()) * b.array()).matrix();
    down_.forward_rows(h, y);
  }

  /// du (assigned) for a block of rows, given u, a, b, h as forward_rows left them and the
  /// output gradient dy; adds the parameters' gradients into `grad`. da and db are scratch,
  /// rows x F.
  void backward_rows(const ConstMatrixRef<T>& u, const ConstMatrixRef<T>& a,
                     const ConstMatrixRef<T>& b, const ConstMatrixRef<T>& h,
                     const ConstMatrixRef<T>& dy, MatrixRef<T> du, MatrixRef<T> da, MatrixRef<T> db,
                     Gradient& grad) const {
    // dh = dy Wd; with s = sigmoid(a): db = dh o silu(a), da = dh o b o s (1 + a (1 - s)).
    db.noalias() = dy * down_.weight();  // dh, for now
    down_.add_gradients(h, dy, grad.down);
    const auto s = detail::sigmoid(a.array()).eval();
    da = (db.array() * b.array() * s * (T(1) + a.array() * (T(1) - s))).matrix();
    db = (db.array() * a.array() * s).matrix();
    gate_.add_gradients(u, da, grad.gate);
    up_.add_gradients(u, db, grad.up);
    du.noalias() = da * gate_.weight();
    du.noalias() += db * up_.weight();
  }

  /// Multiply-adds per row of forward_rows (backward: twice that).
  double work_per_row() const {
    return 3.0 * double(gate_.in_features()) * double(hidden_features()) +
           16.0 * double(hidden_features());
  }

  /// A zero gradient of this layer's shapes.
  Gradient zero_gradient() const {
    return {gate_.zero_gradient(), up_.zero_gradient(), down_.zero_gradient()};
  }

  /// Adds g into the layer's gradients.
  void accumulate(const Gradient& g) {
    gate_.accumulate(g.gate);
    up_.accumulate(g.up);
    down_.accumulate(g.down);
  }

  /// The parts, in parameter order: "gate_proj", "up_proj", "down_proj" (see CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    visit("gate_proj", gate_);
    visit("up_proj", up_);
    visit("down_proj", down_);
  }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

  /// F, the hidden width.
  Index hidden_features() const { return gate_.out_features(); }
  /// The gate projection, D -> F.
  Linear<T>& gate_proj() { return gate_; }
  /// The up projection, D -> F.
  Linear<T>& up_proj() { return up_; }
  /// The down projection, F -> D.
  Linear<T>& down_proj() { return down_; }

 private:
  int parts(Index n, int passes) const {
    return detail::row_parts(threading_, n, passes * work_per_row());
  }

  Linear<T> gate_, up_, down_;
  Matrix<T> u_;          // cached for backward: the input, (n, D)
  Matrix<T> a_, b_, h_;  // cached for backward: gate(u), up(u), silu(a) o b, (n, F)
  bool cached_ = false;
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_SWIGLU_INSTANCES(how, T) how class SwiGLU<T>;
POLYGRAD_INSTANCES(POLYGRAD_SWIGLU_INSTANCES)

}  // namespace polygrad
