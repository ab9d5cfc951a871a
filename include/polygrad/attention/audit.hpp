#pragma once
// The error audit: exact attention output for a few sampled query rows, O(s n d_h), compared
// with an approximate output. Certified bounds are worst-case; the audit measures this call
// (design.md section 3, "Worst case against typical case").

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// `count` distinct row indices in [0, n), sorted, drawn with the given seed (all rows when
/// count >= n).
inline std::vector<Index> audit_sample(Index n, Index count, std::uint64_t seed) {
  std::vector<Index> rows(static_cast<std::size_t>(n));
  std::iota(rows.begin(), rows.end(), Index(0));
  if (count < n) {
    std::mt19937_64 rng(seed);
    for (Index i = 0; i < count; ++i) {
      std::uniform_int_distribution<Index> pick(i, n - 1);
      std::swap(rows[std::size_t(i)], rows[std::size_t(pick(rng))]);
    }
    rows.resize(static_cast<std::size_t>(count));
    std::sort(rows.begin(), rows.end());
  }
  return rows;
}

/// Exact softmax(c q_i K^T) V for the given rows of one head, in double: (rows, d_h). Row by
/// row, with nothing of size n but the scores of one query.
template <class T>
Matrix<double> exact_attention_rows(const ConstMatrixRef<T>& Q, const ConstMatrixRef<T>& K,
                                    const ConstMatrixRef<T>& V, double scale, bool causal,
                                    const std::vector<Index>& rows) {
  const Index n = K.rows();
  Matrix<double> out = Matrix<double>::Zero(Index(rows.size()), V.cols());
  Vector<double> s(n);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Index i = rows[r], visible = causal ? i + 1 : n;
    const RowVector<double> q = scale * Q.row(i).template cast<double>();
    for (Index j = 0; j < visible; ++j) s(j) = K.row(j).template cast<double>().dot(q);
    const double m = s.head(visible).maxCoeff();
    double z = 0;
    for (Index j = 0; j < visible; ++j) {
      const double p = std::exp(s(j) - m);
      z += p;
      out.row(Index(r)) += p * V.row(j).template cast<double>();
    }
    out.row(Index(r)) /= z;
  }
  return out;
}

/// ||O~_S - O_S||_F / ||O_S||_F over the sampled rows S, with O_S computed exactly.
/// Q, K, V, approximate: one head, n x d_h (give T explicitly when passing views).
template <class T>
double audit_relative_error(const ConstMatrixRef<T>& Q, const ConstMatrixRef<T>& K,
                            const ConstMatrixRef<T>& V, double scale, bool causal,
                            const ConstMatrixRef<T>& approximate, const std::vector<Index>& rows) {
  const Matrix<double> exact = exact_attention_rows<T>(Q, K, V, scale, causal, rows);
  double diff = 0, norm = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    diff += (approximate.row(rows[r]).template cast<double>() - exact.row(Index(r))).squaredNorm();
    norm += exact.row(Index(r)).squaredNorm();
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// Compiled instances (core/instances.hpp).
#define POLYGRAD_AUDIT_INSTANCES(how, T)                                                 \
  how double audit_relative_error<T>(const ConstMatrixRef<T>&, const ConstMatrixRef<T>&, \
                                     const ConstMatrixRef<T>&, double, bool,             \
                                     const ConstMatrixRef<T>&, const std::vector<Index>&);
POLYGRAD_INSTANCES(POLYGRAD_AUDIT_INSTANCES)

}  // namespace polygrad
