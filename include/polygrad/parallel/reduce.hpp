#pragma once
// What the ranks of a split sequence add up after a backward pass (design.md section 8): every
// parameter gradient, and the loss. Each rank's backward leaves the gradient of its own rows;
// the model's gradient is their sum.

#include <vector>

#include "polygrad/core/parameter.hpp"
#include "polygrad/parallel/group.hpp"

namespace polygrad {

/// Replaces every gradient in `params` by its sum over the ranks of `group`: one sum over a
/// flat buffer in double (so that float gradients are added as exactly as the states are). A
/// collective: every rank passes the same parameters in the same order.
template <class T>
void sum_gradients(const ParameterList<T>& params, SequenceGroup& group) {
  Index total = 0;
  for (const auto& p : params) total += p.size();
  require_same_on_every_rank(group, double(total), "sum_gradients: the ranks pass different ",
                             "parameter lists");
  std::vector<double> flat(static_cast<std::size_t>(total));
  Index at = 0;
  for (const auto& p : params) {
    Eigen::Map<Vector<double>>(flat.data() + at, p.size()) = p.grads().template cast<double>();
    at += p.size();
  }
  group.sum(flat.data(), total);
  at = 0;
  for (const auto& p : params) {
    p.grads() = Eigen::Map<const Vector<double>>(flat.data() + at, p.size()).template cast<T>();
    at += p.size();
  }
}

/// The sum of `value` over the ranks of `group` (a loss that each rank computed on its rows).
inline double sum_over_ranks(double value, SequenceGroup& group) {
  group.sum(&value, 1);
  return value;
}

}  // namespace polygrad
