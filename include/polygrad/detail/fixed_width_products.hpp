#pragma once
// The three small matrix products of exact attention's tiles (attention/exact_fixed_width.hpp),
// register-tiled for a head width D known at compile time. Every operand is read in place,
// nothing is packed, each micro tile keeps its accumulators in registers for a whole pass over
// the summed dimension, and an operand packet shared by several multiply-adds is loaded once.
// General matrix products (Eigen's) pack both operands for every call, which at D = 16 took 18%
// of exact attention's time besides the products themselves (perf, n 8192, one thread). The
// reference is the same product in Eigen: tests/attention/test_fixed_width_products.cpp.
//
// Layout: every matrix row-major, given by its first element and its row stride. "Lanes" is
// the dimension held in SIMD packets; it is always contiguous in memory.

#include <type_traits>

#include "polygrad/core/types.hpp"
#include "polygrad/detail/simd.hpp"

// Fully unrolled loops over a micro tile's registers: an accumulator indexed at run time would
// live in memory (GCC spilled all sixteen around an epilogue it did not unroll by itself).
#if defined(__clang__)
#define POLYGRAD_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define POLYGRAD_UNROLL _Pragma("GCC unroll 16")
#else
#define POLYGRAD_UNROLL
#endif

/// Register-tiled products for a compile-time width D (detail/fixed_width_products.hpp).
namespace polygrad::fixed_width {

/// Accumulator packets one micro tile keeps in registers: half the vector registers (AVX-512
/// has 32, AVX and SSE 16), leaving the rest for the operands.
template <class T>
inline constexpr Index accumulators = Index(sizeof(T)) * simd::width<T> >= 64 ? 16 : 8;

/// Packets along the lanes per micro tile of lane_products and add_transposed_products.
inline constexpr Index lane_packets = 4;

/// Scalars along the lanes per micro tile: the `lanes` of lane_products and
/// add_transposed_products must be a multiple of it (64 floats with AVX-512).
template <class T>
inline constexpr Index lane_block = Index(simd::width<T>) * lane_packets;

namespace detail {

/// acc[r][j] += sum_{s < steps} a[r ar + s as] b[s bs + j W]: sums of outer products of RH
/// scalars with lane_packets packets, each packet loaded once per step and shared by RH
/// multiply-adds. The micro kernel of lane_products and add_transposed_products.
template <class T, Index RH>
void add_outer_products(simd::Packet<T> (&acc)[RH][lane_packets], const T* a, Index ar, Index as,
                        const T* b, Index bs, Index steps) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>, QP = lane_packets;
  for (Index s = 0; s < steps; ++s) {
    P packets[QP];
    POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) {
      packets[j] = simd::load(b + s * bs + j * W);
      simd::keep_in_register(packets[j]);
    }
    POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
      const P scalar = simd::broadcast(a[r * ar + s * as]);
      POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) {
        acc[r][j] = simd::fma(scalar, packets[j], acc[r][j]);
      }
    }
  }
}

/// Rows [c, c + RH) x lanes [q0, q0 + lane_block) of lane_products.
template <class T, int D, Index RH, class Epilogue>
void lane_tile(const T* A, Index lda, Index c, const T* B, Index ldb, Index q0, T* Out, Index ldo,
               Epilogue& epilogue) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>, QP = lane_packets;
  P acc[RH][QP];
  POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
    POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) acc[r][j] = simd::zero<T>();
  }
  add_outer_products<T, RH>(acc, A + c * lda, lda, 1, B + q0, ldb, D);
  POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
    POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) {
      simd::store(Out + (c + r) * ldo + q0 + j * W, epilogue(c + r, q0 / W + j, acc[r][j]));
    }
  }
}

