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

/// Calls body(begin, size) for the strips of W = simd::width<T> rows that make up a chunk (the
/// last may be shorter). Monomials are built and used one strip at a time, so that a block of
/// them stays in cache (monomial_block.hpp); a chunk is the unit of the states and of the
/// dense diagonal blocks.
template <class T, class Body>
void for_each_strip(Chunk chunk, Body&& body) {
  constexpr Index W = simd::width<T>;
  const Index end = chunk.begin + chunk.size;
  for (Index begin = chunk.begin; begin < end; begin += W) body(begin, std::min(W, end - begin));
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

/// A running sum, in double, of monomial-weighted rows: S += M X for the monomials M (k x C) and
/// rows X (C x m) of each strip that enters. Stored transposed, (m x k), as feature_products.hpp
/// takes states. Sums over at most `fold_rows` rows are formed in T, then added in double
/// (DESIGN.md section 7: the long sums stay in double whatever T is). refresh() returns
/// diag(w) S in T, the state with the pair weights applied, ready for the next products.
template <class T>
class FeatureState {
 public:
  FeatureState(Index k, Index m, Index fold_rows)
      : sumT_(Matrix<double>::Zero(m, k)),
        partialT_(Matrix<T>::Zero(m, padded_rows<T>(k))),
        currentT_(Matrix<T>::Zero(m, k)),
        fold_rows_(fold_rows) {}
  /// rows: (padded C x m), zero past the block's rows (padded_chunk_rows, with_ones).
  void add(const Monomials<T>& monomials, const Matrix<T>& rows) {
    add_monomial_products(monomials, rows, partialT_);
    pending_ += rows.rows();
    if (pending_ >= fold_rows_) fold();
  }
  /// Sets the working copy to (diag(w) S)^T in T and returns it: (m x k).
  const Matrix<T>& refresh(const Vector<double>& w) {
    fold();
    currentT_ = (sumT_.array().rowwise() * w.transpose().array()).template cast<T>();
    return currentT_;
  }
  /// The working copy as of the last refresh().
  const Matrix<T>& current() const { return currentT_; }
 private:
  void fold() {
    if (pending_ == 0) return;
    sumT_ += partialT_.leftCols(sumT_.cols()).template cast<double>();
    partialT_.setZero();
    pending_ = 0;
  }

  Matrix<double> sumT_;  // (m, k)
  Matrix<T> partialT_;   // (m, k padded to whole packets): rows added since the last fold
  Matrix<T> currentT_;   // (m, k)
  Index fold_rows_, pending_ = 0;
};

/// The rows of a chunk, zero-padded to whole strips: (padded C x m).
template <class T, class X>
Matrix<T> padded_chunk_rows(const X& rows) {
  Matrix<T> out = Matrix<T>::Zero(padded_rows<T>(rows.rows()), rows.cols());
  out.topRows(rows.rows()) = rows;
  return out;
}

/// [X 1] zero-padded to whole strips: one product then carries sums and counts.
template <class T, class X>
Matrix<T> with_ones(const X& rows) {
  Matrix<T> out = Matrix<T>::Zero(padded_rows<T>(rows.rows()), rows.cols() + 1);
  out.topLeftCorner(rows.rows(), rows.cols()) = rows;
  out.col(rows.cols()).head(rows.rows()).setOnes();
  return out;
}

/// The state of the whole sequence, for the non-causal routes, where every row sees every
/// other: adds m(x_r) rows_r^T over all rows r of X (n x d), strip by strip, then refreshes.
/// rows_of(begin, size) gives the padded rows of a strip.
template <class T, class RowsOf>
void add_whole_sequence(FeatureState<T>& state, MonomialBlock<T>& block, Monomials<T>& M,
                        const Matrix<T>& X, const Vector<double>& w, RowsOf&& rows_of) {
  for_each_strip<T>({0, X.rows()}, [&](Index begin, Index size) {
    block.build(X.middleRows(begin, size), M);
    state.add(M, rows_of(begin, size));
  });
  state.refresh(w);
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
  detail::FeatureState<T> state(k, dh + 1, chunk);
  Monomials<T> Mq, Mk;  // (k, W) monomials of a strip of queries or keys
  Matrix<T> A, products;  // (C, C) scores; (W, d_h + 1) a strip's products
  Matrix<T> numerator;    // (C, d_h + 1): [sum_j A_ij v_j, z_i] of a chunk
  auto values = [&](Index begin, Index size) {  // [v_j 1]
    return detail::with_ones<T>(V.middleRows(begin, size));
  };
  if (!causal) detail::add_whole_sequence(state, block, Mk, Kh, w, values);
  for (Index c = 0; c < chunks; ++c) {
    const detail::Chunk rows = detail::chunk_at(c, n, chunk);
    const auto [begin, size] = rows;
    const Matrix<T>& S = causal ? state.refresh(w) : state.current();
    numerator.resize(size, dh + 1);
    detail::for_each_strip<T>(rows, [&](Index b, Index s) {
      block.build(Qh.middleRows(b, s), Mq);
      monomials_transpose_times(Mq, S, products);
      numerator.middleRows(b - begin, s) = products.topRows(s);
    });
    if (causal) {
      const Matrix<T> t = Qh.middleRows(begin, size) * Kh.middleRows(begin, size).transpose();
      detail::diagonal_scores(a.polynomial, t, A);
      numerator.leftCols(dh).noalias() += A * V.middleRows(begin, size);
      numerator.col(dh) += A.rowwise().sum();
      detail::for_each_strip<T>(rows, [&](Index b, Index s) {
        block.build(Kh.middleRows(b, s), Mk);
        state.add(Mk, values(b, s));
      });
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
