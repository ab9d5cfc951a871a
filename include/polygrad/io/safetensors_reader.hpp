#pragma once
// Reading a safetensors file (safetensors_format.hpp) without holding it in memory: the header
// is read and validated when the file is opened, and each tensor, or a range of its rows, is
// read when asked, straight into the caller's matrix.
//
//     SafetensorsReader file("data.safetensors");
//     Matrix<float> x = file.read_matrix<float>("input");          // the whole tensor
//     Matrix<float> part = file.read_rows<float>("input", 1024, 512);  // rows [1024, 1536)

#include <filesystem>
#include <fstream>

#include "polygrad/io/safetensors_format.hpp"

namespace polygrad {

/// A safetensors file open for reading: its header is parsed and checked on opening, and
/// tensors, or ranges of their rows, are read on demand into the caller's buffers.
class SafetensorsReader {
 public:
  /// Opens `path` and validates its header. Throws FormatError if the file is missing,
  /// unreadable or malformed.
  explicit SafetensorsReader(const std::string& path) : path_(path) {
    detail::require_little_endian_host();
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    require<FormatError>(std::filesystem::exists(status), "cannot read ", path, ": no such file");
    require<FormatError>(!std::filesystem::is_directory(status), "cannot read ", path,
                         ": it is a directory, not a safetensors file");
    in_.open(path, std::ios::binary);
    require<FormatError>(in_.is_open(), "cannot open ", path, ": ", std::strerror(errno));
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    require<FormatError>(end >= 0, "cannot read ", path, ": its size is unknown");
    const auto file_size = static_cast<std::uint64_t>(end);
    in_.seekg(0, std::ios::beg);
    std::uint8_t prefix[8] = {};
    if (file_size >= 8) read_exactly(prefix, 8, "the header length");
    const std::uint64_t header_size = detail::check_safetensors_prefix(prefix, file_size, path);
    std::vector<std::uint8_t> text(static_cast<std::size_t>(header_size));
    read_exactly(text.data(), text.size(), "the header");
    data_start_ = 8 + header_size;
    auto header =
        detail::parse_safetensors_header(text.data(), text.size(), file_size - data_start_, path);
    metadata_ = std::move(header.metadata);
    for (auto& entry : header.entries) {
      order_.push_back(entry.name);
      entries_.emplace(entry.name, std::move(entry));
    }
  }

  /// The path read.
  const std::string& path() const { return path_; }
  /// The string metadata ("__metadata__").
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
  }
  /// The tensor names in the order of their data in the file.
  const std::vector<std::string>& names_in_file_order() const { return order_; }
  /// True if a tensor of this name exists.
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  /// The shape of tensor `name`; FormatError if there is none.
  const std::vector<Index>& shape(const std::string& name) const { return entry(name).shape; }
  /// The dtype of tensor `name` ("F32", "F64", ...).
  const std::string& dtype(const std::string& name) const { return entry(name).dtype; }
  /// The number of elements of tensor `name`.
  Index numel(const std::string& name) const {
    Index n = 1;
    for (Index s : shape(name)) n *= s;
    return n;
  }

  /// Elements [first, first + count) of tensor `name` in row-major order, converted from F32 or
  /// F64 to T (doubles beyond float's range become +-infinity), into out[0, count). Throws
  /// FormatError for a range outside the tensor, another dtype, or a file that ends early.
  template <class T>
  void read_elements(const std::string& name, Index first, Index count, T* out) {
    const detail::SafetensorsEntry& e = entry(name);
    const Index total = numel(name);
    require<FormatError>(first >= 0 && count >= 0 && first + count <= total, path_, ": elements [",
                         first, ", ", first + count, ") of tensor '", name, "' were asked for, ",
                         "but it has ", total, " (shape ", detail::shape_string(e.shape), ")");
    if (e.dtype == "F32") {
      read_converted<T, float>(e, first, count, out);
    } else if (e.dtype == "F64") {
      read_converted<T, double>(e, first, count, out);
    } else {
      throw FormatError(
          detail::concat(path_, ": tensor '", name, "' has dtype ", e.dtype,
                         ", which polygrad cannot convert to floating-point values; ",
                         "only F32 and F64 are supported (convert it before saving)"));
    }
  }

