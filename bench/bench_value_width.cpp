// BM_HeadValueWidth: one attention head whose queries and keys are narrower than its values
// (d_qk != d_v), forward + backward, float, causal, one thread: exact attention (the general
// tile kernels) against the polynomial adjoint route, whose rank k = C(d_qk + g, g) does not
// depend on d_v. The shape the polynomial method pays on (issue 24).
//
// Inputs as in bench_attention.cpp: unit q and k rows, scale = score bound = 2, so that the
// plan (R = 2, degree g, certified exp error 3.0e-4 at g 7) is fixed. Counters: k (0 for
// exact) and check_err, the largest relative difference of the polynomial route's O, dQ, dK,
// dV from exact's on the same inputs (its approximation error; 0 for exact itself).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "bench_support.hpp"
#include "polygrad/attention/exact_kernels.hpp"
#include "polygrad/attention/poly_adjoint.hpp"

namespace polygrad::bench {
namespace {

struct HeadInputs {
  Matrix<float> Q, K, V, dO;  // (n, d_qk), (n, d_qk), (n, d_v), (n, d_v)
};

HeadInputs head_inputs(Index n, Index dqk, Index dv) {
  const std::uint64_t seed = std::uint64_t(n) * 100 + std::uint64_t(dqk * 10 + dv);
  HeadInputs in{random_normal<float>(n, dqk, seed + 1), random_normal<float>(n, dqk, seed + 2),
                random_normal<float>(n, dv, seed + 3), random_normal<float>(n, dv, seed + 4)};
  for (Matrix<float>* m : {&in.Q, &in.K}) m->rowwise().normalize();
  return in;
}

struct HeadResult {
  Matrix<float> O, dQ, dK, dV;
};

/// Exact forward + backward of one head on one thread: the tile kernels of exact_kernels.hpp.
void run_exact(const HeadInputs& in, float scale, HeadResult& r) {
  const Index n = in.Q.rows();
  const exact::detail::Pass<float> pass{scale, true, exact::Tiles{}};
  r.O.resize(n, in.V.cols());
  Vector<float> lse(n);
  exact::detail::forward_blocks<float>(in.Q, in.K, in.V, pass, {0, 1}, r.O, lse);
  const Vector<float> delta = r.O.cwiseProduct(in.dO).rowwise().sum();
  r.dQ.setZero(n, in.Q.cols());
  r.dK.resize(n, in.K.cols());
  r.dV.resize(n, in.V.cols());
  exact::detail::backward_blocks<float>(in.Q, in.K, in.V, in.dO, lse, delta, pass, {0, 1},
                                        {r.dQ, r.dK, r.dV});
  r.dQ *= scale;  // the kernels leave dQ / c
}

/// The polynomial adjoint route on the same head: forward, then backward_adjoint.
void run_poly(const PolyApproximation& a, const HeadInputs& in, HeadResult& r) {
  const Index n = in.Q.rows(), chunk = PolyOptions{}.chunk;
  r.O.resize(n, in.V.cols());
  Vector<float> z(n);
  poly::forward<float>(a, in.Q, in.K, in.V, true, chunk, r.O, z);
  r.dQ.resize(n, in.Q.cols());
  r.dK.resize(n, in.K.cols());
  r.dV.resize(n, in.V.cols());
  poly::backward_adjoint<float>(a, in.Q, in.K, in.V, {r.O, z}, in.dO, true, chunk,
                                {r.dQ, r.dK, r.dV});
}

void value_width_benchmark(benchmark::State& state, bool polynomial) {
  const Index n = state.range(0), dqk = state.range(1), dv = state.range(2);
  const int degree = int(state.range(3));
  const float scale = 2;
  const HeadInputs in = head_inputs(n, dqk, dv);
  std::optional<PolyApproximation> a;
  if (polynomial) {
    AttentionShape shape(1, true, scale);
    shape.score_bound = scale;
    PolyOptions options;
    options.degree = degree;
    a = make_poly_approximation(in.Q, in.K, shape, options);
  }
  HeadResult r;
  // One thread, as the library runs a head: inside a one-thread region, whose nested products
  // stay serial (core/threading.hpp; outside one, Eigen would split each tile product).
  auto run = [&] {
    detail::parallel_for(
        1, 1, [&](Index) { polynomial ? run_poly(*a, in, r) : run_exact(in, scale, r); });
  };
  run();  // warm-up, and the check below
  double check = 0;
  if (polynomial) {
    HeadResult exact;
    detail::parallel_for(1, 1, [&](Index) { run_exact(in, scale, exact); });
    check = std::max({relative_error(r.O, exact.O), relative_error(r.dQ, exact.dQ),
                      relative_error(r.dK, exact.dK), relative_error(r.dV, exact.dV)});
  }
  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    run();
    benchmark::DoNotOptimize(r.dV.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  state.counters["s_per_head"] = seconds / double(state.iterations());
  state.counters["k"] = polynomial ? double(a->features.size()) : 0.0;
  state.counters["check_err"] = check;
}

}  // namespace

void register_value_width_benchmarks() {
  // d_qk 8 with d_v 64 (and d_v 8, the same rank, for the cost of wide values), n = 2^12 ..
  // 2^16; one iteration per repetition from 2^14 on.
  for (const bool polynomial : {false, true}) {
    for (const Index dv : {Index(8), Index(64)}) {
      for (int log_n = 12; log_n <= 16; ++log_n) {
        auto* b = benchmark::RegisterBenchmark(
            polynomial ? "BM_HeadValueWidth/poly_adjoint" : "BM_HeadValueWidth/exact",
            value_width_benchmark, polynomial);
        b->ArgNames({"n", "dqk", "dv", "degree"})
            ->Args({Index(1) << log_n, 8, dv, polynomial ? 7 : 0})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        if (log_n >= 14) b->Iterations(1);
      }
    }
  }
}

}  // namespace polygrad::bench
