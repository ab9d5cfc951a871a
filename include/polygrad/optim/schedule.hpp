#pragma once
// Learning-rate schedules: a function of the step, which the training loop passes to
// set_lr() before each step().

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "polygrad/core/error.hpp"

namespace polygrad {

/// Linear warm-up from peak/warmup to peak over the first `warmup` steps, then a half cosine from
/// peak down to `floor` at step `total`, and `floor` after that (the schedule of most transformer
/// training recipes). Steps are counted from 1, as OptimizerBase::step_count() after the step.
struct WarmupCosine {
  double peak = 1e-3;       ///< the largest learning rate, reached at step `warmup`
  double floor = 0;         ///< the learning rate from step `total` on, in [0, peak]
  std::int64_t warmup = 0;  ///< steps of linear warm-up, >= 0
  std::int64_t total = 1;   ///< the step at which the cosine reaches `floor`, >= max(warmup, 1)

  /// Throws Error naming the first value out of range.
  void validate() const {
    require<Error>(std::isfinite(peak) && peak > 0, "WarmupCosine: peak must be finite and > 0, ",
                   "got ", peak);
    require<Error>(std::isfinite(floor) && floor >= 0 && floor <= peak, "WarmupCosine: floor ",
                   "must be in [0, peak = ", peak, "], got ", floor);
    require<Error>(warmup >= 0, "WarmupCosine: warmup must be >= 0, got ", warmup);
    require<Error>(total >= 1 && total >= warmup, "WarmupCosine: total (", total,
                   ") must be at least 1 and at least warmup (", warmup, ")");
  }

  /// The learning rate of step s >= 1 (the s-th call of step()).
  double operator()(std::int64_t s) const {
    validate();
    require<Error>(s >= 1, "WarmupCosine: steps are counted from 1, got ", s);
    if (s <= warmup) return peak * double(s) / double(warmup);
    if (s >= total) return floor;
    constexpr double pi = 3.14159265358979323846;
    const double progress = double(s - warmup) / double(total - warmup);  // in (0, 1)
    return floor + (peak - floor) * 0.5 * (1 + std::cos(pi * progress));
  }
};

}  // namespace polygrad
