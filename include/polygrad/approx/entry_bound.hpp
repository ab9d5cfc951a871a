#pragma once
// The entry bound R of the polynomial method (design.md section 3, "Entry bound"): with keys
// centred on their mean kbar, every score c q_i . (k_j - kbar) lies in [-R, R] with
// R = |c| max_i |q_i| max_j |k_j - kbar| (Cauchy-Schwarz). O(n d).

#include <algorithm>
#include <cmath>
#include <limits>

#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// A certified bound on the (centred) attention scores of one head.
struct EntryBound {
  double R = 0.0;             ///< every centred score c q_i . (k_j - kbar) lies in [-R, R]
  double q_max = 0.0;         ///< max_i |q_i| (rounded up)
  double k_max = 0.0;         ///< max_j |k_j - kbar| (rounded up)
  Vector<double> key_centre;  ///< kbar (d); zero when not centred
};

/// Sums and maxima of statistics over the processes that share a sequence: none for one
/// process. A SequenceGroup (parallel/group.hpp) is the other kind.
struct NoReduction {
  /// Leaves data[0, count) as it is: the sum over one process.
  void sum(double*, Index) const {}
  /// Leaves data[0, count) as it is: the maximum over one process.
  void max(double*, Index) const {}
};

/// The Cauchy-Schwarz entry bound of c Q K^T for Q (n_q x d) and K (n_k x d), matrices or views.
/// With centre_keys, kbar is the mean key row; softmax rows do not change (design.md section 3).
/// `reduce` combines the statistics of every shard when the rows are split across processes
/// (design.md section 8), so that every shard gets the bound of the whole sequence.
/// NumericError on NaN or infinity (found in the same pass that takes the norms); ShapeError
/// if Q and K have different widths.
template <class DerivedQ, class DerivedK, class Reduce = const NoReduction&>
EntryBound cauchy_schwarz_bound(const Eigen::MatrixBase<DerivedQ>& Q,
                                const Eigen::MatrixBase<DerivedK>& K, double scale,
                                bool centre_keys, Reduce&& reduce = NoReduction{}) {
  require<ShapeError>(Q.cols() == K.cols(), "entry bound: Q has ", Q.cols(), " columns and K ",
                      K.cols(), "; queries and keys of one head must have the same width");
  require<NumericError>(std::isfinite(scale), "entry bound: the score scale is ", scale,
                        "; it must be finite");
  const Index d = Q.cols();
  // A row's squared norm, in double for float inputs too, is finite exactly when the row is.
  auto squared_norm = [](const auto& row, const char* what, Index i) {
    const double n2 = row.template cast<double>().squaredNorm();
    require<NumericError>(std::isfinite(n2), what, " contains NaN or infinity (row ", i,
                          "); check the input data and the learning rate (a diverged model ",
                          "produces this)");
    return n2;
  };
  EntryBound bound;
  bound.key_centre = Vector<double>::Zero(d);
  double norms[2] = {0.0, 0.0};  // largest squared norms of q_i and of k_j (centred)
  for (Index i = 0; i < Q.rows(); ++i)
    norms[0] = std::max(norms[0], squared_norm(Q.row(i), "Q", i));
  if (centre_keys) {
    Vector<double> sum_count = Vector<double>::Zero(d + 1);  // [sum_j k_j, count]
    for (Index j = 0; j < K.rows(); ++j) {
      squared_norm(K.row(j), "K", j);
      sum_count.head(d) += K.row(j).transpose().template cast<double>();
    }
    sum_count(d) = double(K.rows());
    reduce.sum(sum_count.data(), d + 1);
    if (sum_count(d) > 0) bound.key_centre = sum_count.head(d) / sum_count(d);
    for (Index j = 0; j < K.rows(); ++j)
      norms[1] =
          std::max(norms[1],
                   (K.row(j).transpose().template cast<double>() - bound.key_centre).squaredNorm());
  } else {
    for (Index j = 0; j < K.rows(); ++j)
      norms[1] = std::max(norms[1], squared_norm(K.row(j), "K", j));
  }
  reduce.max(norms, 2);
  const double q2 = norms[0], k2 = norms[1];
  // Each norm carries about (d + 2) roundings; pad them so that |q_i| <= q_max and
  // |k_j - kbar| <= k_max hold for the exact values, and R stays a true upper bound.
  const double pad = 1.0 + (static_cast<double>(d) + 8.0) * std::numeric_limits<double>::epsilon();
  const auto round_up = [pad](double x) {
    return x == 0.0 ? 0.0 : std::nextafter(x * pad, std::numeric_limits<double>::infinity());
  };
  bound.q_max = round_up(std::sqrt(q2));
  bound.k_max = round_up(std::sqrt(k2));
  bound.R = round_up(std::fabs(scale) * bound.q_max * bound.k_max);
  require<NumericError>(std::isfinite(bound.R), "entry bound: R overflowed (|q| up to ",
                        std::sqrt(q2), ", |k| up to ", std::sqrt(k2),
                        "); the activations have diverged, check the learning rate");
  return bound;
}

}  // namespace polygrad
