#pragma once
// Exceptions thrown by polygrad. Every message says what was wrong and what to change.

#include <sstream>
#include <stdexcept>
#include <string>

#include "polygrad/core/types.hpp"

namespace polygrad {

/// Base class of every polygrad exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument has the wrong shape (rows, columns, head split).
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An input holds NaN or infinity, or a computation left the range where its result is valid.
class NumericError : public Error {
 public:
  using Error::Error;
};

/// A request that cannot be met as asked (a degree too high, a memory budget too small, ...).
class PlanError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or written as asked (missing, truncated, malformed).
class FormatError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace detail

/// Throws E with the concatenated message unless `condition` holds.
template <class E = Error, class... Parts>
void require(bool condition, const Parts&... message) {
  if (!condition) throw E(detail::concat(message...));
}

/// Throws ShapeError unless `m` is rows x cols; `what` names the argument in the message.
template <class Derived>
void require_shape(const Eigen::MatrixBase<Derived>& m, Index rows, Index cols, const char* what) {
  if (m.rows() != rows || m.cols() != cols) {
    throw ShapeError(detail::concat(what, " must be ", rows, " x ", cols, ", got ", m.rows(), " x ",
                                    m.cols()));
  }
}

/// Throws NumericError if `m` holds NaN or infinity; `what` names the argument in the message.
template <class Derived>
void require_finite(const Eigen::MatrixBase<Derived>& m, const char* what) {
  if (!m.allFinite()) {
    throw NumericError(detail::concat(what, " contains NaN or infinity; check the input data and ",
                                      "the learning rate (a diverged model produces this)"));
  }
}

}  // namespace polygrad
