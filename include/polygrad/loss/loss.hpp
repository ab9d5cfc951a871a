#pragma once
// What every loss in polygrad/loss/ returns.

#include "polygrad/core/types.hpp"

namespace polygrad {

/// A loss value and its gradient with respect to the prediction (same shape as it).
template <class T>
struct LossResult {
  double value = 0.0;  ///< accumulated in double whatever T is
  Matrix<T> grad;      ///< dL/dprediction
};

}  // namespace polygrad
