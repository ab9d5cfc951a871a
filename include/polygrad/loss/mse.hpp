#pragma once
// The squared-error loss L = 1/2 ||Y - T||_F^2 (design.md section 1).

#include <cmath>
#include <numeric>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/threading.hpp"
#include "polygrad/loss/loss.hpp"

namespace polygrad {

/// L = 1/2 ||Y - target||_F^2 and dL/dY = Y - target, rows in parallel as `threading` allows.
/// Throws ShapeError if the shapes differ and NumericError if either holds NaN or infinity.
template <class T>
LossResult<T> mse_loss(const Matrix<T>& Y, const Matrix<T>& target,
                       const Threading& threading = Threading{}) {
  require_shape(target, Y.rows(), Y.cols(), "MSE target (it must match the prediction)");
  const Index n = Y.rows();
  LossResult<T> result;
  result.grad.resize(n, Y.cols());
  const int parts = detail::row_parts(threading, n, 4.0 * double(Y.cols()));
  std::vector<double> partial(std::size_t(parts), 0.0);  // per part, summed in part order
  detail::for_row_blocks(n, threading, parts, [&](int p, Index b, Index s) {
    auto g = result.grad.middleRows(b, s);
    g = Y.middleRows(b, s) - target.middleRows(b, s);
    partial[std::size_t(p)] += g.template cast<double>().squaredNorm();
  });
  result.value = 0.5 * std::accumulate(partial.begin(), partial.end(), 0.0);
  if (!std::isfinite(result.value)) {  // a non-finite entry makes the sum so; find which
    require_finite(Y, "MSE prediction");
    require_finite(target, "MSE target");
  }
  return result;
}

}  // namespace polygrad
