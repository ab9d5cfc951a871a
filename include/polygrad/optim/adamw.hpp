#pragma once
// AdamW (Loshchilov and Hutter), decoupled weight decay and bias correction, as PyTorch's AdamW:
//   w *= 1 - lr wd              (by default only for the weights of linear maps: DecayOn)
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

#include "polygrad/core/instances.hpp"
#include "polygrad/optim/optimizer.hpp"

namespace polygrad {

/// Which parameters AdamW's weight decay shrinks.
enum class DecayOn {
  matrices,  ///< the weights of linear maps only: not biases, LayerNorm or embeddings
  all,       ///< every parameter (PyTorch's AdamW given one parameter group)
};

/// AdamW hyperparameters.
struct AdamWOptions {
  double lr = 1e-3;            ///< learning rate, > 0
  double beta1 = 0.9;          ///< first-moment decay in [0, 1)
  double beta2 = 0.999;        ///< second-moment decay in [0, 1)
  double eps = 1e-8;           ///< added to sqrt(v hat), > 0
  double weight_decay = 1e-2;  ///< decoupled: w *= 1 - lr wd, >= 0
  /// The parameters weight decay applies to, by their ParameterRole; the others are updated
  /// with weight_decay 0 (the two parameter groups of most transformer training recipes).
  DecayOn decay_on = DecayOn::matrices;

  /// Throws Error naming the first value out of range.
  void validate() const {
    require<Error>(std::isfinite(lr) && lr > 0, "AdamW learning rate must be finite and > 0, got ",
                   lr);
    detail::require_hyperparameter("AdamW beta1", beta1, 0.0, 1.0, true);
    detail::require_hyperparameter("AdamW beta2", beta2, 0.0, 1.0, true);
    require<Error>(std::isfinite(eps) && eps > 0, "AdamW eps must be finite and > 0, got ", eps);
    detail::require_hyperparameter("AdamW weight_decay", weight_decay, 0.0,
                                   std::numeric_limits<double>::infinity(), true);
  }
};

/// AdamW over named parameter views (e.g. Transformer::parameters()); the views must outlive it.
template <class T>
class AdamW : public OptimizerBase<T, AdamWOptions> {
  using Base = OptimizerBase<T, AdamWOptions>;
  using Base::options_;
  using Base::params_;
  using Base::steps_;

 public:
  /// An optimiser for `params` with validated `options`; both moments start at zero.
  explicit AdamW(ParameterList<T> params, AdamWOptions options = {})
      : Base(std::move(params), options) {
    for (const auto& p : params_) {
      exp_avg_.push_back(Vector<T>::Zero(p.size()));
      exp_avg_sq_.push_back(Vector<T>::Zero(p.size()));
    }
  }

  /// Whether weight decay applies to parameter i (in the order of the list it was given).
  bool decays(std::size_t i) const {
    return options_.decay_on == DecayOn::all || params_.at(i).role == ParameterRole::matrix;
  }

  /// One update of every parameter. Throws NumericError naming the parameter if a gradient is
  /// not finite (nothing is updated then, and the step count stays).
  void step() {
    detail::require_finite_gradients(params_, "AdamW");
    for (std::size_t i = 0; i < params_.size(); ++i) {
      detail::require_state_size(exp_avg_[i], params_[i], "exp_avg");
      detail::require_state_size(exp_avg_sq_[i], params_[i], "exp_avg_sq");
    }
    ++steps_;
    const double t = double(steps_);
    // Bias corrections in double: 1 - b^t loses digits in float for b close to 1.
    const T correction1 = T(1.0 - std::pow(options_.beta1, t));
    const T correction2_sqrt = T(std::sqrt(1.0 - std::pow(options_.beta2, t)));
    const T lr = T(options_.lr), b1 = T(options_.beta1), b2 = T(options_.beta2);
    const T eps = T(options_.eps), decay = T(1.0 - options_.lr * options_.weight_decay);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto w = params_[i].values();
      const auto g = params_[i].grads();
      Vector<T>& m = exp_avg_[i];
      Vector<T>& v = exp_avg_sq_[i];
      if (decays(i)) w *= decay;
      m = b1 * m + (T(1) - b1) * g;
      v = b2 * v + (T(1) - b2) * g.cwiseAbs2();
      w.array() -= lr * (m.array() / correction1) / (v.array().sqrt() / correction2_sqrt + eps);
    }
  }

  /// "exp_avg.<parameter>" then "exp_avg_sq.<parameter>" for every parameter, in order.
  NamedState<T> state() {
    NamedState<T> out;
    for (std::size_t i = 0; i < params_.size(); ++i)
      out.emplace_back("exp_avg." + params_[i].name, &exp_avg_[i]);
    for (std::size_t i = 0; i < params_.size(); ++i)
      out.emplace_back("exp_avg_sq." + params_[i].name, &exp_avg_sq_[i]);
    return out;
  }

 private:
  std::vector<Vector<T>> exp_avg_, exp_avg_sq_;  // m and v, one per parameter, flattened
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_ADAMW_INSTANCES(how, T) how class AdamW<T>;
POLYGRAD_INSTANCES(POLYGRAD_ADAMW_INSTANCES)

}  // namespace polygrad
