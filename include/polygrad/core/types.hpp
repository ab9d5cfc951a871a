#pragma once
// Matrix aliases used throughout polygrad.
//
// Rows are tokens. Every activation is an n x d row-major matrix, so one token's features are
// contiguous and a weight stored [out, in] has the same byte layout as a PyTorch tensor.

#include <cstdint>

// GCC 12 reports the deliberately undefined registers inside its own AVX-512 intrinsics as
// (maybe) uninitialised where Eigen's packet functions use them (GCC bug 105593, fixed in GCC 13); the
// report is placed in the headers read here, so it is silenced for them alone.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop
#else
#include <Eigen/Dense>
#endif

/// Transformer gradients in almost linear time: layers and models, exact and polynomial-method
/// attention, losses, optimisers, safetensors files and sequences split across processes.
/// docs/architecture.md maps the headers; docs/design.md gives the mathematics.
namespace polygrad {

/// Sizes and indices: Eigen's signed index type (std::ptrdiff_t by default).
using Index = Eigen::Index;

/// A dynamic row-major matrix of T; activations are (n, d) with one token per row.
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A dynamic column vector of T.
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// A dynamic row vector of T.
template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// A view of a row-major matrix or of a block of one (rows of it, or one head's columns of an
/// n x (H d_h) matrix): contiguous rows at any row stride, no copy. Kernels take these so that
/// callers pass row blocks and heads without copying them out.
template <class T>
using MatrixRef = Eigen::Ref<Matrix<T>>;
/// A read-only MatrixRef; it also binds to expressions, which it evaluates into a temporary.
template <class T>
using ConstMatrixRef = Eigen::Ref<const Matrix<T>>;
/// A writable view of a vector or of a contiguous segment of one.
template <class T>
using VectorRef = Eigen::Ref<Vector<T>>;
/// A read-only VectorRef.
template <class T>
using ConstVectorRef = Eigen::Ref<const Vector<T>>;

namespace detail {
/// Blocks template argument deduction, so that T is taken from the other arguments and an
/// Eigen::Ref parameter still accepts any matrix expression of T.
template <class T>
struct non_deduced {
  using type = T;
};
template <class T>
using non_deduced_t = typename non_deduced<T>::type;
}  // namespace detail

}  // namespace polygrad
