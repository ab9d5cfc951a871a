#pragma once
// Global gradient-norm clipping, as torch.nn.utils.clip_grad_norm_: when the 2-norm of all
// gradients together exceeds max_norm, every gradient is scaled by max_norm / (norm + 1e-6).

#include <cmath>

#include "polygrad/optim/optimizer.hpp"

namespace polygrad {

/// The 2-norm of every gradient in `params` taken together, summed in double.
template <class T>
double gradient_norm(const ParameterList<T>& params) {
  double sum = 0;
  for (const auto& p : params) sum += p.grads().template cast<double>().squaredNorm();
  return std::sqrt(sum);
}

/// Scales the gradients so that their global 2-norm is at most `max_norm` (> 0) and returns the
/// norm before clipping. Throws NumericError naming the first parameter whose gradient is not
/// finite (nothing is scaled then).
template <class T>
double clip_gradient_norm(const ParameterList<T>& params, double max_norm) {
  require<Error>(std::isfinite(max_norm) && max_norm > 0, "clip_gradient_norm: max_norm must ",
                 "be finite and > 0, got ", max_norm);
  detail::require_finite_gradients(params, "clip_gradient_norm");
  const double norm = gradient_norm(params);
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1) {
    for (const auto& p : params) p.grads() *= T(factor);
  }
  return norm;
}

}  // namespace polygrad
