#pragma once
// Symmetric tensor features of a polynomial kernel: phi(x) . psi(y) = p(x . y) exactly
// (design.md section 3, "Features"). This header holds the index tables and weights; the fast
// kernels that use them are monomial_block.hpp and feature_products.hpp, and the row-by-row
// feature maps the tests compare them with are features_reference.hpp.
//
// Feature layout: ordered by degree j = 0..g; within a degree, the monomials x^alpha in the order
// "children of parent 0, children of parent 1, ...", where a parent is a degree-(j-1) monomial
// with largest coordinate l and its children are parent * x_c for c = l..d-1. So every row is
// built by one pass of contiguous multiplies, O(k) for k = C(d + g, g) features, and the
// backward pass runs the same loop in reverse.

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// phi and psi for p(t) = sum_j b_j t^j in dimension d: phi_alpha(x) = sign(b_j) w_alpha x^alpha,
/// psi_alpha(y) = w_alpha y^alpha with w_alpha = sqrt(|b_j| j! / alpha!), |alpha| = j.
/// Configuration only: every method is const and thread-safe.
class SymmetricFeatures {
 public:
  /// Features for the coefficients b_0..b_g (zeros allowed) of rows of `dim` coordinates.
  SymmetricFeatures(Index dim, const std::vector<double>& coeffs) : dim_(dim) {
    require<ShapeError>(dim >= 1, "SymmetricFeatures: the row dimension must be >= 1, got ", dim);
    require<PlanError>(!coeffs.empty(),
                       "SymmetricFeatures: no polynomial coefficients; pass b_0..b_g");
    for (double b : coeffs) {
      require<NumericError>(std::isfinite(b), "SymmetricFeatures: coefficient ", b,
                            " is not finite; fit the polynomial again");
    }
    degree_ = static_cast<int>(coeffs.size()) - 1;
    size_ = count(dim, degree_);
    require<PlanError>(size_ <= std::numeric_limits<std::int32_t>::max(),
                       "SymmetricFeatures: ", size_, " features (d = ", dim, ", g = ", degree_,
                       ") is too many; lower the degree (a larger eps or a smaller R)");
    build(coeffs);
  }

  /// d, the length of an input row.
  Index dim() const { return dim_; }
  /// g, the polynomial degree.
  int degree() const { return degree_; }
  /// k = C(d + g, g), the length of a feature row.
  Index size() const { return size_; }
  /// Index of the first feature of degree j (0 <= j <= g + 1; j = g + 1 gives size()).
  Index degree_begin(int j) const { return degree_begin_.at(static_cast<std::size_t>(j)); }
  /// The degree-(j-1) feature that feature f (f >= 1) extends by one coordinate.
  Index parent(Index f) const { return parent_[static_cast<std::size_t>(f)]; }
  /// The largest coordinate index in feature f's monomial (0 for the constant feature).
  int last_coordinate(Index f) const { return last_[static_cast<std::size_t>(f)]; }
  /// parent() of every feature, an array of size().
  const std::int32_t* parents() const { return parent_.data(); }
  /// last_coordinate() of every feature, an array of size().
  const std::int32_t* last_coordinates() const { return last_.data(); }
  /// sqrt(|b_j| j! / alpha!) of feature f; phi carries the sign of b_j on top.
  double weight(Index f) const { return weight_[static_cast<std::size_t>(f)]; }

  /// phi's weight of feature f: weight(f) with the sign of b_j.
  double phi_weight(Index f) const { return phi_weight_[static_cast<std::size_t>(f)]; }

  /// m (k) = the unweighted monomials x^alpha_f of one row x (d): each feature's parent's
  /// monomial times its last coordinate, from m_0 = 1. The row-at-a-time form of the sweep that
  /// monomial_block.hpp runs on blocks of rows.
  template <class Row, class Out>
  void monomials(const Eigen::MatrixBase<Row>& x, Eigen::MatrixBase<Out>& m) const {
    m(0) = typename Out::Scalar(1);
    for (Index f = 1; f < size_; ++f) m(f) = m(parent(f)) * x(last_coordinate(f));
  }

  /// C(dim + degree, degree); PlanError if it does not fit in an Index.
  static Index count(Index dim, int degree) {
    require<ShapeError>(dim >= 0, "SymmetricFeatures::count: negative dimension ", dim);
    require<PlanError>(degree >= 0, "SymmetricFeatures::count: negative degree ", degree);
    // C(d + i, i) = C(d + i - 1, i - 1) (d + i) / i, an exact division at every step.
    Index c = 1;
    for (int i = 1; i <= degree; ++i) {
      require<PlanError>(c <= std::numeric_limits<Index>::max() / (dim + i), "C(", dim, " + ",
                         degree, ", ", degree,
                         ") features overflow; lower the degree or the head dimension");
      c = c * (dim + i) / i;
    }
    return c;
  }

 private:
  void build(const std::vector<double>& coeffs) {
    const auto k = static_cast<std::size_t>(size_);
    parent_.assign(k, 0);
    last_.assign(k, 0);
    std::vector<int> run(k, 0);               // multiplicity of the last coordinate
    std::vector<double> multinomial(k, 1.0);  // j! / alpha!, exact up to rounding
    degree_begin_.assign(static_cast<std::size_t>(degree_) + 2, 0);
    degree_begin_[1] = 1;
    std::size_t next = 1;
    for (int j = 1; j <= degree_; ++j) {
      for (auto p = static_cast<std::size_t>(degree_begin_[j - 1]);
           p < static_cast<std::size_t>(degree_begin_[j]); ++p) {
        for (int c = last_[p]; c < dim_; ++c, ++next) {
          parent_[next] = static_cast<std::int32_t>(p);
          last_[next] = c;
          // alpha_c grows by one: j!/alpha! = (j-1)!/alpha_parent! * j / alpha_c.
          run[next] = (p != 0 && c == last_[p]) ? run[p] + 1 : 1;
          multinomial[next] = multinomial[p] * j / run[next];
        }
      }
      degree_begin_[static_cast<std::size_t>(j) + 1] = static_cast<Index>(next);
    }
    weight_.resize(k);
    phi_weight_.resize(k);
    for (int j = 0; j <= degree_; ++j) {
      const double b = coeffs[static_cast<std::size_t>(j)];
      for (auto f = static_cast<std::size_t>(degree_begin_[j]);
           f < static_cast<std::size_t>(degree_begin_[j + 1]); ++f) {
        weight_[f] = std::sqrt(std::fabs(b) * multinomial[f]);
        phi_weight_[f] = b < 0 ? -weight_[f] : weight_[f];
      }
    }
  }

  Index dim_ = 0;
  int degree_ = 0;
  Index size_ = 0;
  std::vector<Index> degree_begin_;          // (g + 2) first feature of each degree, then k
  std::vector<std::int32_t> parent_;         // (k) parent feature; 0 for the constant
  std::vector<std::int32_t> last_;           // (k) largest coordinate of the monomial
  std::vector<double> weight_, phi_weight_;  // (k) psi and phi weights
};

}  // namespace polygrad
