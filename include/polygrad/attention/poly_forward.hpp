#pragma once
// The forward pass of polynomial attention for one head, chunked (DESIGN.md sections 3 and 5),
// and the pieces the two backward routes share with it.
//
// Inputs are the scaled queries and keys of poly_approximation.hpp: t_ij = qh_i . kh_j and
// A~_ij = p(t_ij). Across chunks A~ is the low-rank phi(qh_i) . psi(kh_j), carried in running
// feature states; inside a causal chunk the C x C scores are evaluated directly. Features are
// built one chunk at a time and never stored for the whole sequence. States are summed in
// double whatever T is (DESIGN.md section 7).

#include <algorithm>

#include "polygrad/approx/feature_products.hpp"
#include "polygrad/attention/poly_approximation.hpp"

namespace polygrad::poly {

/// What the forward pass keeps for backward, besides the inputs and O: the normalisers z~.
template <class T>
struct ForwardSaved {
  Vector<T> z;  // (n)
};

namespace detail {

/// Rows [begin, begin + size) of the sequence.
struct Chunk {
  Index begin, size;
};

inline Index chunk_count(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

inline Chunk chunk_at(Index c, Index n, Index chunk) {
  const Index begin = c * chunk;
  return {begin, std::min(chunk, n - begin)};
}

/// A = p(t) and, if wanted, dp = p'(t) on a causal diagonal block t = Qh_c Kh_c^T (C x C),
/// with the entries above the diagonal set to zero.
template <class T>
void diagonal_scores(const ExpPolynomial& p, const Matrix<T>& t, Matrix<T>& A,
                     Matrix<T>* dp = nullptr) {
  const int g = p.degree;
  A.setConstant(t.rows(), t.cols(), T(p.coeffs[g]));
  for (int j = g - 1; j >= 0; --j) A = (A.array() * t.array() + T(p.coeffs[j])).matrix();
  A.template triangularView<Eigen::StrictlyUpper>().setZero();
  if (!dp) return;
  dp->setConstant(t.rows(), t.cols(), T(g * p.coeffs[g]));
  if (g == 0) dp->setZero();
  for (int j = g - 1; j >= 1; --j) *dp = (dp->array() * t.array() + T(j * p.coeffs[j])).matrix();
  dp->template triangularView<Eigen::StrictlyUpper>().setZero();
}

/// Throws NumericError unless every normaliser is positive and finite. A certified plan
/// guarantees it (DESIGN.md section 3); otherwise the message says which promise failed.
template <class T>
void require_positive_normalisers(const PolyApproximation& a, const Vector<T>& z, Index offset) {
  for (Index i = 0; i < z.size(); ++i) {
    if (z(i) > 0 && std::isfinite(double(z(i)))) continue;
    const HeadPlan& plan = a.plan;
    std::string why;
    if (plan.exp_error >= 1) {
      why = polygrad::detail::concat("the degree-", plan.degree, " polynomial certifies no error bound (",
                           plan.exp_error, " >= 1) on [-R, R], R = ", plan.bound,
                           ", and is not positive on these scores: raise the degree, or let ",
                           "epsilon choose it");
    } else if (!plan.certified) {
      why = polygrad::detail::concat("the scores are not within the given bound R = ", plan.bound,
                           " (Cauchy-Schwarz gives ", plan.cauchy_schwarz_bound,
                           "): use a larger bound, QK normalisation, or the automatic bound");
    } else {
      why = "rounding broke the certified positivity: use double, or a tighter epsilon";
    }
    throw NumericError(polygrad::detail::concat("polynomial attention: normaliser of row ",
                                                offset + i, " is ", z(i), "; ", why));
  }
}

/// A running sum, in double, of monomial-weighted rows: sum += M X for a chunk's monomials M
/// (k x C, feature-major) and rows X (C x m); refresh() returns diag(w) sum in T, the state
/// with the pair weights applied, ready for the next product (DESIGN.md section 7: the long
/// sums stay in double whatever T is).
template <class T>
class FeatureState {
 public:
  FeatureState(Index k, Index m) : sum_(Matrix<double>::Zero(k, m)), current_(k, m) {
    current_.setZero();
  }
  template <class X>
  void add(const Matrix<T>& monomials, const X& rows) {
    sum_.noalias() += (monomials * rows).template cast<double>();
  }
  /// Sets the working copy to diag(w) sum in T and returns it.
  const Matrix<T>& refresh(const Vector<double>& w) {
    current_ = (w.asDiagonal() * sum_).template cast<T>();
    return current_;
  }
  /// The working copy as of the last refresh().
  const Matrix<T>& current() const { return current_; }

 private:
  Matrix<double> sum_;  // (k, m)
  Matrix<T> current_;   // (k, m)
};

/// [X 1]: the rows with a column of ones appended, so one product carries sums and counts.
template <class T, class X>
Matrix<T> with_ones(const X& rows) {
  Matrix<T> out(rows.rows(), rows.cols() + 1);
  out.leftCols(rows.cols()) = rows;
  out.col(rows.cols()).setOnes();
  return out;
}

}  // namespace detail

/// O~ (n x d_h) and the normalisers of one head. Qh, Kh, V: (n, d_h), scaled as in
/// poly_approximation.hpp.
template <class T>
void forward(const PolyApproximation& a, const Matrix<T>& Qh, const Matrix<T>& Kh,
             const Matrix<T>& V, bool causal, Index chunk, Matrix<T>& O, ForwardSaved<T>& saved) {
  const Index n = Qh.rows(), dh = V.cols(), k = a.features.size();
  const Index chunks = detail::chunk_count(n, chunk);
  const Vector<double>& w = a.pair_weight;
  O.resize(n, dh);
  saved.z.resize(n);
  MonomialBlock<T> block(a.features);
  // state = sum_j m(kh_j) [v_j 1]^T over the keys seen so far: (k, d_h + 1).
  detail::FeatureState<T> state(k, dh + 1);
  Matrix<T> Mq, Mk, A;  // (k, C) monomials of the chunk's queries and keys; (C, C) scores
  if (!causal) {
    for (Index c = 0; c < chunks; ++c) {
      const auto [begin, size] = detail::chunk_at(c, n, chunk);
      block.build(Kh.middleRows(begin, size), Mk);
      state.add(Mk, detail::with_ones<T>(V.middleRows(begin, size)));
    }
    state.refresh(w);
  }
  for (Index c = 0; c < chunks; ++c) {
    const auto [begin, size] = detail::chunk_at(c, n, chunk);
    block.build(Qh.middleRows(begin, size), Mq);
    const Matrix<T>& S = causal ? state.refresh(w) : state.current();
    Matrix<T> numerator;  // (C, d_h + 1): [sum_j A_ij v_j, z_i]
    monomials_transpose_times(Mq, S, numerator);
    if (causal) {
      const Matrix<T> t = Qh.middleRows(begin, size) * Kh.middleRows(begin, size).transpose();
      detail::diagonal_scores(a.polynomial, t, A);
      numerator.noalias() += A * detail::with_ones<T>(V.middleRows(begin, size));
      block.build(Kh.middleRows(begin, size), Mk);
      state.add(Mk, detail::with_ones<T>(V.middleRows(begin, size)));
    }
    const Vector<T> z = numerator.col(dh);
    detail::require_positive_normalisers(a, z, begin);
    saved.z.segment(begin, size) = z;
    O.middleRows(begin, size) = numerator.leftCols(dh).array().colwise() / z.array();
  }
}

namespace detail {

/// dO' = dO / z~ and dz = -(dO . O~) / z~ per row: the gradient reaching the unnormalised
/// numerator and the normaliser (DESIGN.md section 4, route adjoint; the paper route needs the
/// same two, since its dS equals A~ o (dO' V^T + dz 1^T)).
template <class T>
void normaliser_gradients(const Matrix<T>& O, const Vector<T>& z, const Matrix<T>& dO,
                          Matrix<T>& dOz, Vector<T>& dz) {
  dOz = dO.array().colwise() / z.array();
  dz = -(dO.array() * O.array()).rowwise().sum() / z.array();
}

}  // namespace detail
}  // namespace polygrad::poly
