#pragma once
// The layer interface, written down once. Every layer in polygrad/layers/ follows it.
//
// A layer is a class template on the scalar T (float or double). Rows are tokens: an input x is
// n x in, an output n x out (design.md section 1).
//
//   Matrix<T> forward(const Matrix<T>& x)
//       Computes the output and caches exactly what backward() needs (each layer lists what it
//       keeps beside its cache members), in buffers that live as long as the layer, so a second
//       call of the same length allocates nothing. Checks the shape of x and that it is finite.
//   Matrix<T> backward(const Matrix<T>& dy)
//       Given dL/dy (n x out), returns dL/dx (n x in) and ACCUMULATES (+=) the parameter
//       gradients, so gradients of several sequences add up until zero_grad(). Activation
//       gradients are assigned, parameter gradients accumulated. backward() consumes the cache
//       of the last forward(): one backward per forward, as in PyTorch without retain_graph.
//       Calling it without a preceding forward() throws polygrad::Error.
//   void collect_parameters(const std::string& prefix, ParameterList<T>& out)
//       Appends a named view (core/parameter.hpp) of every parameter tensor, named
//       prefix + "." + local name ("blocks.0.attn.q" + ".weight"); an empty prefix gives the
//       local name alone. Views stay valid while the layer lives and is not moved from.
//   void zero_grad()
//       Sets every parameter gradient of the layer to zero.
//   void init(std::mt19937_64& rng, double stddev)      (layers with parameters)
//       Weights ~ Normal(0, stddev^2), biases zero, LayerNorm gain one and shift zero.
//   void set_threading(const Threading& threading)
//       The threads its passes may use (core/threading.hpp); composite layers pass it on.
//
// Layers made of parts list them once in for_each_part and inherit collect_parameters,
// zero_grad and init from CompositeLayer (composite.hpp); they prepend their parts' names to
// the location of an error that passes out of a part (within(), core/error.hpp).
//
// Row-wise layers (Linear, LayerNorm, GELU, MLP) also offer their computation on a block of
// rows, without cache or checks, which the composite layers call from their own row-block
// loops: forward_rows(...) and backward_rows(...) (or add_gradients(...)), and a Gradient
// struct shaped like the layer's parameters that one thread accumulates into over its rows;
// accumulate(g) adds one into the layer's gradients. Their passes run the rows in blocks of
// Threading::row_block, split between threads, each thread with its own Gradient, summed in
// thread order (so a run repeats exactly for a given thread count).
//
// Model classes (Transformer, LMHead) also provide `ParameterList<T> parameters()`. Weights are
// stored as in PyTorch: a Linear weight is Matrix<T> [out, in], its bias Vector<T> [out], so a
// checkpoint's tensors have the same byte layout. Layers that hold an attention context are
// move-only.

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/parameter.hpp"
#include "polygrad/core/threading.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad::detail {

/// "prefix.name", or "name" when the prefix is empty.
inline std::string join_name(const std::string& prefix, const char* name) {
  return prefix.empty() ? std::string(name) : prefix + "." + name;
}

/// Throws polygrad::Error unless a forward() has been cached for `layer`'s backward().
inline void require_forward(bool cached, const char* layer) {
  require<Error>(cached, layer, "::backward called without a preceding forward (or twice after ",
                 "one forward); call forward first: backward consumes what forward cached");
}

/// Checks that x is rows x `cols` for some rows >= 1 and finite; `what` names it in messages.
template <class T>
void require_input(const Matrix<T>& x, Index cols, const char* what) {
  require<ShapeError>(x.rows() >= 1, what, " needs at least one row (token), got 0");
  require_shape(x, x.rows(), cols, what);
  require_finite(x, what);
}

/// Throws NumericError naming the first parameter that holds NaN or infinity: checked once where
/// data enters a model (or a layer called on its own), not on every row.
template <class T>
void require_finite_parameters(const ParameterList<T>& params) {
  for (const auto& p : params) {
    if (p.values().allFinite()) continue;
    throw NumericError(concat("parameter '", p.name, "' contains ",
                              first_non_finite(as_rows(p.value, p.shape)),
                              ": the model has diverged (lower the learning rate, clip ",
                              "gradients, or restore a checkpoint)"));
  }
}

/// Adds each part's gradient into `layer` in part order (see for_row_blocks).
template <class Layer, class Gradient>
void accumulate_parts(Layer& layer, const std::vector<Gradient>& parts) {
  for (const Gradient& g : parts) layer.accumulate(g);
}

/// A standard normal sample from the raw 64-bit output of `rng` (Box-Muller). Written out
/// instead of std::normal_distribution, whose algorithm differs between standard libraries, so
/// that a seed gives the same weights everywhere.
inline double standard_normal(std::mt19937_64& rng) {
  constexpr double two_pow_minus_53 = 1.0 / 9007199254740992.0;
  const double u1 = (double(rng() >> 11) + 1.0) * two_pow_minus_53;  // (0, 1], so log is finite
  const double u2 = double(rng() >> 11) * two_pow_minus_53;          // [0, 1)
  constexpr double two_pi = 6.283185307179586476925286766559;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
}

/// Fills m with Normal(0, stddev^2) samples in row-major order.
template <class Derived>
void fill_normal(Eigen::DenseBase<Derived>& m, std::mt19937_64& rng, double stddev) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j)
      m(i, j) = static_cast<typename Derived::Scalar>(stddev * standard_normal(rng));
}

}  // namespace polygrad::detail
