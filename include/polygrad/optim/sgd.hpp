#pragma once
// Stochastic gradient descent with momentum and (coupled, L2) weight decay, as PyTorch's SGD:
//   g = grad + wd w,  b = mu b + g,  w -= lr b       (b = g when mu = 0)

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/optim/optimizer.hpp"

namespace polygrad {

/// SGD hyperparameters.
struct SGDOptions {
  double lr = 1e-2;           ///< learning rate, > 0
  double momentum = 0.0;      ///< mu in [0, 1)
  double weight_decay = 0.0;  ///< wd >= 0, added to the gradient as wd w (L2, coupled)

  /// Throws Error naming the first value out of range.
  void validate() const {
    require<Error>(std::isfinite(lr) && lr > 0, "SGD learning rate must be finite and > 0, got ",
                   lr);
    detail::require_hyperparameter("SGD momentum", momentum, 0.0, 1.0, true);
    detail::require_hyperparameter("SGD weight_decay", weight_decay, 0.0,
                                   std::numeric_limits<double>::infinity(), true);
  }
};

/// SGD over named parameter views (e.g. Transformer::parameters()); the views must outlive it.
template <class T>
class SGD : public OptimizerBase<T, SGDOptions> {
  using Base = OptimizerBase<T, SGDOptions>;
  using Base::options_;
  using Base::params_;
  using Base::steps_;

 public:
  /// An optimiser for `params` with validated `options`; momentum buffers start at zero.
  explicit SGD(ParameterList<T> params, SGDOptions options = {})
      : Base(std::move(params), options) {
    if (options_.momentum > 0)
      for (const auto& p : params_) momentum_.push_back(Vector<T>::Zero(p.size()));
  }

  /// One update of every parameter from its accumulated gradient. Throws NumericError naming
  /// the parameter if a gradient is not finite (nothing is updated then).
  void step() {
    detail::require_finite_gradients(params_, "SGD");
    const T lr = T(options_.lr), wd = T(options_.weight_decay), mu = T(options_.momentum);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto w = params_[i].values();
      Vector<T> g = params_[i].grads();
      if (options_.weight_decay > 0) g += wd * w;
      if (options_.momentum > 0) {
        detail::require_state_size(momentum_[i], params_[i], "momentum_buffer");
        momentum_[i] = mu * momentum_[i] + g;
        w -= lr * momentum_[i];
      } else {
        w -= lr * g;
      }
    }
    ++steps_;
  }

  /// "momentum_buffer.<parameter>" for every parameter (empty without momentum).
  NamedState<T> state() {
    NamedState<T> out;
    for (std::size_t i = 0; i < momentum_.size(); ++i)
      out.emplace_back("momentum_buffer." + params_[i].name, &momentum_[i]);
    return out;
  }

 private:
  std::vector<Vector<T>> momentum_;  // one per parameter, flattened; empty without momentum
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_SGD_INSTANCES(how, T) how class SGD<T>;
POLYGRAD_INSTANCES(POLYGRAD_SGD_INSTANCES)

}  // namespace polygrad
