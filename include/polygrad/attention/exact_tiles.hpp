#pragma once
// What the tiled kernels of exact attention (exact_kernels.hpp, exact_fixed_width.hpp) share:
// the tile sizes, what every tile of a pass needs, and the rows one call runs.

#include "polygrad/attention/method.hpp"

namespace polygrad {

namespace exact {

/// Tile sizes of the exact kernels: B_q query rows meet B_k key rows per tile. At 64 x 64 the two
/// tile buffers (16 KiB each in float) stay in L1/L2; 96 to 192 measured no faster at d_h = 16.
struct Tiles {
  Index query = 64;  ///< B_q
  Index key = 64;    ///< B_k
};

/// The helpers of the exact kernels (exact_kernels.hpp, exact_fixed_width.hpp) and of ring
/// attention (exact_ring.hpp).
namespace detail {

using namespace polygrad::detail;  // the library's shared helpers, unqualified as elsewhere

/// What every tile of a pass shares: the scale c in S = c Q K^T, the causal mask and the tiles.
template <class T>
struct Pass {
  T scale;
  bool causal;
  Tiles tiles;
};

/// The tile rows of a pass that one call runs: first, first + stride, ... Calls with one stride
/// and different firsts share a pass between threads.
struct Share {
  Index first = 0, stride = 1;
};

/// A pass over H heads (columns [h d_h, (h + 1) d_h) of n x H d_h matrices) and the threads it
/// may use.
template <class T>
struct HeadsPass {
  Index heads;
  Pass<T> pass;
  Threading threading;
};

/// The gradients a backward call assigns: dQ (or a sum of its parts), dK, dV.
template <class T>
struct Gradients {
  MatrixRef<T> dQ, dK, dV;
};

}  // namespace detail

}  // namespace exact

}  // namespace polygrad
