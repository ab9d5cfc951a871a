#pragma once
// The character models' vocabulary: the distinct bytes of a text, sorted; a byte's token id is
// its index. Files keep it as hex in their metadata ("vocab_hex"), so that any byte survives the
// JSON header.

#include <string>

#include "polygrad/core/error.hpp"

namespace polygrad::examples {

/// The bytes as lowercase hex, two digits each.
inline std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) out += {digits[b >> 4], digits[b & 15]};
  return out;
}

/// The bytes that to_hex() wrote; FormatError naming `source` for anything else.
inline std::string from_hex(const std::string& hex, const std::string& source) {
  const auto digit = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw FormatError(detail::concat(source, ": metadata \"vocab_hex\" holds '", c,
                                     "', which is not a lowercase hex digit"));
  };
  require<FormatError>(hex.size() % 2 == 0, source, ": metadata \"vocab_hex\" has an odd number ",
                       "of digits (", hex.size(), ")");
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    out += char(digit(hex[i]) * 16 + digit(hex[i + 1]));
  return out;
}

}  // namespace polygrad::examples
