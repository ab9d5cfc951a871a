#pragma once
// The squared-error loss L = 1/2 ||Y - T||_F^2 (DESIGN.md section 1).

#include "polygrad/core/error.hpp"
#include "polygrad/loss/loss.hpp"

namespace polygrad {

/// L = 1/2 ||Y - target||_F^2 and dL/dY = Y - target. Throws ShapeError if the shapes differ
/// and NumericError if either holds NaN or infinity.
template <class T>
LossResult<T> mse_loss(const Matrix<T>& Y, const Matrix<T>& target) {
  require_shape(target, Y.rows(), Y.cols(), "MSE target (it must match the prediction)");
  require_finite(Y, "MSE prediction");
  require_finite(target, "MSE target");
  LossResult<T> result;
  result.grad = Y - target;
  result.value = 0.5 * result.grad.template cast<double>().squaredNorm();
  return result;
}

}  // namespace polygrad
