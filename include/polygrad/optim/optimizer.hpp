#pragma once
// What every optimiser in polygrad/optim/ shares: named state buffers and the argument checks.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/parameter.hpp"

namespace polygrad {

/// An optimiser's state as named buffers, e.g. {"exp_avg.blocks.0.attn.q.weight", &buffer}, one
/// per parameter and kind, in parameter order. Read them to save a checkpoint; assign to them
/// (same sizes) to resume. The pointers stay valid while the optimiser lives.
template <class T>
using NamedState = std::vector<std::pair<std::string, Vector<T>*>>;

namespace detail {

/// Throws NumericError naming the first parameter whose gradient holds NaN or infinity; runs
/// before any update, so a failed step changes nothing.
template <class T>
void require_finite_gradients(const ParameterList<T>& params, const char* optimiser) {
  for (const auto& p : params) {
    if (p.grads().allFinite()) continue;
    throw NumericError(concat(optimiser, ": the gradient of parameter '", p.name, "' contains ",
                              first_non_finite(as_rows(p.grad, p.shape)), "; lower the learning ",
                              "rate, check the input data, or clip gradients"));
  }
}

/// Throws ShapeError unless a state buffer (possibly written by a checkpoint loader) still has
/// the size of its parameter.
template <class T>
void require_state_size(const Vector<T>& buffer, const ParameterView<T>& p, const char* kind) {
  require<ShapeError>(buffer.size() == p.size(), "optimiser state '", kind, ".", p.name, "' has ",
                      buffer.size(), " entries, but the parameter has ", p.size(),
                      "; load state saved for this model");
}

/// Throws Error unless `value` is finite and in [lo, hi) (hi_open) or [lo, hi].
inline void require_hyperparameter(const char* name, double value, double lo, double hi,
                                   bool hi_open) {
  const bool ok = std::isfinite(value) && value >= lo && (hi_open ? value < hi : value <= hi);
  require<Error>(ok, name, " must be finite and in [", lo, ", ", hi, hi_open ? ")" : "]", ", got ",
                 value);
}

}  // namespace detail

/// What SGD and AdamW share: the parameters, validated options, the step count and their
/// accessors. Options must have lr and validate().
template <class T, class Options>
class OptimizerBase {
 public:
  /// Sets every parameter gradient to zero.
  void zero_grad() { polygrad::zero_grad(params_); }

  /// t, the number of step() calls so far (or as restored).
  std::int64_t step_count() const { return steps_; }
  /// Restores t from a checkpoint.
  void set_step_count(std::int64_t steps) {
    require<Error>(steps >= 0, "step count must be >= 0, got ", steps);
    steps_ = steps;
  }

  /// The hyperparameters.
  const Options& options() const { return options_; }
  /// Changes the learning rate (schedules); Error, and no change, if it is out of range.
  void set_lr(double lr) {
    Options next = options_;
    next.lr = lr;
    next.validate();
    options_ = next;
  }
  /// The parameters being optimised.
  const ParameterList<T>& parameters() const { return params_; }

 protected:
  /// Takes the parameters to optimise and the options, which validate() checks (it throws on
  /// a value out of range).
  OptimizerBase(ParameterList<T> params, Options options)
      : params_(std::move(params)), options_(options) {
    options_.validate();
  }

  ParameterList<T> params_;  ///< the parameters; state buffers follow their order
  Options options_;          ///< the hyperparameters, validated
  std::int64_t steps_ = 0;   ///< t, the number of step() calls so far (or as restored)
};

}  // namespace polygrad
