#pragma once
// The naive attention reference: builds the n x n score matrix. O(n^2) memory; tests only.
//
// Formulas: DESIGN.md sections 1-2, written out densely.

#include <cmath>

#include "polygrad/attention/method.hpp"
#include "polygrad/detail/heads.hpp"

namespace polygrad {

namespace naive {

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

/// dQ, dK, dV of one head given dO (DESIGN.md section 2, with P held in full).
template <class T>
void attention_backward(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                        const Matrix<T>& dO, T scale, bool causal, Matrix<T>& dQ, Matrix<T>& dK,
                        Matrix<T>& dV) {
  const Matrix<T> P = attention_probabilities(Q, K, scale, causal);  // (n, n)
  const Matrix<T> dP = dO * V.transpose();                          // (n, n)
  const Vector<T> delta = (P.array() * dP.array()).rowwise().sum();
  const Matrix<T> dS = P.array() * (dP.colwise() - delta).array();  // (n, n)
  dV = P.transpose() * dO;
  dQ = scale * dS * K;
  dK = scale * dS.transpose() * Q;
}

}  // namespace naive

/// The naive reference as an AttentionMethod, so that layer tests can run it too.
template <class T>
class NaiveAttention final : public AttentionMethod<T> {
 public:
  std::string name() const override { return "naive"; }

  std::unique_ptr<AttentionContext<T>> forward(const Matrix<T>& Q, const Matrix<T>& K,
                                               const Matrix<T>& V, const AttentionShape& shape,
                                               Matrix<T>& O) const override {
    const Index dh = detail::check_attention_inputs(Q, K, V, shape);
    O.resize(Q.rows(), Q.cols());
    for (Index h = 0; h < shape.heads; ++h) {
      detail::set_head(O, h,
                       naive::attention_forward<T>(detail::head_of(Q, h, dh), detail::head_of(K, h, dh),
                                                   detail::head_of(V, h, dh), T(shape.scale),
                                                   shape.causal));
    }
    return std::make_unique<Context>(Q, K, V, shape);
  }

 private:
  class Context final : public AttentionContext<T> {
   public:
    Context(Matrix<T> Q, Matrix<T> K, Matrix<T> V, AttentionShape shape)
        : Q_(std::move(Q)), K_(std::move(K)), V_(std::move(V)), shape_(shape) {}

    void backward(const Matrix<T>& dO, Matrix<T>& dQ, Matrix<T>& dK, Matrix<T>& dV) override {
      require_shape(dO, Q_.rows(), Q_.cols(), "dO");
      const Index dh = Q_.cols() / shape_.heads;
      dQ.resize(Q_.rows(), Q_.cols());
      dK.resize(Q_.rows(), Q_.cols());
      dV.resize(Q_.rows(), Q_.cols());
      for (Index h = 0; h < shape_.heads; ++h) {
        Matrix<T> dq, dk, dv;
        naive::attention_backward<T>(detail::head_of(Q_, h, dh), detail::head_of(K_, h, dh),
                                     detail::head_of(V_, h, dh), detail::head_of(dO, h, dh),
                                     T(shape_.scale), shape_.causal, dq, dk, dv);
        detail::set_head(dQ, h, dq);
        detail::set_head(dK, h, dk);
        detail::set_head(dV, h, dv);
      }
    }

   private:
    Matrix<T> Q_, K_, V_;
    AttentionShape shape_;
  };
};

}  // namespace polygrad
