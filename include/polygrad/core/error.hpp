#pragma once
// Exceptions thrown by polygrad. Every message says what was wrong and what to change.

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "polygrad/core/types.hpp"

namespace polygrad {

/// Base class of every polygrad exception. An error raised inside a model also says where:
/// composite layers prepend their part's name as it passes out of them (within()), so what()
/// reads "blocks.2.attn: Q contains NaN at row 17 (column 3); ...".
class Error : public std::runtime_error {
 public:
  /// An error that says `message` (what was wrong and what to change); no location yet.
  explicit Error(const std::string& message)
      : std::runtime_error(message), message_(message), text_(message) {}

  /// The location and the message: "where: message", or the message alone.
  const char* what() const noexcept override { return text_.c_str(); }
  /// What went wrong, without the location.
  const std::string& message() const { return message_; }
  /// The dotted path of the layer that raised it, as in parameter names ("blocks.2.attn");
  /// empty when it was not raised inside a model.
  const std::string& where() const { return where_; }

  /// Prepends `part` to the location (called by the layer that contains the raising one).
  void add_location(const std::string& part) {
    where_ = where_.empty() ? part : part + "." + where_;
    text_ = where_ + ": " + message_;
  }

 private:
  std::string message_, where_, text_;
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

/// "what (name)", or "" when the caller has no name for the option (OptionNames): a remedy that
/// the caller cannot apply is left out of a message.
inline std::string named(const std::string& what, const std::string& name) {
  return name.empty() ? std::string() : what + " (" + name + ")";
}

/// The non-empty remedies as a list: "a", "a or b", "a, b or c".
inline std::string one_of(const std::vector<std::string>& remedies) {
  std::vector<std::string> given;
  for (const std::string& r : remedies) {
    if (!r.empty()) given.push_back(r);
  }
  std::string out;
  for (std::size_t i = 0; i < given.size(); ++i) {
    if (i > 0) out += i + 1 == given.size() ? " or " : ", ";
    out += given[i];
  }
  return out;
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
    throw ShapeError(
        detail::concat(what, " must be ", rows, " x ", cols, ", got ", m.rows(), " x ", m.cols()));
  }
}

namespace detail {

/// "NaN at row 17 (column 3)" for the first entry of m, in row-major order, that is not finite
/// ("at index 4" for a vector); empty if every entry is finite.
template <class Derived>
std::string first_non_finite(const Eigen::DenseBase<Derived>& m) {
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) {
      const auto x = m(i, j);
      if (std::isfinite(x)) continue;
      const char* kind = std::isnan(x) ? "NaN" : "infinity";
      if (m.cols() == 1) return concat(kind, " at index ", i);
      return concat(kind, " at row ", i, " (column ", j, ")");
    }
  }
  return {};
}

}  // namespace detail

/// Throws NumericError if `m` holds NaN or infinity, naming the first such entry's row; `what`
/// names the argument in the message.
template <class Derived>
void require_finite(const Eigen::MatrixBase<Derived>& m, const char* what) {
  if (!m.allFinite()) {
    throw NumericError(detail::concat(what, " contains ", detail::first_non_finite(m),
                                      "; check the input data and the learning rate (a diverged ",
                                      "model produces this)"));
  }
}

/// Runs f(); a polygrad Error that leaves it gets `part` prepended to its location (see
/// Error::where) and goes on, its type unchanged. Composite layers wrap their parts' calls in it.
template <class F>
decltype(auto) within(const std::string& part, F&& f) {
  try {
    return f();
  } catch (Error& e) {
    e.add_location(part);
    throw;
  }
}

}  // namespace polygrad
