#pragma once
// PLACEHOLDER while the tiled kernel is written: delegates to the naive reference.
#include "polygrad/attention/naive.hpp"
namespace polygrad {
template <class T>
class ExactAttention final : public AttentionMethod<T> {
 public:
  std::string name() const override { return "exact"; }
  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    return NaiveAttention<T>().forward(Q, K, V, shape, O);
  }
};
}  // namespace polygrad
