#pragma once
// What the benchmark files of polygrad_bench share: the GEMM rate measured at startup,
// the registration entry points that main() calls after measuring it, seeded random inputs,
// and the relative-error measure the one-off correctness checks use.

#include <cmath>
#include <cstdint>
#include <random>

#include "polygrad/core/types.hpp"

namespace polygrad::bench {

/// Single-precision GEMM rate (GFLOP/s, all threads together) of 1024^3 Eigen products, one per
/// OpenMP thread at the same time, measured once in main() before any benchmark runs; attention
/// benchmarks report their rate as a fraction of it.
double reference_gemm_gflops();

/// Registration entry points, one per source file; main() calls them after the GEMM rate is
/// known so that every family is registered in one place.
void register_gemm_benchmarks();
void register_attention_benchmarks();
void register_model_benchmarks();
void register_value_width_benchmarks();

/// An n x cols matrix of N(0, 1) entries from a generator seeded with `seed`.
template <class T>
Matrix<T> random_normal(Index n, Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Matrix<T> m(n, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(normal(rng));
  return m;
}

/// ||a - b||_F / max(||b||_F, tiny), computed in double whatever the scalar types.
template <class A, class B>
double relative_error(const A& a, const B& b) {
  const double diff = (a.template cast<double>() - b.template cast<double>()).norm();
  return diff / std::max(b.template cast<double>().norm(), 1e-300);
}

}  // namespace polygrad::bench
