#pragma once
// Splitting n x (H d_h) matrices into heads, and running work per head in parallel.

#include <exception>
#include <mutex>

#include "polygrad/core/types.hpp"

namespace polygrad::detail {

/// A copy of head h: the n x d_h block of columns [h d_h, (h + 1) d_h), contiguous.
template <class T>
Matrix<T> head_of(const Matrix<T>& m, Index h, Index dh) {
  return m.middleCols(h * dh, dh);
}

/// Writes the n x d_h matrix `head` into columns [h d_h, (h + 1) d_h) of m.
template <class T>
void set_head(Matrix<T>& m, Index h, const Matrix<T>& head) {
  m.middleCols(h * head.cols(), head.cols()) = head;
}

/// Calls body(i) for i in [0, count), in parallel under OpenMP. An exception thrown by any call
/// is rethrown here after the loop (OpenMP forbids it to leave the parallel region).
template <class Body>
void parallel_for(Index count, Body&& body) {
  std::exception_ptr error;
  std::mutex error_mutex;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
#endif
  for (Index i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace polygrad::detail
