#pragma once
// Attention methods by name: the one place where "exact", "poly" and "auto" become an
// AttentionMethod. The programs' --attention flag, the benchmarks, the memory programs and the
// Python module's method= all come through here.

#include <memory>
#include <string>

#include "polygrad/attention/auto.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly.hpp"

namespace polygrad {

/// The attention method called `name`:
///   - "exact": ExactAttention (the tiled kernels; `options` is not used);
///   - "poly": PolyAttention with `options` in every head;
///   - "auto": AutoAttention, per head PolyAttention with `options` where its plan is predicted
///     faster than exact attention (attention/rates.hpp), ExactAttention elsewhere.
/// Throws PlanError naming the known methods for any other name.
template <class T>
std::shared_ptr<const AttentionMethod<T>> make_attention(const std::string& name,
                                                         const PolyOptions& options = {}) {
  if (name == "exact") return std::make_shared<ExactAttention<T>>();
  if (name == "poly") return std::make_shared<PolyAttention<T>>(options);
  if (name == "auto") return std::make_shared<AutoAttention<T>>(options);
  throw PlanError(
      detail::concat("unknown attention method '", name, "'; use \"exact\", \"poly\" or \"auto\""));
}

}  // namespace polygrad
