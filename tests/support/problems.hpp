#pragma once
// The tests' inputs, made in one way: random numbers from std::mt19937_64 seeded by the test
// (never std::rand) and random attention problems. The small models are in configs.hpp.

#include <cstdint>
#include <random>

#include "polygrad/attention/method.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad::test {

/// A rows x cols matrix of Uniform(-scale, scale) entries from rng (deterministic per seed).
inline Matrix<double> random_matrix(Index rows, Index cols, std::mt19937_64& rng,
                                    double scale = 1.0) {
  std::uniform_real_distribution<double> u(-scale, scale);
  Matrix<double> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
  return m;
}

/// m with every d_h-wide head segment of each row scaled to unit norm, so that with scale tau
/// every score lies in [-tau, tau] (QK normalisation).
inline Matrix<double> unit_rows_per_head(Matrix<double> m, Index heads) {
  const Index dh = m.cols() / heads;
  for (Index i = 0; i < m.rows(); ++i)
    for (Index h = 0; h < heads; ++h) m.row(i).segment(h * dh, dh).normalize();
  return m;
}

/// The inputs of one multi-head attention call and of its backward pass.
struct AttentionProblem {
  /// (n, H d_h) each.
  Matrix<double> Q, K, V, dO;
  AttentionShape shape;

  /// Scales every head's query and key rows to unit norm and sets score_bound = scale: the
  /// inputs QK normalisation gives attention.
  AttentionProblem& unit_qk() {
    Q = unit_rows_per_head(Q, shape.heads);
    K = unit_rows_per_head(K, shape.heads);
    shape.score_bound = shape.scale;
    return *this;
  }
};

/// Q, K, V, dO (n x H d_h) of Uniform(-1, 1) entries from a generator seeded with `seed`, and
/// the shape (H heads, causal or not, scale c).
inline AttentionProblem random_attention_problem(Index n, Index heads, Index dh, bool causal,
                                                 double scale, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  AttentionProblem p;
  p.Q = random_matrix(n, heads * dh, rng);
  p.K = random_matrix(n, heads * dh, rng);
  p.V = random_matrix(n, heads * dh, rng);
  p.dO = random_matrix(n, heads * dh, rng);
  p.shape = AttentionShape(heads, causal, scale);
  return p;
}

}  // namespace polygrad::test
