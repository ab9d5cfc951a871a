#pragma once
// The small models the layer, model, inference and optimiser tests build: one shape, from which
// each test changes the fields its case is about.

#include "polygrad/layers/config.hpp"
#include "polygrad/layers/language_model.hpp"

namespace polygrad::test {

/// The tests' small model: 2 layers of width 16 with 2 heads (d_h 8), MLP width 32, causal,
/// without QK normalisation. A test sets the fields its case is about.
inline TransformerConfig small_transformer() {
  TransformerConfig c;
  c.layers = 2;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.causal = true;
  c.qk_norm.reset();
  return c;
}

/// small_transformer() as a language model over `vocab` tokens with a context of `context`.
inline LanguageModelConfig small_language_model(Index vocab = 13, Index context = 64) {
  LanguageModelConfig c;
  c.vocab = vocab;
  c.context = context;
  c.transformer = small_transformer();
  return c;
}

}  // namespace polygrad::test
