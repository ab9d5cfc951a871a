#pragma once
// Named parameter views: how optimisers, checkpoints and tests see a model's weights.

#include <string>
#include <vector>

#include "polygrad/core/types.hpp"

namespace polygrad {

/// What a parameter is to the layer that owns it. Optimisers group parameters by it: AdamW
/// decays only `matrix` parameters by default (optim/adamw.hpp).
enum class ParameterRole {
  matrix,     ///< the weight of a linear map (Linear, the LM head)
  bias,       ///< an additive bias of a linear map
  norm,       ///< a LayerNorm gain or shift
  embedding,  ///< a lookup table (token or position embedding)
};

/// "matrix", "bias", "norm" or "embedding".
inline const char* to_string(ParameterRole role) {
  switch (role) {
    case ParameterRole::bias: return "bias";
    case ParameterRole::norm: return "norm";
    case ParameterRole::embedding: return "embedding";
    case ParameterRole::matrix: break;
  }
  return "matrix";
}

/// A view of one parameter tensor owned by a layer: its name (as in a checkpoint, e.g.
/// "blocks.0.attn.q.weight"), its shape in PyTorch's convention ([out, in] for weights), and
/// pointers to its values and to the gradient that backward() accumulates into. Both buffers are
/// contiguous and row-major, `size()` elements long. A view is valid while its layer lives.
template <class T>
struct ParameterView {
  std::string name;          ///< dotted name, e.g. "blocks.0.attn.q.weight"
  std::vector<Index> shape;  ///< PyTorch's shape, e.g. [out, in] for a Linear weight
  T* value = nullptr;        ///< the layer's values, size() contiguous elements
  T* grad = nullptr;         ///< the layer's gradient buffer, size() contiguous elements
  ParameterRole role = ParameterRole::matrix;  ///< what it is to its layer

  /// The number of elements, the product of `shape`.
  Index size() const {
    Index n = 1;
    for (Index s : shape) n *= s;
    return n;
  }
  /// The values as a writable vector of size() (flattened row-major).
  Eigen::Map<Vector<T>> values() const { return {value, size()}; }
  /// The gradient as a writable vector of size() (flattened row-major).
  Eigen::Map<Vector<T>> grads() const { return {grad, size()}; }
};

/// A model's parameters in a fixed order (the order of collect_parameters()).
template <class T>
using ParameterList = std::vector<ParameterView<T>>;

namespace detail {

/// A parameter buffer seen as a row-major matrix: shape[0] rows (one column for a vector), the
/// rest of the shape flattened into the columns. For messages that name a row.
template <class T>
Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> as_rows(
    const T* data, const std::vector<Index>& shape) {
  Index size = 1;
  for (Index s : shape) size *= s;
  const Index rows = shape.size() >= 2 ? shape[0] : size;
  return {data, rows, rows > 0 ? size / rows : 0};
}

template <class T>
ParameterView<T> view_of(std::string name, Matrix<T>& value, Matrix<T>& grad,
                         ParameterRole role = ParameterRole::matrix) {
  return {std::move(name), {value.rows(), value.cols()}, value.data(), grad.data(), role};
}

template <class T>
ParameterView<T> view_of(std::string name, Vector<T>& value, Vector<T>& grad,
                         ParameterRole role = ParameterRole::matrix) {
  return {std::move(name), {value.size()}, value.data(), grad.data(), role};
}

}  // namespace detail

/// Sets every gradient in `params` to zero.
template <class T>
void zero_grad(const ParameterList<T>& params) {
  for (const auto& p : params) p.grads().setZero();
}

}  // namespace polygrad