  /// Rows [begin, begin + count) of tensor `name` along its first dimension, as a
  /// count x (product of the other dimensions) matrix (a [n, D] tensor gives count x D).
  template <class T>
  Matrix<T> read_rows(const std::string& name, Index begin, Index count) {
    const std::vector<Index>& s = shape(name);
    require<FormatError>(!s.empty(), path_, ": tensor '", name, "' is a scalar; it has no rows");
    const Index row = s[0] == 0 ? 0 : numel(name) / s[0];
    require<FormatError>(begin >= 0 && count >= 0 && begin + count <= s[0], path_, ": rows [",
                         begin, ", ", begin + count, ") of tensor '", name,
                         "' were asked for, but it has ", s[0], " (shape ", detail::shape_string(s),
                         ")");
    Matrix<T> out(count, row);
    read_elements(name, begin * row, count * row, out.data());
    return out;
  }

  /// Tensor `name`, which must have rank 2, as a rows x cols matrix of T.
  template <class T>
  Matrix<T> read_matrix(const std::string& name) {
    require_rank(name, 2, "a matrix");
    return read_rows<T>(name, 0, shape(name)[0]);
  }

  /// Tensor `name`, which must have rank 1, as a vector of T.
  template <class T>
  Vector<T> read_vector(const std::string& name) {
    require_rank(name, 1, "a vector");
    Vector<T> out(shape(name)[0]);
    read_elements(name, 0, out.size(), out.data());
    return out;
  }

  /// The raw bytes of tensor `name`, whatever its dtype.
  std::vector<std::uint8_t> read_bytes(const std::string& name) {
    const detail::SafetensorsEntry& e = entry(name);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(e.end - e.begin));
    seek(e.begin);
    read_exactly(bytes.data(), bytes.size(), "tensor '" + name + "'");
    return bytes;
  }

 private:
  // Conversions go through a buffer of this many bytes; values of the stored type T go straight
  // into the caller's memory.
  static constexpr std::size_t chunk_bytes = 1 << 20;

  const detail::SafetensorsEntry& entry(const std::string& name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) throw detail::missing_tensor(path_, name, entries_);
    return it->second;
  }

  void require_rank(const std::string& name, std::size_t rank, const char* what) const {
    const std::vector<Index>& s = shape(name);
    require<FormatError>(s.size() == rank, path_, ": tensor '", name, "' has shape ",
                         detail::shape_string(s), " (rank ", s.size(), "), but ", what, " (rank ",
                         rank, ") was requested");
  }

  template <class T, class Stored>
  void read_converted(const detail::SafetensorsEntry& e, Index first, Index count, T* out) {
    if (count == 0) return;
    seek(e.begin + std::uint64_t(first) * sizeof(Stored));
    const std::string what = "tensor '" + e.name + "'";
    if constexpr (std::is_same_v<T, Stored>) {
      read_exactly(reinterpret_cast<std::uint8_t*>(out), std::size_t(count) * sizeof(T), what);
    } else {
      std::vector<std::uint8_t> buffer(chunk_bytes);
      const Index per_chunk = Index(chunk_bytes / sizeof(Stored));
      for (Index done = 0; done < count; done += per_chunk) {
        const Index n = std::min(per_chunk, count - done);
        read_exactly(buffer.data(), std::size_t(n) * sizeof(Stored), what);
        detail::convert_stored<T, Stored>(buffer.data(), n, out + done);
      }
    }
  }

  void seek(std::uint64_t data_offset) {
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(data_start_ + data_offset), std::ios::beg);
  }

  void read_exactly(std::uint8_t* out, std::size_t n, const std::string& what) {
    if (n == 0) return;
    in_.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
    require<FormatError>(in_.gcount() == static_cast<std::streamsize>(n), "cannot read ", path_,
                         ": the file ended early while reading ", what,
                         " (was it changed or truncated while being read?)");
  }

  std::string path_;
  std::ifstream in_;
  std::uint64_t data_start_ = 0;
  std::map<std::string, detail::SafetensorsEntry> entries_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace polygrad
