#pragma once
// Token embedding: row i of the output is row ids[i] of the table.

#include <vector>

#include "polygrad/core/instances.hpp"
#include "polygrad/layers/layer.hpp"

namespace polygrad {

/// A lookup table of `vocab` rows of width D. Parameter "weight" [vocab, D].
template <class T>
class Embedding {
 public:
  /// A table of `vocab` tokens, width D, zero until init() or assignment.
  Embedding(Index vocab, Index D) : vocab_(vocab), D_(D) {
    require<ShapeError>(vocab >= 1 && D >= 1,
                        "Embedding needs vocab >= 1 and D >= 1, got vocab = ", vocab, ", D = ", D);
    weight_ = Matrix<T>::Zero(vocab, D);
    weight_grad_ = Matrix<T>::Zero(vocab, D);
  }

  /// The n x D matrix of the rows `ids` (each in [0, vocab)); caches the ids.
  Matrix<T> forward(const std::vector<int>& ids) {
    require<ShapeError>(!ids.empty(), "Embedding input needs at least one token id, got none");
    Matrix<T> y(Index(ids.size()), D_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      require<Error>(ids[i] >= 0 && ids[i] < vocab_, "token id ", ids[i], " at position ", i,
                     " is outside the vocabulary [0, ", vocab_, "); check the tokenizer or ",
                     "raise vocab");
      y.row(Index(i)) = weight_.row(ids[i]);
    }
    ids_ = ids;
    cached_ = true;
    return y;
  }

  /// Accumulates dy row i into the gradient of row ids[i]. The input is discrete: no dx.
  void backward(const Matrix<T>& dy) {
    detail::require_forward(cached_, "Embedding");
    require_shape(dy, Index(ids_.size()), D_, "Embedding output gradient");
    for (std::size_t i = 0; i < ids_.size(); ++i) weight_grad_.row(ids_[i]) += dy.row(Index(i));
    cached_ = false;
  }

  /// Appends "prefix.weight".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    out.push_back(detail::view_of(detail::join_name(prefix, "weight"), weight_, weight_grad_,
                                  ParameterRole::embedding));
  }

  /// Sets the gradient to zero.
  void zero_grad() { weight_grad_.setZero(); }

  /// Table entries ~ Normal(0, stddev^2).
  void init(std::mt19937_64& rng, double stddev) { detail::fill_normal(weight_, rng, stddev); }

  /// Vocabulary size.
  Index vocab() const { return vocab_; }
  /// Width D.
  Index dim() const { return D_; }
  /// The table, [vocab, D].
  Matrix<T>& weight() { return weight_; }
  /// The table, read-only.
  const Matrix<T>& weight() const { return weight_; }

 private:
  Index vocab_, D_;
  Matrix<T> weight_, weight_grad_;  // (vocab, D)
  std::vector<int> ids_;            // cached for backward: the token ids
  bool cached_ = false;
};

// Compiled instances (core/instances.hpp).
#define POLYGRAD_EMBEDDING_INSTANCES(how, T) how class Embedding<T>;
POLYGRAD_INSTANCES(POLYGRAD_EMBEDDING_INSTANCES)

}  // namespace polygrad
