#pragma once
// Products of a block's monomials M (k x C, Monomials of monomial_block.hpp) with the small
// dense matrices of the routes, as register-blocked loops over one strip of W rows.
//
// k is in the thousands, C a few dozen, and the other side has only m = d_h + 1 (or about d_h^2)
// columns, so a general GEMM spends as long packing M as multiplying with it. These loops read
// M once, where build() left it, and keep a W x G block of the result in registers (G <= 12
// columns at a time) while they sweep the features. States are stored transposed, (m x k), so
// that every column of a state is contiguous.
//
//   monomials_transpose_times   out = M^T S    (C x m)  rows reading a state
//   state_times_rows_transpose  dM  = S Y^T    (k x C)  the gradient reaching the monomials
//   add_state_gradient          dX += (d/dX) sum (S Y^T) o M, without storing S Y^T
//   add_monomial_products       S  += M X      (k x m)  a chunk entering a state (or S = M X)

#include <algorithm>
#include <type_traits>

#include "polygrad/approx/monomial_block.hpp"
#include "polygrad/core/error.hpp"

namespace polygrad {

/// Scratch buffers of the products below, kept by the caller (one per thread), so that the
/// calls made for every strip of every chunk do not allocate.
template <class T>
struct ProductScratch {
  Matrix<T> YT;          ///< (m, padded C): rows transposed
  StripMatrix<T> dM;     ///< (k, C): S Y^T, when it is stored (m > 12)
  Matrix<T> transposed;  ///< (strips k, W): a block's tiles transposed (m > 12)
};

namespace detail {

/// Calls body(j0, std::integral_constant<int, G>) for groups of at most 12 columns covering m.
template <class Body>
void for_column_groups(Index m, Body&& body) {
  constexpr Index most = 12;
  const Index groups = (m + most - 1) / most;
  Index j0 = 0;
  for (Index g = 0; g < groups; ++g) {
    const Index width = (m - j0) / (groups - g);  // balanced group widths
    switch (width) {
      // One case per column count, laid out by hand (clang-format cannot lay out these macros).
      // clang-format off
#define POLYGRAD_GROUP(G) \
  case G:                 \
    body(j0, std::integral_constant<int, G>{}); \
    break;
      POLYGRAD_GROUP(1) POLYGRAD_GROUP(2) POLYGRAD_GROUP(3) POLYGRAD_GROUP(4)
      POLYGRAD_GROUP(5) POLYGRAD_GROUP(6) POLYGRAD_GROUP(7) POLYGRAD_GROUP(8)
      POLYGRAD_GROUP(9) POLYGRAD_GROUP(10) POLYGRAD_GROUP(11) POLYGRAD_GROUP(12)
#undef POLYGRAD_GROUP
      default: break;  // unreachable: 1 <= width <= 12
      // clang-format on
    }
    j0 += width;
  }
}

/// out(s W + r, j0 + j) = sum_f M(f, s W + r) ST(j0 + j, f) for the W rows of strip s, j < G.
/// ST is (m x k) with row stride k; out is row-major with m columns.
template <class T, int G>
void strip_times_state(const Monomials<T>& M, Index s, const T* ST, Index j0, Index m, T* out) {
  constexpr Index W = simd::width<T>;
  const Index k = M.size();
  simd::Packet<T> acc[G];
  const T* state[G];
  for (int j = 0; j < G; ++j) {
    acc[j] = simd::zero<T>();
    state[j] = ST + (j0 + j) * k;
  }
  auto add = [&](Index f, const simd::Packet<T>& x) {
    for (int j = 0; j < G; ++j) acc[j] = simd::fma(x, simd::broadcast(state[j][f]), acc[j]);
  };
  const T* stored = M.strip(s);
  for (Index f = 0; f < M.stored(); ++f) add(f, simd::load(stored + f * W));
  for (Index f = M.stored(); f < k; ++f) add(f, M.leaf(s, f));
  alignas(64) T lanes[W];
  for (int j = 0; j < G; ++j) {
    simd::store(lanes, acc[j]);
    for (Index r = 0; r < W; ++r) out[(s * W + r) * m + j0 + j] = lanes[r];
  }
}

/// strip(f, r) (+)= sum_{j < G} ST(j0 + j, f) YT(j0 + j, r0 + r) for the W rows of one strip.
/// YT is (m x padded C) with row stride C.
template <class T, int G>
void state_times_strip(const T* ST, Index k, Index j0, const T* YT, Index C, Index r0, T* strip,
                       bool accumulate) {
  constexpr Index W = simd::width<T>;
  simd::Packet<T> y[G];
  const T* s[G];
  for (int j = 0; j < G; ++j) {
    y[j] = simd::load(YT + (j0 + j) * C + r0);
    s[j] = ST + (j0 + j) * k;
  }
  for (Index f = 0; f < k; ++f) {
    auto acc = accumulate ? simd::load(strip + f * W) : simd::zero<T>();
    for (int j = 0; j < G; ++j) acc = simd::fma(y[j], simd::broadcast(s[j][f]), acc);
    simd::store(strip + f * W, acc);
  }
}

}  // namespace detail

/// out (padded C x m) = M^T S for monomials M (k x C) and a state S given as ST (m x k); out's
/// storage is reused when it has the size already.
template <class T>
void monomials_transpose_times(const Monomials<T>& M, const Matrix<T>& ST, Matrix<T>& out) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  constexpr Index W = simd::width<T>;
  const Index m = ST.rows();
  require_shape(ST, m, M.size(), "transposed state");
  out.resize(M.strips() * W, m);
  for (Index s = 0; s < M.strips(); ++s) {
    detail::for_column_groups(m, [&](Index j0, auto G) {
      detail::strip_times_state<T, decltype(G)::value>(M, s, ST.data(), j0, m, out.data());
    });
  }
}

