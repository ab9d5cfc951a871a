#pragma once
// MLP(x) = GELU(x W1^T + b1) W2^T + b2 (design.md section 1).

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/composite.hpp"
#include "polygrad/layers/gelu.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

/// The feed-forward part of a block: fc1 (D -> F), GELU, fc2 (F -> D). Parameters
/// "fc1.weight" [F, D], "fc1.bias" [F], "fc2.weight" [D, F], "fc2.bias" [D].
template <class T>
class MLP : public CompositeLayer<MLP<T>, T> {
 public:
  /// The parameters' gradients: what one thread accumulates over its rows.
  struct Gradient {
    /// The gradients of fc1 and fc2.
    ///@{
    typename Linear<T>::Gradient fc1, fc2;
    ///@}
  };

  /// An MLP of width D with hidden width F.
  MLP(Index D, Index F) : fc1_(D, F), fc2_(F, D) {}

  /// fc2(GELU(fc1(x))); caches x and the two n x F activations fc1(x) and GELU(fc1(x)).
  Matrix<T> forward(const Matrix<T>& x) {
    detail::require_input(x, fc1_.in_features(), "MLP input");
    const Index n = x.rows(), F = fc1_.out_features();
    u_ = x;
    f_.resize(n, F);
    g_.resize(n, F);
    Matrix<T> y(n, fc2_.out_features());
    detail::for_row_blocks(n, threading_, parts(n, 1), [&](int, Index b, Index s) {
      forward_rows(u_.middleRows(b, s), f_.middleRows(b, s), g_.middleRows(b, s),
                   y.middleRows(b, s));
    });
    cached_ = true;
    return y;
  }

  /// Backward through fc2, GELU and fc1 in turn; returns dx.
  Matrix<T> backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "MLP");
    require_shape(dy, u_.rows(), fc2_.out_features(), "MLP output gradient");
    const Index n = u_.rows();
    Matrix<T> dx(n, fc1_.in_features());
    const int p = parts(n, 2);
    std::vector<Gradient> grads(std::size_t(p), zero_gradient());
    std::vector<Matrix<T>> scratch(static_cast<std::size_t>(p));
    detail::for_row_blocks(n, threading_, p, [&](int part, Index b, Index s) {
      Matrix<T>& dg = scratch[std::size_t(part)];
      dg.resize(s, fc1_.out_features());
      backward_rows(u_.middleRows(b, s), f_.middleRows(b, s), g_.middleRows(b, s),
                    dy.middleRows(b, s), dx.middleRows(b, s), dg, grads[std::size_t(part)]);
    });
    detail::accumulate_parts(*this, grads);
    cached_ = false;
    return dx;
  }

  /// y = fc2(GELU(fc1(u))) for a block of rows, leaving fc1's output in f and GELU's in g
  /// (rows x F), which backward_rows needs.
  void forward_rows(const ConstMatrixRef<T>& u, MatrixRef<T> f, MatrixRef<T> g,
                    MatrixRef<T> y) const {
    fc1_.forward_rows(u, f);
    GELU<T>::forward_rows(f, g);
    fc2_.forward_rows(g, y);
  }

  /// du (assigned) for a block of rows, given u, f, g as forward_rows left them and the output
  /// gradient dy; adds the parameters' gradients into `grad`. dg is scratch, rows x F.
  void backward_rows(const ConstMatrixRef<T>& u, const ConstMatrixRef<T>& f,
                     const ConstMatrixRef<T>& g, const ConstMatrixRef<T>& dy, MatrixRef<T> du,
                     MatrixRef<T> dg, Gradient& grad) const {
    // In the forward pass this was y = g W2^T + b2, g = gelu(f), f = u W1^T + b1.
    dg.noalias() = dy * fc2_.weight();
    fc2_.add_gradients(g, dy, grad.fc2);
    GELU<T>::backward_rows(f, dg, dg);  // now df
    fc1_.add_gradients(u, dg, grad.fc1);
    du.noalias() = dg * fc1_.weight();
  }

  /// Multiply-adds per row of forward_rows (backward: twice that).
  double work_per_row() const {
    return 2.0 * double(fc1_.in_features()) * double(fc1_.out_features()) +
           16.0 * double(fc1_.out_features());
  }

  /// A zero gradient of this layer's shapes.
  Gradient zero_gradient() const { return {fc1_.zero_gradient(), fc2_.zero_gradient()}; }

  /// Adds g into the layer's gradients.
  void accumulate(const Gradient& g) {
    fc1_.accumulate(g.fc1);
    fc2_.accumulate(g.fc2);
  }

  /// The parts, in parameter order: "fc1", "fc2" (see CompositeLayer).
  template <class Visit>
  void for_each_part(Visit&& visit) {
    visit("fc1", fc1_);
    visit("fc2", fc2_);
  }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { threading_ = threading; }

  /// The first linear layer, D -> F.
  Linear<T>& fc1() { return fc1_; }
  /// fc1, read-only.
  const Linear<T>& fc1() const { return fc1_; }
  /// The second linear layer, F -> D.
  Linear<T>& fc2() { return fc2_; }
  /// fc2, read-only.
  const Linear<T>& fc2() const { return fc2_; }

 private:
  int parts(Index n, int passes) const {
    return detail::row_parts(threading_, n, passes * work_per_row());
  }

  Linear<T> fc1_;
  Linear<T> fc2_;
  Matrix<T> u_;      // cached for backward: the input, (n, D)
  Matrix<T> f_, g_;  // cached for backward: fc1's output and GELU's, (n, F)
  bool cached_ = false;
  Threading threading_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_MLP_INSTANCES(how, T) how class MLP<T>;
POLYGRAD_INSTANCES(POLYGRAD_MLP_INSTANCES)

}  // namespace polygrad
