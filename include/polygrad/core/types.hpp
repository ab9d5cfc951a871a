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

}  // namespace polygrad
