#pragma once
// MLP(x) = GELU(x W1^T + b1) W2^T + b2 (DESIGN.md section 1).

#include "polygrad/layers/gelu.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

/// The feed-forward part of a block: fc1 (D -> F), GELU, fc2 (F -> D). Parameters
/// "fc1.weight" [F, D], "fc1.bias" [F], "fc2.weight" [D, F], "fc2.bias" [D].
template <class T>
class MLP {
 public:
  /// An MLP of width D with hidden width F.
  MLP(Index D, Index F) : fc1_(D, F), fc2_(F, D) {}

  /// fc2(GELU(fc1(x))); the sublayers cache their own inputs.
  Matrix<T> forward(const Matrix<T>& x) { return fc2_.forward(gelu_.forward(fc1_.forward(x))); }

  /// Backward through fc2, GELU and fc1 in turn; returns dx.
  Matrix<T> backward(const Matrix<T>& dy) {
    return fc1_.backward(gelu_.backward(fc2_.backward(dy)));
  }

  /// Appends "prefix.fc1.weight", "prefix.fc1.bias", "prefix.fc2.weight", "prefix.fc2.bias".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    fc1_.collect_parameters(detail::join_name(prefix, "fc1"), out);
    fc2_.collect_parameters(detail::join_name(prefix, "fc2"), out);
  }

  /// Sets every gradient to zero.
  void zero_grad() {
    fc1_.zero_grad();
    fc2_.zero_grad();
  }

  /// Weights ~ Normal(0, stddev^2), biases zero.
  void init(std::mt19937_64& rng, double stddev) {
    fc1_.init(rng, stddev);
    fc2_.init(rng, stddev);
  }

  /// The first linear layer, D -> F.
  Linear<T>& fc1() { return fc1_; }
  /// The second linear layer, F -> D.
  Linear<T>& fc2() { return fc2_; }

 private:
  Linear<T> fc1_;
  GELU<T> gelu_;
  Linear<T> fc2_;
};

}  // namespace polygrad
