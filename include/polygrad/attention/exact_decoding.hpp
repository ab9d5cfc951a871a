#pragma once
// Exact causal attention one token at a time (inference/decoder.hpp): a cache of the keys and
// values of every token so far, so that a new token costs O(n d_h) per head. A step is the
// forward kernel of exact_kernels.hpp on one query row against the cached keys in one tile,
// unmasked, since the cache holds no later keys.

#include <algorithm>
#include <memory>
#include <vector>

#include "polygrad/attention/exact_kernels.hpp"

namespace polygrad::exact {

/// The DecodingState of ExactAttention: keys and values (capacity x H d_h), rows below the
/// position in use; the capacity doubles when full.
template <class T>
class KeyValueCache final : public DecodingState<T> {
 public:
  /// An empty cache for causal attention of `shape` and width H d_h.
  KeyValueCache(const AttentionShape& shape, Index width) : shape_(shape), width_(width) {}

  void reset() override {
    keys_.resize(0, width_);
    values_.resize(0, width_);
    position_ = 0;
  }

  void remember(const Matrix<T>& K, const Matrix<T>& V) override {
    require_shape(K, K.rows(), width_, "keys to remember");
    require_shape(V, K.rows(), width_, "values to remember");
    reserve(position_ + K.rows());
    keys_.middleRows(position_, K.rows()) = K;
    values_.middleRows(position_, K.rows()) = V;
    position_ += K.rows();
  }

  void step(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) override {
    remember(k, v);  // the token attends to itself too
    const Index H = shape_.heads, dh = width_ / H, n = position_;
    o.resize(1, width_);
    const double work = 4.0 * double(n) * double(dh) * double(H);
    // One tile of every key: the query's scores are then one contiguous column (n).
    const detail::Pass<T> pass{T(shape_.scale), false, Tiles{1, n}};
    detail::parallel_for(H, detail::threads_for(shape_.threading, H, work), [&](Index h) {
      Vector<T> lse(1);
      detail::forward_blocks<T>(q.middleCols(h * dh, dh), keys_.block(0, h * dh, n, dh),
                                values_.block(0, h * dh, n, dh), pass, {}, o.middleCols(h * dh, dh),
                                lse);
    });
  }

  bool recurrent() const override { return false; }

  std::vector<HeadPlan> plans() const override {
    std::vector<HeadPlan> out(std::size_t(shape_.heads));
    for (HeadPlan& plan : out) {
      plan.n = position_;
      plan.head_dim = width_ / shape_.heads;
      plan.causal = true;
    }
    return out;
  }

 private:
  /// Room for `rows` tokens, doubling the capacity (from 64) as needed.
  void reserve(Index rows) {
    if (rows <= keys_.rows()) return;
    const Index capacity = std::max({rows, 2 * keys_.rows(), Index(64)});
    keys_.conservativeResize(capacity, width_);
    values_.conservativeResize(capacity, width_);
  }

  AttentionShape shape_;
  Index width_;
  Matrix<T> keys_, values_;  // (capacity, H d_h)
  Index position_ = 0;
};

}  // namespace polygrad::exact
