// BM_GemmRate (the machine's single-precision GEMM rate, measured with Eigen in this binary),
// BM_FmaPeak (its peak rate of fused multiply-adds, the ceiling no kernel passes) and main() of
// polygrad_bench.
//
// main() measures the 1024^3 GEMM rate once (one product per thread at the same time), before any benchmark, so that every attention
// benchmark can report its rate as a fraction of it; then it registers all families and runs
// the ones the filter selects. Filter shortcuts (whole value of --benchmark_filter):
//   (no filter)  the default set: GEMM, attention at n = 2^10 .. 2^12, model at n = 256, 1024
//   scaling      poly routes at n = 2^14 .. 2^18 and exact at 2^14 .. 2^16; d_h 8, H 8, causal
//   all          the full grid (hours: exact to 2^16, both poly routes to 2^18, d_h 8 and 16)
// Any other value is used as a regular expression, as Google Benchmark does.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "bench_support.hpp"
#include "polygrad/detail/simd.hpp"

namespace polygrad::bench {
namespace {

double gemm_gflops_at_startup = 0;

/// Threads the benchmarks' parallel loops get (detail::parallel_for).
int thread_count() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Seconds for C = A B with A (m, k) and B (k, n). `per_thread`: every thread computes its own
/// product at once (single-threaded Eigen inside a parallel region, the way the attention
/// heads run); otherwise one product, which Eigen parallelises itself.
double time_gemm(const Matrix<float>& A, const Matrix<float>& B, std::vector<Matrix<float>>& C,
                 bool per_thread) {
  const auto start = std::chrono::steady_clock::now();
  if (per_thread) {
#if defined(_OPENMP)
#pragma omp parallel
#endif
    {
#if defined(_OPENMP)
      Matrix<float>& out = C[std::size_t(omp_get_thread_num())];
#else
      Matrix<float>& out = C[0];
#endif
      out.noalias() = A * B;
      benchmark::DoNotOptimize(out.data());
    }
  } else {
    C[0].noalias() = A * B;
    benchmark::DoNotOptimize(C[0].data());
  }
  benchmark::ClobberMemory();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Best rate of `repeats` per-thread 1024^3 products, in GFLOP/s (all threads together).
double measure_gemm(Index size, int repeats) {
  const Matrix<float> A = random_normal<float>(size, size, 1),
                      B = random_normal<float>(size, size, 2);
  std::vector<Matrix<float>> C(std::size_t(thread_count()), Matrix<float>(size, size));
  time_gemm(A, B, C, true);  // warm-up: packing buffers, OpenMP threads, page faults
  double best = 0;
  const double flop = 2.0 * double(size) * double(size) * double(size) * thread_count();
  for (int r = 0; r < repeats; ++r) best = std::max(best, flop / time_gemm(A, B, C, true) / 1e9);
  return best;
}

void gemm_benchmark(benchmark::State& state) {
  const Index m = state.range(0), k = state.range(1), n = state.range(2);
  const bool per_thread = state.range(3) != 0;
  const Matrix<float> A = random_normal<float>(m, k, 1), B = random_normal<float>(k, n, 2);
  std::vector<Matrix<float>> C(std::size_t(thread_count()), Matrix<float>(m, n));
  double seconds = 0;
  for (auto _ : state) seconds += time_gemm(A, B, C, per_thread);
  const double products = per_thread ? thread_count() : 1;
  state.counters["GFLOP/s"] = 2.0 * double(m) * double(k) * double(n) * products *
                              double(state.iterations()) / seconds / 1e9;
}

/// Every thread runs `chains` independent chains of packet FMAs (enough to hide the FMA latency)
/// with no memory traffic: the machine's peak float rate as the SIMD kernels see it.
void fma_peak_benchmark(benchmark::State& state) {
  using Packet = simd::Packet<float>;
  constexpr int chains = 12;
  const long iterations = 20'000'000;
  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp parallel
#endif
    {
      Packet acc[chains];
      for (int c = 0; c < chains; ++c) acc[c] = simd::broadcast(1.0f + 1e-7f * float(c));
      const Packet scale = simd::broadcast(0.9999999f), shift = simd::broadcast(1e-7f);
      for (long i = 0; i < iterations; ++i)
        for (int c = 0; c < chains; ++c) acc[c] = simd::fma(acc[c], scale, shift);
      for (int c = 0; c < chains; ++c) benchmark::DoNotOptimize(acc[c]);
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  state.counters["GFLOP/s"] = 2.0 * double(simd::width<float>) * chains * double(iterations) *
                              thread_count() * double(state.iterations()) / seconds / 1e9;
}

const std::map<std::string, std::string>& filter_shortcuts() {
  static const std::map<std::string, std::string> shortcuts{
      {"default",
       "^BM_GemmRate/|^BM_FmaPeak|^BM_Attention[A-Za-z]+/n:(1024|2048|4096)/|"
       "^BM_ModelGradient/[a-z_]+/n:(256|1024)/|^BM_BatchGradient/"},
      {"batch", "^BM_BatchGradient/"},
      {"scaling",
       "^BM_AttentionPoly(Adjoint|Paper)/n:(16384|32768|65536|131072|262144)/dh:8/heads:8/causal:1/"
       "|"
       "^BM_AttentionExact/n:(16384|32768|65536)/dh:8/heads:8/causal:1/"},
      {"all", "."},
  };
  return shortcuts;
}

void print_help() {
  benchmark::PrintDefaultHelp();
  std::printf("\npolygrad_bench filter shortcuts (--benchmark_filter=NAME):\n");
  for (const auto& [name, regex] : filter_shortcuts())
    std::printf("  %-8s %s\n", name.c_str(), regex.c_str());
  std::printf("  Without --benchmark_filter the 'default' set runs.\n");
}

}  // namespace

double reference_gemm_gflops() { return gemm_gflops_at_startup; }

void register_gemm_benchmarks() {
  // The reference square product, and the shape of the hot products of the polynomial routes:
  // a chunk of 64 feature rows (k = 6,435 at d_h 8, g 7) times a k x (d_h + 1) state. Each
  // once per thread at the same time (per_thread 1: the rate the attention code can reach, and
  // the reference of gemm_frac), and once as a single product that Eigen splits itself.
  // The shapes are a runtime table: GCC 12.2 at -O2 -march=native (AVX-512) folded the literal
  // Args({1024, 1024, 1024, 0}) into a broadcast of 1024, registering per_thread = 1024.
  static const std::vector<std::vector<int64_t>> shapes{{1024, 1024, 1024}, {64, 6435, 9}};
  auto* b = benchmark::RegisterBenchmark("BM_GemmRate", gemm_benchmark);
  b->ArgNames({"m", "k", "n", "per_thread"})->UseRealTime()->MinTime(0.5);
  for (int64_t per_thread = 1; per_thread >= 0; --per_thread)
    for (const auto& shape : shapes) b->Args({shape[0], shape[1], shape[2], per_thread});
  benchmark::RegisterBenchmark("BM_FmaPeak", fma_peak_benchmark)->UseRealTime()->Iterations(3);
}

}  // namespace polygrad::bench

int main(int argc, char** argv) {
  using namespace polygrad::bench;
  std::vector<std::string> args(argv, argv + argc);
  bool has_filter = false;
  for (std::string& a : args) {
    const std::string flag = "--benchmark_filter=";
    if (a.rfind(flag, 0) != 0) continue;
    has_filter = true;
    const auto shortcut = filter_shortcuts().find(a.substr(flag.size()));
    if (shortcut != filter_shortcuts().end()) a = flag + shortcut->second;
  }
  if (!has_filter) args.push_back("--benchmark_filter=" + filter_shortcuts().at("default"));
  std::vector<char*> pointers;
  for (std::string& a : args) pointers.push_back(a.data());
  int count = int(pointers.size());
  benchmark::Initialize(&count, pointers.data(), print_help);
  if (benchmark::ReportUnrecognizedArguments(count, pointers.data())) return 1;

  gemm_gflops_at_startup = measure_gemm(1024, 5);
  benchmark::AddCustomContext("gemm_gflops_1024", std::to_string(gemm_gflops_at_startup));
  register_gemm_benchmarks();
  register_attention_benchmarks();
  register_model_benchmarks();
  register_value_width_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
