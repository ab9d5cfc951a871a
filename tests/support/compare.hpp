#pragma once
// How the tests measure agreement: one relative error, one normalisation. Every comparison of a
// result with its reference, from gradient checks to whole models, goes through it.

#include <algorithm>

#include "polygrad/core/types.hpp"

namespace polygrad::test {

/// ||a - b|| / max(||a||, ||b||, floor) in the Frobenius norm, computed in double. `floor`
/// (default: none) is an absolute scale for results that may vanish, such as the gradient of
/// the only key of a one-token sequence, where rounding noise is all there is to compare.
template <class A, class B>
double relative_error(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b,
                      double floor = 0.0) {
  const auto ad = a.template cast<double>();
  const auto bd = b.template cast<double>();
  const double scale = std::max({ad.norm(), bd.norm(), floor, 1e-300});
  return (ad - bd).norm() / scale;
}

/// The largest relative_error between matching rows of a and b: for results whose rows are
/// separate answers (the logits of every position).
template <class A, class B>
double largest_row_error(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  double worst = 0;
  for (Index i = 0; i < a.rows(); ++i) worst = std::max(worst, relative_error(a.row(i), b.row(i)));
  return worst;
}

}  // namespace polygrad::test
