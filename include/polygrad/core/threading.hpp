#pragma once
// polygrad's one threading policy: how many threads a call may use, and the two loops that use
// them (a dynamic loop over work items, a static split of rows into one range per thread).
//
// Every parallel region polygrad opens sets the thread count of its own implicit tasks to 1, so
// that nothing nested inside it -- above all Eigen's products, which parallelise themselves
// outside a parallel region -- starts threads of its own. That setting belongs to the region's
// tasks and ends with it: no global OpenMP state is changed and restored. Serial work runs in a
// one-thread region for the same reason. Without OpenMP every loop is a plain loop.

#include <algorithm>
#include <exception>
#include <mutex>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "polygrad/core/types.hpp"

namespace polygrad {

/// The threads a call may use. Set per model (Transformer::set_threading), per layer, or per
/// attention call (AttentionShape::threading).
struct Threading {
  /// Number of threads; 0 takes OpenMP's default (OMP_NUM_THREADS, else one per core).
  int threads = 0;
  /// Below this much work (multiply-adds, or row-operations of similar cost) a loop runs on one
  /// thread: starting threads and meeting at a barrier costs some microseconds, far more on a
  /// machine busy with other work, where a descheduled thread stalls the others.
  double min_parallel_work = 1 << 24;
  /// Rows per block of the row-wise layers: their intermediate activations (an MLP's n x d_ff
  /// above all) exist for this many rows at a time, per thread, and stay in cache.
  Index row_block = 128;

  /// One thread for everything.
  static Threading serial() { return Threading{1}; }
};

namespace detail {

/// The thread count `threading` resolves to here: 1 inside an enclosing active parallel region
/// (nested regions would get one thread anyway) or without OpenMP.
inline int thread_count(const Threading& threading) {
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  return threading.threads > 0 ? threading.threads : std::max(1, omp_get_max_threads());
#else
  (void)threading;
  return 1;
#endif
}

/// The number of the calling thread in its parallel region (0 outside one).
inline int current_thread() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// The threads a loop of `items` work items with `work` in all should use: at most one per item,
/// and one when the work is below the policy's threshold.
inline int threads_for(const Threading& threading, Index items, double work) {
  if (items <= 1 || work < threading.min_parallel_work) return 1;
  return int(std::min<Index>(thread_count(threading), items));
}

/// Collects the first exception thrown inside a parallel region (OpenMP forbids one to leave
/// it) and rethrows it afterwards.
class ExceptionSlot {
 public:
  template <class Body>
  void run(Body&& body) noexcept {
    try {
      body();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
};

/// How parallel_for hands out its items: item i to thread i % threads (items of similar cost,
/// like heads, or a head's interleaved parts), or each to the next free thread (items of
/// unequal cost, ordered longest first).
enum class Schedule { round_robin, next_free };

/// Calls body(i) for i in [0, count) on `threads` threads, handed out as `schedule` says.
/// body(i) must not depend on which thread runs it. Exceptions are rethrown after the loop.
template <class Body>
void parallel_for(Index count, int threads, Body&& body,
                  Schedule schedule = Schedule::round_robin) {
  ExceptionSlot slot;
#if defined(_OPENMP)
  threads = int(std::clamp<Index>(threads, 1, std::max<Index>(count, 1)));
  const bool next_free = schedule == Schedule::next_free;
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);  // this region's tasks only: nested products stay serial
    if (next_free) {
#pragma omp for schedule(dynamic, 1)
      for (Index i = 0; i < count; ++i) slot.run([&] { body(i); });
    } else {
#pragma omp for schedule(static, 1)
      for (Index i = 0; i < count; ++i) slot.run([&] { body(i); });
    }
  }
#else
  (void)threads;
  (void)schedule;
  for (Index i = 0; i < count; ++i) slot.run([&] { body(i); });
#endif
  slot.rethrow();
}

/// Splits rows [0, n) into `parts` contiguous ranges of (nearly) equal length and calls
/// body(part, begin, end) for each, part p on thread p. The split depends only on n and parts,
/// so per-part partial sums added in part order give the same result on every run.
template <class Body>
void parallel_ranges(Index n, int parts, Body&& body) {
  ExceptionSlot slot;
  parts = int(std::clamp<Index>(parts, 1, std::max<Index>(n, 1)));
  auto range = [&](int p) {
    const Index begin = n * p / parts, end = n * (p + 1) / parts;
    slot.run([&] { body(p, begin, end); });
  };
#if defined(_OPENMP)
#pragma omp parallel num_threads(parts)
  {
    omp_set_num_threads(1);
#pragma omp for schedule(static, 1)
    for (int p = 0; p < parts; ++p) range(p);
  }
#else
  for (int p = 0; p < parts; ++p) range(p);
#endif
  slot.rethrow();
}

/// The threads a row-wise pass over n rows, costing `work_per_row` each, should use.
inline int row_parts(const Threading& threading, Index n, double work_per_row) {
  const Index blocks = (n + threading.row_block - 1) / std::max<Index>(threading.row_block, 1);
  return threads_for(threading, blocks, double(n) * work_per_row);
}

/// Calls body(part, begin, size) for blocks of at most threading.row_block rows covering
/// [0, n), the rows split into `parts` contiguous ranges, each run by its own thread
/// (parallel_ranges), so that per-part sums reduced in part order are reproducible.
template <class Body>
void for_row_blocks(Index n, const Threading& threading, int parts, Body&& body) {
  const Index block = std::max<Index>(threading.row_block, 1);
  parallel_ranges(n, parts, [&](int part, Index begin, Index end) {
    for (Index b = begin; b < end; b += block) body(part, b, std::min(block, end - b));
  });
}

}  // namespace detail
}  // namespace polygrad
