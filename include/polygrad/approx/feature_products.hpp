#pragma once
// Products of feature-major monomial blocks (monomial_block.hpp) with small dense matrices,
// written as register-blocked loops over strips of rows.
//
// A chunk's block M is k x C with k in the thousands and C a few dozen, and it meets matrices
// with only d_h + 1 (or d_h^2 + 2 d_h) columns. A general GEMM spends as long packing M as
// multiplying with it; these loops read M once, straight from where build() left it, and keep
// a strip of W rows times G columns of the result in registers while they sweep the features.

#include <algorithm>
#include <type_traits>

#include "polygrad/core/types.hpp"

namespace polygrad {

namespace detail {

/// Rows per strip: one 64-byte vector of T.
template <class T>
inline constexpr Index strip_width = Index(64 / sizeof(T));

/// Out(r0 : r0 + W, j0 : j0 + G) = sum_f M(f, r0 : r0 + W)^T S(f, j0 : j0 + G), W = strip width.
template <class T, int G>
void strip_times_state(const T* M, Index k, Index C, Index r0, const T* S, Index m, Index j0,
                       T* out) {
  constexpr Index W = strip_width<T>;
  using Strip = Eigen::Array<T, W, 1>;
  Strip acc[G];
  for (int j = 0; j < G; ++j) acc[j].setZero();
  for (Index f = 0; f < k; ++f) {
    const Strip x = Eigen::Map<const Strip>(M + f * C + r0);
    const T* s = S + f * m + j0;
    for (int j = 0; j < G; ++j) acc[j] += x * s[j];
  }
  for (int j = 0; j < G; ++j)
    for (Index r = 0; r < W; ++r) out[(r0 + r) * m + j0 + j] = acc[j][r];
}

/// dM(f, r0 : r0 + W) (+)= sum_j S(f, j0 + j) Y(r0 : r0 + W, j0 + j) over j < G.
template <class T, int G>
void state_times_strip(const T* S, Index k, Index m, Index j0, const T* YT, Index C, Index r0,
                       T* dM, bool accumulate) {
  constexpr Index W = strip_width<T>;
  using Strip = Eigen::Array<T, W, 1>;
  Strip y[G];
  for (int j = 0; j < G; ++j) y[j] = Eigen::Map<const Strip>(YT + (j0 + j) * C + r0);
  for (Index f = 0; f < k; ++f) {
    const T* s = S + f * m + j0;
    Strip acc = accumulate ? Strip(Eigen::Map<const Strip>(dM + f * C + r0)) : Strip::Zero();
    for (int j = 0; j < G; ++j) acc += y[j] * s[j];
    Eigen::Map<Strip>(dM + f * C + r0) = acc;
  }
}

/// Calls body(std::integral_constant<int, G>) for column groups of at most 12 that cover m.
template <class Body>
void for_column_groups(Index m, Body&& body) {
  constexpr Index most = 12;
  const Index groups = (m + most - 1) / most;
  Index j0 = 0;
  for (Index g = 0; g < groups; ++g) {
    const Index width = (m - j0) / (groups - g);  // balanced group widths
    switch (width) {
#define POLYGRAD_GROUP(G) \
  case G:                 \
    body(j0, std::integral_constant<int, G>{}); \
    break;
      POLYGRAD_GROUP(1) POLYGRAD_GROUP(2) POLYGRAD_GROUP(3) POLYGRAD_GROUP(4)
      POLYGRAD_GROUP(5) POLYGRAD_GROUP(6) POLYGRAD_GROUP(7) POLYGRAD_GROUP(8)
      POLYGRAD_GROUP(9) POLYGRAD_GROUP(10) POLYGRAD_GROUP(11) POLYGRAD_GROUP(12)
#undef POLYGRAD_GROUP
      default: break;  // unreachable: 1 <= width <= 12
    }
    j0 += width;
  }
}

}  // namespace detail

/// Out (C x m) = M^T S for a feature-major block M (k x C) and a state S (k x m).
template <class T>
void monomials_transpose_times(const Matrix<T>& M, const Matrix<T>& S, Matrix<T>& out) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  const Index k = M.rows(), C = M.cols(), m = S.cols();
  constexpr Index W = detail::strip_width<T>;
  out.resize(C, m);
  const Index full = C - C % W;
  for (Index r0 = 0; r0 < full; r0 += W) {
    detail::for_column_groups(m, [&](Index j0, auto G) {
      detail::strip_times_state<T, decltype(G)::value>(M.data(), k, C, r0, S.data(), m, j0,
                                                       out.data());
    });
  }
  if (full < C) out.bottomRows(C - full).noalias() = M.rightCols(C - full).transpose() * S;
}

/// dM (k x C) = S Y^T for a state S (k x m) and rows Y (C x m).
template <class T>
void state_times_rows_transpose(const Matrix<T>& S, const Eigen::Ref<const Matrix<T>>& Y,
                                Matrix<T>& dM) {
  const Index k = S.rows(), m = S.cols(), C = Y.rows();
  constexpr Index W = detail::strip_width<T>;
  dM.resize(k, C);
  const Matrix<T> YT = Y.transpose();  // (m, C)
  const Index full = C - C % W;
  for (Index r0 = 0; r0 < full; r0 += W) {
    bool first = true;
    detail::for_column_groups(m, [&](Index j0, auto G) {
      detail::state_times_strip<T, decltype(G)::value>(S.data(), k, m, j0, YT.data(), C, r0,
                                                       dM.data(), !first);
      first = false;
    });
  }
  if (full < C) dM.rightCols(C - full).noalias() = S * Y.bottomRows(C - full).transpose();
}

}  // namespace polygrad
