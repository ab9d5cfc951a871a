#pragma once
// The naive attention reference: builds the n x n score matrix. O(n^2) memory; tests only.
//
// Formulas: design.md sections 1-2, written out densely.

#include <cmath>

#include "polygrad/attention/method.hpp"

namespace polygrad {

/// The dense reference of exact attention, with the n x n scores in memory; for tests.
namespace exact::reference {

/// A copy of head h of m: the n x d_h block of columns [h d_h, (h + 1) d_h), contiguous.
template <class T>
Matrix<T> head_of(const Matrix<T>& m, Index h, Index dh) {
  return m.middleCols(h * dh, dh);
}

/// Row-wise softmax of c Q K^T with the causal mask applied; n x n.
template <class T>
Matrix<T> attention_probabilities(const Matrix<T>& Q, const Matrix<T>& K, T scale, bool causal) {
  Matrix<T> P = scale * Q * K.transpose();  // (n, n)
  const Index n = P.rows();
  for (Index i = 0; i < n; ++i) {
    // Masked entries are set to zero, not computed as exp(-inf): Eigen's vectorised exp returns
    // a denormal rather than 0 there.
    const Index visible = causal ? i + 1 : n;
    auto row = P.row(i).head(visible);
    row = (row.array() - row.maxCoeff()).exp();
    row /= row.sum();
    P.row(i).tail(n - visible).setZero();
  }
  return P;
}

/// O = softmax(c Q K^T) V for one head.
template <class T>
Matrix<T> attention_forward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, T scale,
                            bool causal) {
  return attention_probabilities(Q, K, scale, causal) * V;
}

/// dQ, dK, dV of one head given dO (design.md section 2, with P held in full).
template <class T>
void attention_backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                        const Matrix<T>& dO, T scale, bool causal, Matrix<T>& dQ, Matrix<T>& dK,
                        Matrix<T>& dV) {
  const Matrix<T> P = attention_probabilities(Q, K, scale, causal);  // (n, n)
  const Matrix<T> dP = dO * V.transpose();                           // (n, n)
  const Vector<T> delta = (P.array() * dP.array()).rowwise().sum();
  const Matrix<T> dS = P.array() * (dP.colwise() - delta).array();  // (n, n)
  dV = P.transpose() * dO;
  dQ = scale * dS * K;
  dK = scale * dS.transpose() * Q;
}

}  // namespace exact::reference

/// The naive reference as an AttentionMethod, so that layer tests can run it too.
template <class T>
class NaiveAttention final : public AttentionMethod<T> {
 public:
  std::string name() const override { return "naive"; }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    detail::require_whole_sequence(shape, "NaiveAttention");
    const Index dh = detail::check_attention_inputs(Q, K, V, shape);
    O.resize(Q.rows(), Q.cols());
    for (Index h = 0; h < shape.heads; ++h) {
      O.middleCols(h * dh, dh) = exact::reference::attention_forward<T>(
          exact::reference::head_of(Q, h, dh), exact::reference::head_of(K, h, dh),
          exact::reference::head_of(V, h, dh), T(shape.scale), shape.causal);
    }
    return std::make_unique<Context>(shape, Q.rows(), Q.cols());
  }

 private:
  class Context final : public AttentionContext<T> {
   public:
    Context(AttentionShape shape, Index n, Index width) : shape_(shape), n_(n), width_(width) {}

    void backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V, const Matrix<T>& O,
                  const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      detail::prepare_backward(Q, K, V, O, dO, n_, width_, shape_.inputs_checked, dQ, dK, dV);
      const Index dh = width_ / shape_.heads;
      for (Index h = 0; h < shape_.heads; ++h) {
        Matrix<T> dq, dk, dv;
        exact::reference::attention_backward<T>(
            exact::reference::head_of(Q, h, dh), exact::reference::head_of(K, h, dh),
            exact::reference::head_of(V, h, dh), exact::reference::head_of(dO, h, dh),
            T(shape_.scale), shape_.causal, dq, dk, dv);
        dQ.middleCols(h * dh, dh) = dq;
        dK.middleCols(h * dh, dh) = dk;
        dV.middleCols(h * dh, dh) = dv;
      }
    }

   private:
    AttentionShape shape_;
    Index n_, width_;
  };
};

}  // namespace polygrad
