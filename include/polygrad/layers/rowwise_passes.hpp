#pragma once
// forward() and backward() of a row-wise layer with parameters whose output has the input's
// width (LayerNorm, RMSNorm), written once: the layer supplies forward_rows(x, y),
// backward_rows(x, dy, dx, g), zero_gradient(), accumulate(g) and features() (layer.hpp).

#include <string>
#include <vector>

#include "polygrad/layers/layer.hpp"

namespace polygrad::detail {

/// The input a row-wise layer keeps for its backward pass, and the two passes over row blocks.
template <class T>
class RowwisePasses {
 public:
  /// Checks x (n x layer.features(), finite), keeps it and returns layer.forward_rows of it.
  /// `name` names the layer in messages; the work per row sets the thread count.
  template <class Layer>
  Matrix<T> forward(const Layer& layer, const Matrix<T>& x, const char* name, double work_per_row,
                    const Threading& threading) {
    require_input(x, layer.features(), concat(name, " input").c_str());
    x_ = x;
    Matrix<T> y(x.rows(), x.cols());
    const int parts = row_parts(threading, x.rows(), work_per_row);
    for_row_blocks(x.rows(), threading, parts, [&](int, Index b, Index s) {
      layer.forward_rows(x_.middleRows(b, s), y.middleRows(b, s));
    });
    cached_ = true;
    return y;
  }

  /// Returns dx for dy and adds the parameters' gradients into the layer, one Gradient per
  /// part, summed in part order; consumes what forward() kept.
  template <class Layer>
  Matrix<T> backward(Layer& layer, const Matrix<T>& dy, const char* name, double work_per_row,
                     const Threading& threading) {
    require_forward(cached_, name);
    require_shape(dy, x_.rows(), x_.cols(), concat(name, " output gradient").c_str());
    const Index n = x_.rows();
    Matrix<T> dx(n, x_.cols());
    const int parts = row_parts(threading, n, work_per_row);
    std::vector<typename Layer::Gradient> grads(std::size_t(parts), layer.zero_gradient());
    for_row_blocks(n, threading, parts, [&](int p, Index b, Index s) {
      layer.backward_rows(x_.middleRows(b, s), dy.middleRows(b, s), dx.middleRows(b, s),
                          grads[std::size_t(p)]);
    });
    accumulate_parts(layer, grads);
    cached_ = false;
    return dx;
  }

 private:
  Matrix<T> x_;  // the input of the last forward(), (n, D)
  bool cached_ = false;
};

}  // namespace polygrad::detail
