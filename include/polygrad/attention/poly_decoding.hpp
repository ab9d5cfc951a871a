#pragma once
// Polynomial causal attention one token at a time (inference/decoder.hpp): the recurrent form of
// the chunked forward pass (design.md section 9). Per head the state is the scan's state after
// the last key,
//
//   S = sum_j [v_j 1]^T (w o m(kh_j))^T,   (d_h + 1) x k,
//
// with m the monomials of the features and w the pair weights. A new token adds its key and
// reads m(qh_i)^T S: O(k d_h) per head, whatever the context length.
//
// The state needs an approximation fixed before the data (QK normalisation or a fixed bound R):
// a bound taken from the data would change with every token.

#include <algorithm>
#include <cmath>
#include <vector>

#include "polygrad/attention/poly_approximation.hpp"
#include "polygrad/core/threading.hpp"

namespace polygrad::poly {

/// The DecodingState of PolyAttention: per head its approximation and its state S, in double.
template <class T>
class RecurrentState final : public DecodingState<T> {
 public:
  /// An empty state for causal attention of `shape` and width H d_h, every head planned with
  /// `options`. Throws PlanError when the bound would come from the data.
  RecurrentState(const AttentionShape& shape, Index width, const PolyOptions& options)
      : shape_(shape), dh_(width / shape.heads) {
    require<PlanError>(options.bound > 0 || shape.score_bound > 0, "polynomial attention takes ",
                       "its bound R from the data, which changes with every token; use ",
                       polygrad::detail::one_of(
                           {polygrad::detail::named("QK normalisation", options.names.qk_norm),
                            polygrad::detail::named("a fixed bound", options.names.bound)}));
    AttentionShape head_shape = shape;
    head_shape.heads = 1;
    head_shape.causal = true;
    const Matrix<T> none(0, dh_);  // the plan needs no data once the bound is fixed
    for (Index h = 0; h < shape.heads; ++h) {
      heads_.push_back(make_poly_approximation(none, none, head_shape, options));
      states_.push_back(Matrix<double>::Zero(dh_ + 1, heads_.back().features.size()));
    }
  }

  void reset() override {
    for (Matrix<double>& S : states_) S.setZero();
  }

  void remember(const Matrix<T>& K, const Matrix<T>& V) override {
    require_shape(K, K.rows(), dh_ * shape_.heads, "keys to remember");
    require_shape(V, K.rows(), dh_ * shape_.heads, "values to remember");
    const Index n = K.rows(), rows = 256;
    polygrad::detail::parallel_for(
        shape_.heads, polygrad::detail::thread_count(shape_.threading), [&](Index h) {
          const PolyApproximation& a = heads_[std::size_t(h)];
          Matrix<double> weighted(rows, a.features.size()), values(rows, dh_ + 1);
          Vector<double> m(a.features.size());
          for (Index b = 0; b < n; b += rows) {
            const Index s = std::min(rows, n - b);
            for (Index j = 0; j < s; ++j) {
              a.features.monomials(scaled_key(a, K.row(b + j), h), m);
              weighted.row(j) = m.cwiseProduct(a.pair_weight).transpose();
            }
            values.topLeftCorner(s, dh_) = V.block(b, h * dh_, s, dh_).template cast<double>();
            values.col(dh_).head(s).setOnes();
            states_[std::size_t(h)].noalias() +=
                values.topRows(s).transpose() * weighted.topRows(s);
          }
        });
  }

  void step(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Matrix<T>& o) override {
    o.resize(1, dh_ * shape_.heads);
    const double work =
        4.0 * double(heads_[0].features.size()) * double(dh_ + 1) * double(shape_.heads);
    polygrad::detail::parallel_for(
        shape_.heads, polygrad::detail::threads_for(shape_.threading, shape_.heads, work),
        [&](Index h) {
          const PolyApproximation& a = heads_[std::size_t(h)];
          Vector<double> query(a.features.size()), key(a.features.size());
          const Vector<double> qh =
              q.middleCols(h * dh_, dh_).transpose().template cast<double>() * a.q_scale;
          a.features.monomials(qh, query);
          a.features.monomials(scaled_key(a, k.row(0), h), key);
          key = key.cwiseProduct(a.pair_weight);
          RowVector<double> value(dh_ + 1);
          value << v.middleCols(h * dh_, dh_).template cast<double>(), 1.0;
          const RowVector<double> numerator =
              read_and_add(states_[std::size_t(h)], query, key, value);
          const double z = numerator(dh_);
          require<NumericError>(z > 0 && std::isfinite(z), "the polynomial normaliser of head ", h,
                                " is ", z, "; the plan's bound does not hold or its degree ",
                                "certifies nothing: raise the degree or use QK normalisation");
          o.middleCols(h * dh_, dh_) = (numerator.head(dh_) / z).template cast<T>();
        });
  }

  bool recurrent() const override { return true; }

  std::vector<HeadPlan> plans() const override {
    std::vector<HeadPlan> out;
    for (const PolyApproximation& a : heads_) out.push_back(a.plan);
    return out;
  }

 private:
  /// kh = k k_scale (d_h) of head h for a key row k (1 x H d_h); keys are not centred under a
  /// fixed bound.
  template <class Row>
  Vector<double> scaled_key(const PolyApproximation& a, const Row& k, Index h) const {
    return k.segment(h * dh_, dh_).transpose().template cast<double>() * a.k_scale;
  }

  /// m(q)^T S' for S' = S + w o m(k) [v 1], which it writes to S (stored transposed, (d_h + 1)
  /// x k): one pass over the state, whose size (megabytes per layer) sets a step's time.
  static RowVector<double> read_and_add(Matrix<double>& S, const Vector<double>& query,
                                        const Vector<double>& weighted_key,
                                        const RowVector<double>& value) {
    RowVector<double> numerator(S.rows());
    for (Index j = 0; j < S.rows(); ++j) {  // row by row, so that the row is in cache for both
      numerator(j) = S.row(j).dot(query.transpose());
      S.row(j) += value(j) * weighted_key.transpose();
    }
    return numerator + query.dot(weighted_key) * value;  // the new key's own term
  }

  AttentionShape shape_;
  Index dh_;
  std::vector<PolyApproximation> heads_;  // per head
  std::vector<Matrix<double>> states_;    // per head, (d_h + 1, k)
};

}  // namespace polygrad::poly
