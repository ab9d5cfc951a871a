#pragma once
// Exact attention's forward and backward tiles for a head width D fixed at compile time: the
// same passes as exact_kernels.hpp (design.md section 2), with the tile products register-tiled
// (detail/fixed_width_products.hpp) and the softmax steps fused into them. forward_blocks and
// backward_blocks (exact_kernels.hpp) run these where fixed_width_applies() and the general
// kernels, on Eigen's products, everywhere else; tests/attention/test_exact_fixed_width.cpp
// compares the two.
//
// Layout: queries run along the SIMD lanes. A query block's scaled queries c Q_i^T (D x B_q) and,
// in the backward pass, dO^T are held transposed, so that a tile of scores S^T (B_k x B_q: a
// row per key) is B_k rows of packets, its row maximum and sum are lane-wise, and the causal
// mask is a lane comparison. A partial last query block is padded with zero queries, whose
// lanes are computed and never stored.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "polygrad/attention/exact_tiles.hpp"
#include "polygrad/detail/fixed_width_products.hpp"
#include "polygrad/detail/simd.hpp"

namespace polygrad::exact::detail {

/// Whether the fixed-width kernels run heads of width d with these tiles: d is 8, 16, 32 or 64
/// and a multiple of the SIMD packet (16, 32, 64 in float on AVX-512; 8 to 64 in double), and
/// B_q and B_k multiples of the products' lane block (64 floats on AVX-512). A decoding step
/// (B_q = 1) and other widths run the general kernels.
template <class T>
bool fixed_width_applies(Index d, const Tiles& tiles) {
  constexpr Index W = simd::width<T>;
  const bool width_has_kernel = d == 8 || d == 16 || d == 32 || d == 64;
  return W > 1 && width_has_kernel && d % W == 0 && tiles.query % fixed_width::lane_block<T> == 0 &&
         tiles.key % fixed_width::lane_block<T> == 0;
}

/// Calls run(std::integral_constant<int, D>) with D = d; d as fixed_width_applies() accepted.
template <class T, class Run>
void with_fixed_width(Index d, Run&& run) {
  constexpr Index W = simd::width<T>;
  const auto call = [&](auto width) {
    if constexpr (decltype(width)::value % W == 0) run(width);
  };
  switch (d) {
    case 8: return call(std::integral_constant<int, 8>{});
    case 16: return call(std::integral_constant<int, 16>{});
    case 32: return call(std::integral_constant<int, 32>{});
    case 64: return call(std::integral_constant<int, 64>{});
    default: break;
  }
}

/// The causal mask of a tile as a lane mask: the query lanes of packet p (queries i0 + p W ..)
/// that key j0 + c sees, given key_offset = j0 + c - i0. Offsets are small integers, exact in T.
template <class T>
simd::Packet<T> visible_lanes(Index key_offset, Index packet) {
  return simd::less_equal(simd::broadcast(T(key_offset)), simd::ramp(T(packet * simd::width<T>)));
}

/// Forward pass of forward_blocks (exact_kernels.hpp) for heads of width D: the same arguments,
/// results and sharing between calls.
template <class T, int D>
void forward_blocks_fixed(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                          const Pass<T>& pass, Share share, MatrixRef<T> O, VectorRef<T> lse) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  const bool causal = pass.causal;
  const Index n = Q.rows(), m_keys = K.rows();
  const Index Bq = pass.tiles.query, Bk = std::min(pass.tiles.key, m_keys);
  const Index blocks = (n + Bq - 1) / Bq, packets = Bq / W;
  const Index ldk = K.outerStride(), ldv = V.outerStride();
  std::vector<T> qt(std::size_t(D * Bq));    // (D, B_q) c Q_i^T, zero past the last query row
  std::vector<T> st(std::size_t(Bk * Bq));   // (B_k, B_q) S^T, then unnormalised probabilities
  std::vector<T> acct(std::size_t(D * Bq));  // (D, B_q) sum_j exp(c S_ij - m_i) v_j, transposed
  const std::size_t lanes = std::size_t(Bq);
  std::vector<T> m(lanes), z(lanes), tile_max(lanes);  // per query: running max, sum; tile max

