#pragma once
// Layers made of named parts (MLP, MultiHeadAttention, TransformerBlock, Transformer) list their
// parts once; collect_parameters, zero_grad and init are written here, once, over that list.

#include <random>
#include <string>

#include "polygrad/layers/layer.hpp"

namespace polygrad {

/// CRTP base of a layer made of parts. Derived provides, public,
///
/// \code
///   template <class Visit> void for_each_part(Visit&& visit)
/// \endcode
/// which calls visit("name", part) for every part in parameter order (the order of a
/// checkpoint's tensors and of init()'s random draws). Each part follows the layer interface of
/// layer.hpp; Derived inherits the three members below, which walk the list.
template <class Derived, class T>
class CompositeLayer {
 public:
  /// Appends every part's parameters, a part named "p" under prefix + ".p".
  void collect_parameters(const std::string& prefix, ParameterList<T>& out) {
    self().for_each_part([&](const std::string& name, auto& part) {
      part.collect_parameters(detail::join_name(prefix, name.c_str()), out);
    });
  }

  /// Sets every gradient of every part to zero.
  void zero_grad() {
    self().for_each_part([](const std::string&, auto& part) { part.zero_grad(); });
  }

  /// Initialises the parts in order from one generator (layer.hpp: weights ~ Normal(0,
  /// stddev^2), biases zero, LayerNorm gain one and shift zero).
  void init(std::mt19937_64& rng, double stddev) {
    self().for_each_part([&](const std::string&, auto& part) { part.init(rng, stddev); });
  }

 protected:
  CompositeLayer() = default;

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

}  // namespace polygrad
