#pragma once
// Rotary position embeddings (Su et al., "RoFormer: Enhanced Transformer with Rotary Position
// Embedding", 2021), laid out as Llama and Qwen3 lay them out in transformers: in each head of
// even width d, coordinate j < d/2 pairs with coordinate j + d/2, and the pair of a row at
// position p turns by the angle p f_j, f_j = theta^(-2j/d):
//
//   y_j         = x_j cos(p f_j) - x_{j+d/2} sin(p f_j)
//   y_{j+d/2}   = x_{j+d/2} cos(p f_j) + x_j sin(p f_j)
//
// Each turn is orthogonal, so the backward pass turns the gradient back by the same angle, and
// a query at p and a key at s meet in (R_p q) . (R_s k) = q . R_{s-p} k: scores depend on the
// distance only. A turn keeps the norm of every head, so scores bounded before it (QK
// normalisation) stay bounded by the same R after it.

#include <cmath>
#include <vector>

#include "polygrad/attention/packed.hpp"
#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// The position of every row of n rows: its index in its own sequence. Without offsets the rows
/// are one sequence whose row 0 is at position `first` (a shard that starts inside a sequence,
/// or a decoding step); with the offsets of a packed batch (attention/packed.hpp) each sequence
/// starts again at 0, except the first, which starts at `first`. ShapeError on bad offsets or
/// a negative `first`.
inline std::vector<Index> sequence_positions(Index n, const SequenceOffsets& offsets = {},
                                             Index first = 0) {
  check_offsets(offsets, n, "sequence_positions");
  require<ShapeError>(first >= 0, "sequence_positions: the first position must be >= 0, got ",
                      first);
  std::vector<Index> positions(static_cast<std::size_t>(n));
  Index start = 0, shift = first;  // the current sequence's first row, and its position
  std::size_t next = 1;            // the offset that ends the current sequence
  for (Index i = 0; i < n; ++i) {
    if (next < offsets.size() && i == offsets[next]) {
      start = i;
      shift = 0;
      ++next;
    }
    positions[std::size_t(i)] = i - start + shift;
  }
  return positions;
}

/// Turns the heads of query or key rows by their rows' positions.
class RotaryEmbedding {
 public:
  /// Llama's and Qwen's default base (transformers' `rope_theta`, 10,000 in Llama 2; Qwen3
  /// configurations set 1,000,000).
  static constexpr double default_theta = 10000.0;

  /// Turns heads of width `head_dim` (even, >= 2) with base `theta` (finite, > 0). ShapeError or
  /// Error otherwise.
  explicit RotaryEmbedding(Index head_dim, double theta = default_theta)
      : head_dim_(head_dim), theta_(theta) {
    require<ShapeError>(head_dim >= 2 && head_dim % 2 == 0, "rotary embeddings pair the ",
                        "coordinates of a head, so its width must be even and >= 2, got ",
                        head_dim);
    require<Error>(std::isfinite(theta) && theta > 0,
                   "the rotary base theta must be finite and positive, got ", theta);
    frequencies_.resize(std::size_t(head_dim / 2));
    for (Index j = 0; j < head_dim / 2; ++j)
      frequencies_[std::size_t(j)] = std::pow(theta, -2.0 * double(j) / double(head_dim));
  }

  /// x (n x heads * head_dim) turned in place: every head of row i by positions[i].
  /// ShapeError if x is not `heads` heads wide, positions has not one entry per row, or one is
  /// negative.
  ///@{
  void rotate(MatrixRef<float> x, Index heads, const std::vector<Index>& positions) const {
    turn<float>(x, heads, positions, 1.0);
  }
  void rotate(MatrixRef<double> x, Index heads, const std::vector<Index>& positions) const {
    turn<double>(x, heads, positions, 1.0);
  }
  ///@}

  /// The backward pass of rotate(): dx (n x heads * head_dim, holding dL/dy on entry) turned
  /// back in place, dx = R^T dy.
  ///@{
  void rotate_back(MatrixRef<float> dx, Index heads, const std::vector<Index>& positions) const {
    turn<float>(dx, heads, positions, -1.0);
  }
  void rotate_back(MatrixRef<double> dx, Index heads, const std::vector<Index>& positions) const {
    turn<double>(dx, heads, positions, -1.0);
  }
  ///@}

  /// The width of a head, d.
  Index head_dim() const { return head_dim_; }
  /// The base theta.
  double theta() const { return theta_; }
  /// f_j = theta^(-2j/d), the angle per position of pair j < d/2.
  double frequency(Index j) const { return frequencies_[std::size_t(j)]; }

 private:
  // Turns every head of each row by `sign` times its angles; the angles are formed in double.
  template <class T>
  void turn(MatrixRef<T> x, Index heads, const std::vector<Index>& positions, double sign) const {
    const Index half = head_dim_ / 2;
    require<ShapeError>(heads >= 1 && x.cols() == heads * head_dim_, "rotary embeddings: rows ",
                        "of ", x.cols(), " columns are not ", heads, " heads of width ", head_dim_);
    require<ShapeError>(Index(positions.size()) == x.rows(),
                        "rotary embeddings: ", positions.size(), " positions for ", x.rows(),
                        " rows");
    std::vector<T> c(static_cast<std::size_t>(half)), s(static_cast<std::size_t>(half));
    for (Index i = 0; i < x.rows(); ++i) {
      const Index p = positions[std::size_t(i)];
      require<ShapeError>(p >= 0, "rotary embeddings: row ", i, " has position ", p,
                          "; positions must be >= 0");
      for (Index j = 0; j < half; ++j) {
        const double angle = double(p) * frequencies_[std::size_t(j)];
        c[std::size_t(j)] = T(std::cos(angle));
        s[std::size_t(j)] = T(sign * std::sin(angle));
      }
      for (Index h = 0; h < heads; ++h) {
        T* first = x.row(i).data() + h * head_dim_;  // coordinates j < d/2
        T* second = first + half;                    // their partners j + d/2
        for (Index j = 0; j < half; ++j) {
          const T a = first[j], b = second[j], cj = c[std::size_t(j)], sj = s[std::size_t(j)];
          first[j] = a * cj - b * sj;
          second[j] = b * cj + a * sj;
        }
      }
    }
  }

  Index head_dim_;
  double theta_;
  std::vector<double> frequencies_;  // (d/2)
};

}  // namespace polygrad