/// Rows [c, c + RH) of add_row_products.
template <class T, int D, Index RH>
void row_tile(const T* X, Index ldx, Index c, Index cols, const T* B, Index ldb, T* C, Index ldc) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>, DP = D / W;
  P acc[RH][DP];
  POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
    POLYGRAD_UNROLL for (Index j = 0; j < DP; ++j) acc[r][j] =
        simd::load(C + (c + r) * ldc + j * W);
  }
  for (Index q = 0; q < cols; ++q) {
    P b[DP];
    POLYGRAD_UNROLL for (Index j = 0; j < DP; ++j) {
      b[j] = simd::load(B + q * ldb + j * W);
      simd::keep_in_register(b[j]);
    }
    POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
      const P x = simd::broadcast(X[(c + r) * ldx + q]);
      POLYGRAD_UNROLL for (Index j = 0; j < DP; ++j) acc[r][j] = simd::fma(x, b[j], acc[r][j]);
    }
  }
  POLYGRAD_UNROLL for (Index r = 0; r < RH; ++r) {
    POLYGRAD_UNROLL for (Index j = 0; j < DP; ++j)
        simd::store(C + (c + r) * ldc + j * W, acc[r][j]);
  }
}

}  // namespace detail

/// Out(c, q) = epilogue(c, q / width, sum_t A(c, t) B(t, q)) for c < rows, q < lanes.
/// A: rows x D (row stride lda), B: D x lanes (ldb), Out: rows x lanes (ldo), lanes a multiple
/// of lane_block<T>. epilogue(c, packet index, sum) returns the packet to store; it may keep
/// other results of its own (a running maximum). It is called often: capture by value.
template <class T, int D, class Epilogue>
void lane_products(const T* A, Index lda, Index rows, const T* B, Index ldb, Index lanes, T* Out,
                   Index ldo, Epilogue epilogue) {
  constexpr Index R = accumulators<T> / lane_packets;  // rows of A per micro tile
  for (Index q0 = 0; q0 < lanes; q0 += lane_block<T>) {
    Index c = 0;
    for (; c + R <= rows; c += R)
      detail::lane_tile<T, D, R>(A, lda, c, B, ldb, q0, Out, ldo, epilogue);
    for (; c < rows; ++c) detail::lane_tile<T, D, 1>(A, lda, c, B, ldb, q0, Out, ldo, epilogue);
  }
}

/// C(t, q) += sum_c A(c, t) X(c, q) for t < D, q < lanes: a product whose result is held
/// transposed. A: rows x D (lda), X: rows x lanes (ldx), C: D x lanes (ldc), lanes a multiple
/// of lane_block<T>.
template <class T, int D>
void add_transposed_products(const T* A, Index lda, Index rows, const T* X, Index ldx, Index lanes,
                             T* C, Index ldc) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>, QP = lane_packets;
  constexpr Index TB = accumulators<T> / QP;  // columns of A per micro tile
  static_assert(D % TB == 0, "D must be a multiple of the micro tile's columns");
  for (Index q0 = 0; q0 < lanes; q0 += QP * W) {
    for (Index t0 = 0; t0 < D; t0 += TB) {
      P acc[TB][QP];
      POLYGRAD_UNROLL for (Index r = 0; r < TB; ++r) {
        POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) {
          acc[r][j] = simd::load(C + (t0 + r) * ldc + q0 + j * W);
        }
      }
      detail::add_outer_products<T, TB>(acc, A + t0, 1, lda, X + q0, ldx, rows);
      POLYGRAD_UNROLL for (Index r = 0; r < TB; ++r) {
        POLYGRAD_UNROLL for (Index j = 0; j < QP; ++j) {
          simd::store(C + (t0 + r) * ldc + q0 + j * W, acc[r][j]);
        }
      }
    }
  }
}

/// C(c, t) += sum_q X(c, q) B(q, t) for c < rows, t < D: rows of X times a row-major B, with
/// the packets along D. X: rows x cols (ldx), B: cols x D (ldb), C: rows x D (ldc); D a multiple
/// of the packet width.
template <class T, int D>
void add_row_products(const T* X, Index ldx, Index rows, Index cols, const T* B, Index ldb, T* C,
                      Index ldc) {
  constexpr Index DP = D / simd::width<T>;
  static_assert(D % simd::width<T> == 0, "D must be a multiple of the packet width");
  constexpr Index R = accumulators<T> / DP > 1 ? accumulators<T> / DP : 1;  // rows per micro tile
  Index c = 0;
  for (; c + R <= rows; c += R) detail::row_tile<T, D, R>(X, ldx, c, cols, B, ldb, C, ldc);
  for (; c < rows; ++c) detail::row_tile<T, D, 1>(X, ldx, c, cols, B, ldb, C, ldc);
}

}  // namespace polygrad::fixed_width

#undef POLYGRAD_UNROLL