/// dM (k x C) = S Y^T for a state S given as ST (m x k) and rows Y (padded C x m); YT is
/// scratch.
template <class T>
void state_times_rows_transpose(const Matrix<T>& ST, const ConstMatrixRef<T>& Y, StripMatrix<T>& dM,
                                Matrix<T>& YT) {
  constexpr Index W = simd::width<T>;
  const Index k = ST.cols(), m = ST.rows(), C = Y.rows();
  require<ShapeError>(C % W == 0 && Y.cols() == m, "state_times_rows_transpose: rows are ",
                      Y.rows(), " x ", Y.cols(), ", expected a multiple of ", W, " x ", m);
  dM.resize(k, C);
  YT = Y.transpose();  // (m, C)
  for (Index s = 0; s < dM.strips(); ++s) {
    bool first = true;
    detail::for_column_groups(m, [&](Index j0, auto G) {
      detail::state_times_strip<T, decltype(G)::value>(ST.data(), k, j0, YT.data(), C, s * W,
                                                       dM.strip(s), !first);
      first = false;
    });
  }
}

namespace detail {

/// The monomials' gradient (S Y^T)(f, r) = sum_{j < G} ST(j, f) Y(r, j), computed on demand for
/// MonomialBlock::backward. YT: (G x padded C).
template <class T, int G>
class StateTimesRows {
 public:
  static constexpr int columns = G;
  StateTimesRows(const Matrix<T>& ST, const Matrix<T>& YT) : YT_(YT) {
    for (int j = 0; j < G; ++j) s_[j] = ST.data() + j * ST.cols();
  }
  void begin_strip(Index s) {
    for (int j = 0; j < G; ++j)
      y_[j] = simd::load(YT_.data() + j * YT_.cols() + s * simd::width<T>);
  }
  simd::Packet<T> operator()(Index f) const {
    auto acc = simd::mul(y_[0], simd::broadcast(s_[0][f]));
    for (int j = 1; j < G; ++j) acc = simd::fma(y_[j], simd::broadcast(s_[j][f]), acc);
    return acc;
  }

 private:
  const Matrix<T>& YT_;
  const T* s_[G];
  simd::Packet<T> y_[G];
};

/// A monomial gradient already stored in a StripMatrix, for MonomialBlock::backward.
template <class T>
class StoredGradient {
 public:
  static constexpr int columns = 0;  // not known at compile time
  explicit StoredGradient(const StripMatrix<T>& G) : G_(G) {}
  void begin_strip(Index s) { strip_ = G_.strip(s); }
  simd::Packet<T> operator()(Index f) const { return simd::load(strip_ + f * simd::width<T>); }

 private:
  const StripMatrix<T>& G_;
  const T* strip_ = nullptr;
};

}  // namespace detail

/// dX (C x d) += the gradient, with respect to the rows X, of sum_{f,r} (S Y^T)(f, r) M(f, r),
/// for the block M = block.build(X) and a state S given as ST (m x k) and rows Y (padded C x m):
/// the gradient reaching X through its monomials when they meet a state. For m <= 12 the
/// product S Y^T is formed feature by feature inside the backward sweep and never stored.
template <class T>
void add_state_gradient(MonomialBlock<T>& block, const ConstMatrixRef<detail::non_deduced_t<T>>& X,
                        const Monomials<T>& M, const Matrix<T>& ST,
                        const ConstMatrixRef<detail::non_deduced_t<T>>& Y,
                        MatrixRef<detail::non_deduced_t<T>> dX, ProductScratch<T>& scratch) {
  const Index m = ST.rows();
  require<ShapeError>(Y.rows() == M.strips() * simd::width<T> && Y.cols() == m,
                      "add_state_gradient: rows are ", Y.rows(), " x ", Y.cols(), ", expected ",
                      M.strips() * simd::width<T>, " x ", m);
  if (m > 12) {
    state_times_rows_transpose(ST, Y, scratch.dM, scratch.YT);
    block.backward(X, M, detail::StoredGradient<T>(scratch.dM), dX);
    return;
  }
  scratch.YT = Y.transpose();  // (m, padded C)
  detail::for_column_groups(m, [&](Index, auto G) {
    block.backward(X, M, detail::StateTimesRows<T, decltype(G)::value>(ST, scratch.YT), dX);
  });
}

