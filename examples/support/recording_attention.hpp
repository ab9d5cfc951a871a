#pragma once
// An AttentionMethod that runs another one and keeps the HeadPlan of every head of every call,
// so a program can read degree, rank, certified bound and audit of a whole model's pass as data
// (MultiHeadAttention itself keeps only the printed description).

#include <memory>
#include <mutex>
#include <vector>

#include "polygrad/attention/method.hpp"

namespace polygrad::examples {

/// Forwards to `inner` and appends each call's plans() to a list; clear() between passes.
template <class T>
class RecordingAttention final : public AttentionMethod<T> {
 public:
  /// Records the plans of `inner` (which must not be null).
  explicit RecordingAttention(std::shared_ptr<const AttentionMethod<T>> inner)
      : inner_(std::move(inner)) {
    require<Error>(inner_ != nullptr, "RecordingAttention needs a method to record");
  }

  std::string name() const override { return inner_->name(); }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    auto context = inner_->forward(Q, K, V, shape, O);
    const std::vector<HeadPlan> plans = context->plans();
    const std::lock_guard<std::mutex> lock(mutex_);
    calls_.push_back(plans);
    return context;
  }

  /// The plans of every call since the last clear(), one vector per call (per layer, in order).
  std::vector<std::vector<HeadPlan>> calls() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }
  /// Forgets the recorded calls.
  void clear() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    calls_.clear();
  }

 private:
  std::shared_ptr<const AttentionMethod<T>> inner_;
  mutable std::mutex mutex_;
  mutable std::vector<std::vector<HeadPlan>> calls_;  // a log, not configuration
};

}  // namespace polygrad::examples