  for (Index b = share.first; b < blocks; b += share.stride) {
    const Index i0 = b * Bq, bq = std::min(Bq, n - i0);
    for (Index t = 0; t < D; ++t)
      for (Index q = 0; q < Bq; ++q)
        qt[std::size_t(t * Bq + q)] = q < bq ? pass.scale * Q(i0 + q, t) : T(0);
    std::fill(acct.begin(), acct.end(), T(0));
    const Index key_end = causal ? i0 + bq : m_keys;
    for (Index j0 = 0; j0 < key_end; j0 += Bk) {
      const Index bk = std::min(Bk, key_end - j0);
      const bool diagonal = causal && j0 + bk - 1 > i0;
      // Scores and their maximum per query; hidden scores are -inf, kept out of the maximum.
      // The epilogues capture by value: pointers reached through a captured reference were
      // reloaded for every packet (objdump).
      std::fill(tile_max.begin(), tile_max.end(), minus_inf);
      T* const tile_max_p = tile_max.data();
      const Index key_offset = j0 - i0;
      const auto scores = [=](Index c, Index p, P s) {
        if (diagonal)
          s = simd::select(visible_lanes<T>(key_offset + c, p), s, simd::broadcast(minus_inf));
        T* mp = tile_max_p + p * W;
        simd::store(mp, simd::max(simd::load(mp), s));
        return s;
      };
      fixed_width::lane_products<T, D>(K.data() + j0 * ldk, ldk, bk, qt.data(), Bq, Bq, st.data(),
                                       Bq, scores);
      // Every query sees key 0, so after the first tile m is finite; the rescaling factor
      // exp(m_old - m_new) is 1 where this tile hides all keys from a query.
      for (Index p = 0; p < packets; ++p) {
        T* mp = m.data() + p * W;
        T* zp = z.data() + p * W;
        const P tile_p = simd::load(tile_max.data() + p * W);
        if (j0 == 0) {
          simd::store(mp, tile_p);
          simd::store(zp, simd::zero<T>());
          continue;
        }
        const P m_new = simd::max(simd::load(mp), tile_p);
        const P alpha = simd::exp(simd::sub(simd::load(mp), m_new));
        simd::store(mp, m_new);
        simd::store(zp, simd::mul(simd::load(zp), alpha));
        for (Index t = 0; t < D; ++t) {
          T* ap = acct.data() + t * Bq + p * W;
          simd::store(ap, simd::mul(simd::load(ap), alpha));
        }
      }
      // exp(c S_ij - m_i), zero where hidden (Eigen's vectorised exp(-inf) is not 0), summed;
      // a column of packets at a time, with its maximum and sum in registers.
      for (Index p = 0; p < packets; ++p) {
        const P m_p = simd::load(m.data() + p * W);
        P z_p = simd::load(z.data() + p * W);
        for (Index c = 0; c < bk; ++c) {
          T* sp = st.data() + c * Bq + p * W;
          P e = simd::exp(simd::sub(simd::load(sp), m_p));
          if (diagonal) e = simd::select(visible_lanes<T>(key_offset + c, p), e, simd::zero<T>());
          simd::store(sp, e);
          z_p = simd::add(z_p, e);
        }
        simd::store(z.data() + p * W, z_p);
      }
      fixed_width::add_transposed_products<T, D>(V.data() + j0 * ldv, ldv, bk, st.data(), Bq, Bq,
                                                 acct.data(), Bq);
    }
    for (Index q = 0; q < bq; ++q) {
      const T zq = z[std::size_t(q)];
      for (Index t = 0; t < D; ++t) O(i0 + q, t) = acct[std::size_t(t * Bq + q)] / zq;
      lse[i0 + q] = m[std::size_t(q)] + std::log(zq);
    }
  }
}

