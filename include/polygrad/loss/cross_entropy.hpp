#pragma once
// Token cross-entropy from logits, mean over the tokens that count (design.md section 1):
//   L = 1/m sum_{i counted} (logsumexp(z_i) - z_i[t_i]),
//   dL/dz_i = (softmax(z_i) - onehot(t_i)) / m for counted rows, 0 for ignored ones,
// where a row is ignored when its target is ignore_target (padding, a prompt, a sequence's
// first token) and m is the number of rows counted.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/threading.hpp"
#include "polygrad/loss/loss.hpp"

namespace polygrad {

/// The target id that cross_entropy_loss skips: the row adds nothing to the loss, its gradient
/// is zero and it is not counted in the mean (PyTorch's default ignore_index).
constexpr int ignore_target = -100;

/// Mean cross-entropy of `logits` (n x V) against `targets` (n ids in [0, V)), with its
/// gradient, rows in parallel as `threading` allows; rows whose target is ignore_target do not
/// count. The log-sum-exp subtracts the row maximum, so large logits do not overflow. Throws
/// ShapeError if targets.size() != n, Error for an id outside the vocabulary or when every
/// target is ignored, and NumericError for non-finite logits.
template <class T>
LossResult<T> cross_entropy_loss(const Matrix<T>& logits, const std::vector<int>& targets,
                                 const Threading& threading = Threading{}) {
  const Index n = logits.rows(), V = logits.cols();
  require<ShapeError>(n >= 1 && V >= 1, "cross-entropy needs at least one token and one class, ",
                      "got logits ", n, " x ", V);
  require<ShapeError>(Index(targets.size()) == n, "cross-entropy got ", targets.size(),
                      " targets for ", n, " rows of logits; pass one target id per row");
  const Index counted = n - Index(std::count(targets.begin(), targets.end(), ignore_target));
  require<Error>(counted >= 1, "cross-entropy: all ", n, " targets are ignore_target (",
                 ignore_target, "), so there is no loss to take the mean of; leave at least one ",
                 "target that counts");
  LossResult<T> result;
  result.grad.resize(n, V);
  const int parts = detail::row_parts(threading, n, 24.0 * double(V));
  std::vector<double> partial(std::size_t(parts), 0.0);  // per part, summed in part order
  detail::for_row_blocks(n, threading, parts, [&](int part, Index b, Index s) {
    for (Index i = b; i < b + s; ++i) {
      const int t = targets[std::size_t(i)];
      if (t == ignore_target) {
        result.grad.row(i).setZero();
        continue;
      }
      require<Error>(t >= 0 && t < V, "target id ", t, " at position ", i,
                     " is outside the vocabulary [0, ", V, ") and is not ignore_target (",
                     ignore_target, ")");
      const T m = logits.row(i).maxCoeff();
      auto p = result.grad.row(i);
      p = (logits.row(i).array() - m).exp().matrix();  // every entry in (0, 1]
      const double z = double(p.sum());
      partial[std::size_t(part)] += std::log(z) + double(m) - double(logits(i, t));
      p /= T(z);
      p(t) -= T(1);
    }
    result.grad.middleRows(b, s) /= T(counted);
  });
  result.value = std::accumulate(partial.begin(), partial.end(), 0.0) / double(counted);
  if (!std::isfinite(result.value)) require_finite(logits, "cross-entropy logits");
  return result;
}

}  // namespace polygrad
