#pragma once
// The handful of SIMD operations the feature kernels (approx/feature_products.hpp), the GELU
// kernel (layers/gelu.hpp) and the fixed-width products of exact attention
// (detail/fixed_width_products.hpp) are written in, on Eigen's packet of T: one AVX-512, AVX or
// SSE register (or NEON), or a plain scalar when Eigen does not vectorise. Eigen::internal's packet functions are not documented API; they are
// what Eigen's own kernels are written in, stable across 3.4, and named only in this file.

#include "polygrad/core/types.hpp"  // Eigen, first: see the note on -Wuninitialized there

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/// The SIMD operations of the feature, GELU and fixed-width attention kernels, on Eigen's
/// packets.
namespace polygrad::simd {

/// Eigen's packet of T: one AVX-512, AVX, SSE or NEON register, or T itself when Eigen does
/// not vectorise.
template <class T>
using Packet = typename Eigen::internal::packet_traits<T>::type;

/// Scalars per packet.
template <class T>
inline constexpr Index width = Eigen::internal::unpacket_traits<Packet<T>>::size;

/// The width<T> scalars at p, which need no alignment.
template <class T>
Packet<T> load(const T* p) {
  return Eigen::internal::ploadu<Packet<T>>(p);
}

/// Writes the lanes of x to p[0, width<T>), which needs no alignment.
template <class T>
void store(T* p, const Packet<T>& x) {
  Eigen::internal::pstoreu(p, x);
}

/// x in every lane.
template <class T>
Packet<T> broadcast(T x) {
  return Eigen::internal::pset1<Packet<T>>(x);
}

/// 0 in every lane.
template <class T>
Packet<T> zero() {
  return broadcast(T(0));
}

/// a * b + c.
template <class P>
P fma(const P& a, const P& b, const P& c) {
  return Eigen::internal::pmadd(a, b, c);
}

/// a + b, lane by lane.
template <class P>
P add(const P& a, const P& b) {
  return Eigen::internal::padd(a, b);
}

/// a * b, lane by lane.
template <class P>
P mul(const P& a, const P& b) {
  return Eigen::internal::pmul(a, b);
}

/// a / b, lane by lane.
template <class P>
P div(const P& a, const P& b) {
  return Eigen::internal::pdiv(a, b);
}

/// a - b, lane by lane.
template <class P>
P sub(const P& a, const P& b) {
  return Eigen::internal::psub(a, b);
}

/// max(a, b), lane by lane.
template <class P>
P max(const P& a, const P& b) {
  return Eigen::internal::pmax(a, b);
}

/// first, first + 1, ..., first + width<T> - 1.
template <class T>
Packet<T> ramp(T first) {
  return Eigen::internal::plset<Packet<T>>(first);
}

/// A mask with the lanes where a <= b set, for select().
template <class P>
P less_equal(const P& a, const P& b) {
  return Eigen::internal::pcmp_le(a, b);
}

/// The lanes of `if_set` where `mask` (from less_equal) is set, those of `otherwise` elsewhere.
template <class P>
P select(const P& mask, const P& if_set, const P& otherwise) {
  return Eigen::internal::pselect(mask, if_set, otherwise);
}

/// Makes the compiler hold x in a register from here on. Without it GCC folds a packet that
/// several multiply-adds share into each of them as a memory operand, loading it once per use:
/// exact attention's tile products (detail/fixed_width_products.hpp) at D = 16 ran 1.27x
/// faster with it, bound by loads before.
template <class P>
void keep_in_register(P& x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(x));
#else
  (void)x;
#endif
}

/// |x|, lane by lane.
template <class P>
P abs(const P& x) {
  return Eigen::internal::pabs(x);
}

/// e^x, lane by lane (Eigen's vectorised exp).
template <class P>
P exp(const P& x) {
  return Eigen::internal::pexp(x);
}

/// The lanes of `if_negative` where x < 0, those of `otherwise` elsewhere.
template <class P>
P select_negative(const P& x, const P& if_negative, const P& otherwise) {
  using namespace Eigen::internal;
  return pselect(pcmp_lt(x, pset1<P>(typename unpacket_traits<P>::type(0))), if_negative,
                 otherwise);
}

// PacketBlock<__m512, ...> drops the vector type's alignment attribute as a template argument,
// which GCC reports; Eigen's kernels use the same blocks, and the attribute does not matter here.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

/// A width x width tile of T held in `width` packets (rows), transposed in registers.
template <class T>
struct Tile {
  /// The tile's rows, rows.packet[i] being row i.
  Eigen::internal::PacketBlock<Packet<T>, width<T>> rows;

  /// Rows i of the tile from p + i * stride.
  void load(const T* p, Index stride) {
    for (Index i = 0; i < width<T>; ++i) rows.packet[i] = simd::load(p + i * stride);
  }
  /// Transposes the tile in place: row i becomes column i.
  void transpose() { Eigen::internal::ptranspose(rows); }
};

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#if defined(__AVX512F__)
/// 16 x 16 floats in the minimum of 64 two-input shuffles (Eigen's generic version takes about
/// twice as many): pairs of rows, then quads within 128-bit lanes, then the 4 x 4 lanes.
template <>
inline void Tile<float>::transpose() {
  __m512* r = rows.packet;
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[4i + c], lane L: rows 4i..4i+3 of column 4L + c.
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
    const __m512 x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}
#endif

}  // namespace polygrad::simd
