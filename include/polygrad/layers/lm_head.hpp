#pragma once
// The language-model head: logits = x W^T, a Linear D -> vocab without bias.

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/linear.hpp"

namespace polygrad {

/// Maps the model's output (n x D) to logits (n x vocab). Parameter "weight" [vocab, D];
/// parameters() names it "lm_head.weight", collect_parameters() lets the caller choose.
template <class T>
class LMHead {
 public:
  /// A head from width D to `vocab` logits.
  LMHead(Index D, Index vocab) : linear_(D, vocab, /*bias=*/false) {}

  /// Logits x W^T (n x vocab); caches x.
  Matrix<T> forward(const Matrix<T>& x) { return linear_.forward(x); }

  /// Returns dx = dlogits W; accumulates dW.
  Matrix<T> backward(const Matrix<T>& dlogits) { return linear_.backward(dlogits); }

  /// Appends "prefix.weight".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    linear_.collect_parameters(prefix, out);
  }

  /// The single parameter, named "lm_head.weight".
  ParameterList<T> parameters() {
    ParameterList<T> out;
    collect_parameters("lm_head", out);
    return out;
  }

  /// Sets the gradient to zero.
  void zero_grad() { linear_.zero_grad(); }

  /// The threads forward() and backward() may use.
  void set_threading(const Threading& threading) { linear_.set_threading(threading); }

  /// W ~ Normal(0, stddev^2).
  void init(std::mt19937_64& rng, double stddev) { linear_.init(rng, stddev); }

  /// W, [vocab, D].
  Matrix<T>& weight() { return linear_.weight(); }
  /// W, read-only.
  const Matrix<T>& weight() const { return linear_.weight(); }

 private:
  Linear<T> linear_;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_LM_HEAD_INSTANCES(how, T) how class LMHead<T>;
POLYGRAD_INSTANCES(POLYGRAD_LM_HEAD_INSTANCES)

}  // namespace polygrad