namespace detail {

/// ST(j0 + j, f0 : f0 + W) (+)= sum_r tile(r) X(r, j0 + j) over the rows r of a block, j < G,
/// for each feature tile f0, given the tiles transposed (W features per packet) by
/// `transposed_tile`. Row r of X starts at X + r * stride.
template <class T, int G, class TransposedTile>
void add_tile_products(Index k, Index strips, const T* X, Index stride, Index j0, T* ST,
                       bool accumulate, TransposedTile&& transposed_tile) {
  constexpr Index W = simd::width<T>;
  for (Index f0 = 0; f0 < k; f0 += W) {
    simd::Packet<T> acc[G];
    for (int j = 0; j < G; ++j)
      acc[j] = accumulate ? simd::load(ST + (j0 + j) * k + f0) : simd::zero<T>();
    for (Index s = 0; s < strips; ++s) {
      const simd::Tile<T> tile = transposed_tile(f0, s);
      const T* rows = X + s * W * stride + j0;
      for (Index r = 0; r < W; ++r)
        for (int j = 0; j < G; ++j)
          acc[j] = simd::fma(tile.rows.packet[r], simd::broadcast(rows[r * stride + j]), acc[j]);
    }
    for (int j = 0; j < G; ++j) simd::store(ST + (j0 + j) * k + f0, acc[j]);
  }
}

}  // namespace detail

/// How a product meets what its destination held.
enum class Update {
  add,     ///< destination += product
  assign,  ///< destination = product (what it held is never read)
};

/// ST (m x padded k) += (M X)^T for monomials M (k x C) and rows X (padded C x m; the padding
/// rows must be zero), or ST = (M X)^T with Update::assign; k is padded to whole packets, and
/// ST's columns past k stay zero. Each W x W tile of M is transposed in registers, so that the
/// sum over the block's rows runs with W features per packet. `scratch` holds the transposed
/// tiles when m > 12.
template <class T>
void add_monomial_products(const Monomials<T>& M, const ConstMatrixRef<detail::non_deduced_t<T>>& X,
                           Matrix<T>& ST, ProductScratch<T>& scratch, Update update = Update::add) {
  constexpr Index W = simd::width<T>;
  const Index k = padded_rows<T>(M.size()), m = X.cols(), strips = M.strips();
  require_shape(X, strips * W, m, "rows entering a state");
  require_shape(ST, m, k, "transposed state");
  const bool accumulate = update == Update::add;
  auto transpose = [&](Index f0, Index s) {
    simd::Tile<T> tile;
    if (f0 + W <= M.stored()) {
      tile.load(M.strip(s) + f0 * W, W);
    } else if (f0 >= M.stored() && f0 + W <= M.size()) {
      for (Index i = 0; i < W; ++i) tile.rows.packet[i] = M.leaf(s, f0 + i);
    } else {
      for (Index i = 0; i < W; ++i) tile.rows.packet[i] = M.packet(s, f0 + i);
    }
    tile.transpose();
    return tile;
  };
  if (m <= 12) {  // one column group: transpose each tile as it is used
    detail::for_column_groups(m, [&](Index j0, auto G) {
      detail::add_tile_products<T, decltype(G)::value>(k, strips, X.data(), X.outerStride(), j0,
                                                       ST.data(), accumulate, transpose);
    });
    return;
  }
  // Several groups: transpose the whole block once. (strips * k, W): tile (f0, s) at row
  // (s * k + f0), its row r holding features f0..f0+W-1 of block row s W + r.
  Matrix<T>& transposed = scratch.transposed;
  transposed.resize(strips * k, W);
  for (Index s = 0; s < strips; ++s) {
    for (Index f0 = 0; f0 < k; f0 += W) {
      const simd::Tile<T> tile = transpose(f0, s);
      for (Index r = 0; r < W; ++r)
        simd::store(transposed.data() + (s * k + f0 + r) * W, tile.rows.packet[r]);
    }
  }
  auto stored = [&](Index f0, Index s) {
    simd::Tile<T> tile;
    tile.load(transposed.data() + (s * k + f0) * W, W);
    return tile;
  };
  detail::for_column_groups(m, [&](Index j0, auto G) {
    detail::add_tile_products<T, decltype(G)::value>(k, strips, X.data(), X.outerStride(), j0,
                                                     ST.data(), accumulate, stored);
  });
}

}  // namespace polygrad
