#pragma once
// Numbers and counts as the programs print them: one place for the formats of every table and
// report line.

#include <cmath>
#include <iomanip>
#include <sstream>
#include <string>

namespace polygrad::examples {

/// v with `precision` digits after the point: fixed(2.0 / 3, 3) == "0.667".
inline std::string fixed(double v, int precision) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

/// v in scientific notation with `precision` digits after the point: "6.67e-01".
inline std::string scientific(double v, int precision) {
  std::ostringstream s;
  s << std::scientific << std::setprecision(precision) << v;
  return s.str();
}

/// v with `digits` significant digits, in fixed notation where that is short: "0.00412",
/// "12.3", "2283" (digits 3). For durations that may be small, where fixed(v, 1) would say 0.0.
inline std::string significant(double v, int digits) {
  std::ostringstream s;
  s << std::setprecision(digits) << v;
  return s.str();
}

/// A relative change as a signed percentage, "+1.234%" or "-0.012%"; one too small for three
/// decimals in scientific notation ("+2.1e-06%") rather than as "-0.000%".
inline std::string percent_change(double fraction) {
  const double percent = 100 * fraction;
  const bool tiny = percent != 0 && std::abs(percent) < 5e-4;
  return (percent >= 0 ? "+" : "") + (tiny ? scientific(percent, 1) : fixed(percent, 3)) + "%";
}

/// "1 layer", "2 layers": `count` and the noun, plural unless count is 1.
inline std::string count_of(long long count, const std::string& noun) {
  return std::to_string(count) + ' ' + noun + (count == 1 ? "" : "s");
}

}  // namespace polygrad::examples
