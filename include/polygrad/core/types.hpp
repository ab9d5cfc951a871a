#pragma once
// Matrix aliases used throughout polygrad.
//
// Rows are tokens. Every activation is an n x d row-major matrix, so one token's features are
// contiguous and a weight stored [out, in] has the same byte layout as a PyTorch tensor.

#include <Eigen/Dense>
#include <cstdint>

namespace polygrad {

using Index = Eigen::Index;

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// A view of a row-major matrix or of a block of one (rows of it, or one head's columns of an
/// n x (H d_h) matrix): contiguous rows at any row stride, no copy. Kernels take these so that
/// callers pass row blocks and heads without copying them out.
template <class T>
using MatrixRef = Eigen::Ref<Matrix<T>>;
template <class T>
using ConstMatrixRef = Eigen::Ref<const Matrix<T>>;
template <class T>
using VectorRef = Eigen::Ref<Vector<T>>;
template <class T>
using ConstVectorRef = Eigen::Ref<const Vector<T>>;

namespace detail {
/// Blocks template argument deduction, so that T is taken from the other arguments and an
/// Eigen::Ref parameter still accepts any matrix expression of T.
template <class T>
struct non_deduced {
  using type = T;
};
template <class T>
using non_deduced_t = typename non_deduced<T>::type;
}  // namespace detail

}  // namespace polygrad
