#pragma once
// A CSV writer for the example programs: a header row, then rows of numbers or text, quoted only
// where RFC 4180 needs it. Numbers are written with enough digits to read back exactly, or with
// the significant digits the caller asks for.

#include <cmath>
#include <fstream>
#include <limits>
#include <locale>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace polygrad::examples {

/// Collects rows and writes them to a file in one go (so a failed run leaves no half file).
class CsvWriter {
 public:
  /// A table with these column names.
  explicit CsvWriter(std::vector<std::string> columns) : columns_(std::move(columns)) {}

  /// Starts a new row; fill it with cell() in column order.
  CsvWriter& row() {
    rows_.emplace_back();
    return *this;
  }
  /// Appends a text cell to the current row.
  CsvWriter& cell(const std::string& text) {
    current().push_back(quote(text));
    return *this;
  }
  CsvWriter& cell(const char* text) { return cell(std::string(text)); }
  /// Appends a number (empty when NaN, so spreadsheets read it as missing) with `significant`
  /// digits; by default as many as read back to the same double.
  CsvWriter& cell(double value, int significant = std::numeric_limits<double>::max_digits10) {
    if (std::isnan(value)) {
      current().emplace_back();
      return *this;
    }
    std::ostringstream s;
    s.imbue(std::locale::classic());
    s.precision(significant);
    s << value;
    current().push_back(s.str());
    return *this;
  }
  CsvWriter& cell(long long value) {
    current().push_back(std::to_string(value));
    return *this;
  }
  CsvWriter& cell(int value) { return cell(static_cast<long long>(value)); }
  CsvWriter& cell(long value) { return cell(static_cast<long long>(value)); }

  /// Number of data rows so far.
  std::size_t rows() const { return rows_.size(); }

  /// The whole table as text.
  std::string text() const {
    std::string out;
    append_line(out, quoted(columns_));
    for (const auto& r : rows_) append_line(out, r);
    return out;
  }

  /// Writes text() to `path`; throws std::runtime_error if a row has the wrong number of cells
  /// or the file cannot be written.
  void write(const std::string& path) const {
    for (std::size_t i = 0; i < rows_.size(); ++i)
      if (rows_[i].size() != columns_.size())
        throw std::runtime_error(path + ": CSV row " + std::to_string(i + 1) + " has " +
                                 std::to_string(rows_[i].size()) + " cells, expected " +
                                 std::to_string(columns_.size()));
    std::ofstream out(path, std::ios::binary);
    out << text();
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + path);
  }

 private:
  std::vector<std::string>& current() {
    if (rows_.empty()) rows_.emplace_back();
    return rows_.back();
  }
  static std::string quote(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string out = "\"";
    for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
  }
  static std::vector<std::string> quoted(const std::vector<std::string>& cells) {
    std::vector<std::string> out;
    for (const auto& c : cells) out.push_back(quote(c));
    return out;
  }
  static void append_line(std::string& out, const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) out += (i ? "," : "") + cells[i];
    out += "\n";
  }

  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace polygrad::examples
