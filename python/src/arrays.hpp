#pragma once
// NumPy arrays [B, H, n, d_h] (C-contiguous float32 or float64, as PyTorch's CPU tensors share
// them through Tensor.numpy()) and polygrad's token-row matrices n x (H d_h).
//
// The arrays are read and written in place through their buffers: nothing is converted or
// copied on the Python side. The attention methods take one sequence as n x (H d_h) rows (head h
// in columns [h d_h, (h + 1) d_h)), so each sequence is gathered into that layout and its results
// scattered back: O(n H d_h) per call, against the O(n^2 d_h) or O(n k d_h) per head of the
// attention itself.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad::python {

namespace py = pybind11;

/// The sizes of a batch of multi-head sequences [B, H, n, d_h].
struct BatchShape {
  Index batch = 0, heads = 0, n = 0, head_dim = 0;

  Index width() const { return heads * head_dim; }
  Index elements() const { return batch * heads * n * head_dim; }
  bool operator==(const BatchShape& other) const {
    return batch == other.batch && heads == other.heads && n == other.n &&
           head_dim == other.head_dim;
  }
  std::string str() const {
    return detail::concat("[", batch, ", ", heads, ", ", n, ", ", head_dim, "]");
  }
};

/// The dtype name NumPy gives (float32, float64, ...).
inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

/// Checks that `a` is a C-contiguous [B, H, n, d_h] array of T and returns its shape; otherwise
/// TypeError (another dtype) or ShapeError (ValueError in Python), saying what to change.
template <class T>
BatchShape batch_shape(const py::array& a, const char* name) {
  require<ShapeError>(a.ndim() == 4, name, " must have 4 dimensions [batch, heads, n, head_dim], ",
                      "got ", a.ndim());
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(detail::concat(name, " has dtype ", dtype_name(a), " where ",
                                        py::str(py::dtype::of<T>()).cast<std::string>(),
                                        " was expected: give q, k, v (and the output gradient) ",
                                        "one dtype, float32 or float64"));
  }
  require<ShapeError>((a.flags() & py::array::c_style) != 0, name, " is not C-contiguous; ",
                      "pass a contiguous array (numpy.ascontiguousarray, Tensor.contiguous())");
  const BatchShape s{Index(a.shape(0)), Index(a.shape(1)), Index(a.shape(2)), Index(a.shape(3))};
  require<ShapeError>(s.batch >= 1 && s.heads >= 1 && s.n >= 1 && s.head_dim >= 1, name,
                      " must have at least one entry in every dimension, got shape ", s.str());
  return s;
}

/// Throws NumericError naming the first NaN or infinity in `a` by its index [b, h, i, j].
template <class T>
void require_finite(const T* a, const BatchShape& s, const char* name) {
  const Index total = s.elements();
  for (Index e = 0; e < total; ++e) {
    if (std::isfinite(a[e])) continue;
    const Index j = e % s.head_dim, i = (e / s.head_dim) % s.n,
                h = (e / (s.head_dim * s.n)) % s.heads, b = e / (s.head_dim * s.n * s.heads);
    throw NumericError(detail::concat(name, " contains ", std::isnan(a[e]) ? "NaN" : "infinity",
                                      " at index [", b, ", ", h, ", ", i, ", ", j, "]; attention ",
                                      "needs finite inputs"));
  }
}

/// Sequence b of `a` ([B, H, n, d_h], in place) as n x (H d_h) rows in `rows`.
template <class T>
void gather(const T* a, const BatchShape& s, Index b, Matrix<T>& rows) {
  rows.resize(s.n, s.width());
  for (Index h = 0; h < s.heads; ++h) {
    const T* head = a + ((b * s.heads + h) * s.n) * s.head_dim;
    rows.middleCols(h * s.head_dim, s.head_dim) =
        Eigen::Map<const Matrix<T>>(head, s.n, s.head_dim);
  }
}

/// Writes n x (H d_h) `rows` into sequence b of `a` ([B, H, n, d_h]).
template <class T>
void scatter(const Matrix<T>& rows, const BatchShape& s, Index b, T* a) {
  for (Index h = 0; h < s.heads; ++h) {
    T* head = a + ((b * s.heads + h) * s.n) * s.head_dim;
    Eigen::Map<Matrix<T>>(head, s.n, s.head_dim) = rows.middleCols(h * s.head_dim, s.head_dim);
  }
}

}  // namespace polygrad::python