/// Backward pass of backward_blocks (exact_kernels.hpp) for heads of width D: the same
/// arguments, results and sharing between calls. Here keys run along the lanes: a key block's
/// c K_j^T and V_j^T (D x B_k, zero past its last key) are copied once, a tile of P or dS is a
/// row per query, and the query rows of Q and dO are read in place. Then dV^T and dK^T, with the
/// sum over queries, are products whose every operand packet serves four multiply-adds; only dQ
/// sums over the lanes' keys (as in the forward pass, where queries run along the lanes, PV).
template <class T, int D>
void backward_blocks_fixed(ConstMatrixRef<T> Q, ConstMatrixRef<T> K, ConstMatrixRef<T> V,
                           ConstMatrixRef<T> dO, ConstVectorRef<T> lse, ConstVectorRef<T> delta,
                           const Pass<T>& pass, Share share, Gradients<T> out) {
  using P = simd::Packet<T>;
  constexpr Index W = simd::width<T>;
  const bool causal = pass.causal;
  const Index n = Q.rows(), m_keys = K.rows();
  const Index Bq = pass.tiles.query, Bk = pass.tiles.key;
  const Index key_blocks = (m_keys + Bk - 1) / Bk;
  const Index ldq = Q.outerStride(), ldk = K.outerStride(), ldo = dO.outerStride();
  const Index ld_dq = out.dQ.outerStride();
  const std::size_t tile = std::size_t(Bk * Bq), transposed = std::size_t(D * Bk);
  std::vector<T> kt(transposed), vt(transposed);    // (D, B_k) c K_j^T, V_j^T
  std::vector<T> dkt(transposed), dvt(transposed);  // (D, B_k) dK_j^T / c, dV_j^T
  std::vector<T> p_tile(tile), ds_tile(tile);       // (B_q, B_k) P, then dS

  for (Index b = share.first; b < key_blocks; b += share.stride) {
    const Index j0 = b * Bk, bk = std::min(Bk, m_keys - j0);
    for (Index t = 0; t < D; ++t) {
      for (Index c = 0; c < Bk; ++c) {
        kt[std::size_t(t * Bk + c)] = c < bk ? pass.scale * K(j0 + c, t) : T(0);
        vt[std::size_t(t * Bk + c)] = c < bk ? V(j0 + c, t) : T(0);
      }
    }
    std::fill(dkt.begin(), dkt.end(), T(0));
    std::fill(dvt.begin(), dvt.end(), T(0));
    for (Index i0 = causal ? j0 / Bq * Bq : 0; i0 < n; i0 += Bq) {
      const Index bq = std::min(Bq, n - i0);
      const bool diagonal = causal && j0 + bk - 1 > i0;
      const T* const Qi = Q.data() + i0 * ldq;
      const T* const dOi = dO.data() + i0 * ldo;
      // The epilogues capture by value, as in forward_blocks_fixed.
      const T* const lse_i = lse.data() + i0;
      const T* const delta_i = delta.data() + i0;
      const T* const p_data = p_tile.data();
      const Index key_offset = j0 - i0;
      // P_ij = exp(c S_ij - lse_i), zero where hidden: query i0 + r sees the lanes whose key
      // offset from i0 is at most r. Padded keys get some P, which no product below reads.
      const auto probabilities = [=](Index r, Index p, P s) {
        P e = simd::exp(simd::sub(s, simd::broadcast(lse_i[r])));
        if (diagonal) {
          const P visible =
              simd::less_equal(simd::ramp(T(key_offset + p * W)), simd::broadcast(T(r)));
          e = simd::select(visible, e, simd::zero<T>());
        }
        return e;
      };
      fixed_width::lane_products<T, D>(Qi, ldq, bq, kt.data(), Bk, Bk, p_tile.data(), Bk,
                                       probabilities);
      // dS = P o (dP - delta 1^T) with dP = dO V^T, formed as dP's tile leaves the registers.
      const auto score_gradients = [=](Index r, Index p, P dp) {
        return simd::mul(simd::load(p_data + r * Bk + p * W),
                         simd::sub(dp, simd::broadcast(delta_i[r])));
      };
      fixed_width::lane_products<T, D>(dOi, ldo, bq, vt.data(), Bk, Bk, ds_tile.data(), Bk,
                                       score_gradients);
      fixed_width::add_transposed_products<T, D>(dOi, ldo, bq, p_tile.data(), Bk, Bk, dvt.data(),
                                                 Bk);
      fixed_width::add_transposed_products<T, D>(Qi, ldq, bq, ds_tile.data(), Bk, Bk, dkt.data(),
                                                 Bk);
      fixed_width::add_row_products<T, D>(ds_tile.data(), Bk, bq, bk, K.data() + j0 * ldk, ldk,
                                          out.dQ.data() + i0 * ld_dq, ld_dq);
    }
    for (Index c = 0; c < bk; ++c) {
      for (Index t = 0; t < D; ++t) {
        out.dK(j0 + c, t) = pass.scale * dkt[std::size_t(t * Bk + c)];
        out.dV(j0 + c, t) = dvt[std::size_t(t * Bk + c)];
      }
    }
  }
}

}  // namespace polygrad::exact::detail
