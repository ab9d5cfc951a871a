#pragma once
// safetensors files in memory (SafetensorsFile): for checkpoints and other small files, read
// whole, edited, and written back. Large tensors are better read with SafetensorsReader and
// written with SafetensorsWriter, which stream them (safetensors_reader.hpp,
// safetensors_writer.hpp); the format itself is in safetensors_format.hpp.

#include <string>
#include <vector>

#include "polygrad/io/safetensors_format.hpp"
#include "polygrad/io/safetensors_reader.hpp"
#include "polygrad/io/safetensors_writer.hpp"

namespace polygrad {

/// One tensor of a safetensors file: its dtype name, shape and raw bytes. Dtypes other than F32
/// and F64 are kept as bytes (so a file passes through unchanged) but cannot be converted.
struct SafetensorsTensor {
  std::string dtype;                ///< "F32", "F64", "BF16", "I64", ...
  std::vector<Index> shape;         ///< row-major; [] is a scalar, a 0 anywhere means empty
  std::vector<std::uint8_t> bytes;  ///< little-endian, row-major

  /// The number of elements: the product of the shape (1 for a scalar).
  Index numel() const {
    Index n = 1;
    for (Index s : shape) n *= s;
    return n;
  }
};

/// A safetensors file in memory: tensors by name (kept sorted) and the string metadata.
///
///     SafetensorsFile f = SafetensorsFile::read("model.safetensors");
///     Matrix<double> w = f.matrix<double>("blocks.0.attn.q.weight");
///     f.add("grad.input", dX);  f.metadata()["note"] = "...";  f.write("out.safetensors");
class SafetensorsFile {
 public:
  /// Reads and validates a whole file. Throws FormatError if it is missing, unreadable or
  /// malformed.
  static SafetensorsFile read(const std::string& path) {
    SafetensorsReader reader(path);
    SafetensorsFile file;
    file.source_ = path;
    file.metadata_ = reader.metadata();
    // In the order of the data, so that the file is read front to back.
    for (const std::string& name : reader.names_in_file_order()) {
      file.tensors_[name] =
          SafetensorsTensor{reader.dtype(name), reader.shape(name), reader.read_bytes(name)};
    }
    return file;
  }

  /// Parses and validates a file held in memory; `source` names it in error messages.
  static SafetensorsFile parse(const std::uint8_t* data, std::size_t size,
                               const std::string& source = "safetensors data") {
    detail::require_little_endian_host();
    const std::uint64_t header_size = detail::check_safetensors_prefix(data, size, source);
    const std::uint8_t* text = data + 8;
    const std::uint64_t data_size = size - 8 - header_size;
    auto header = detail::parse_safetensors_header(text, static_cast<std::size_t>(header_size),
                                                   data_size, source);
    const std::uint8_t* payload = text + header_size;
    SafetensorsFile file;
    file.source_ = source;
    file.metadata_ = std::move(header.metadata);
    for (auto& entry : header.entries) {
      SafetensorsTensor tensor{entry.dtype, std::move(entry.shape), {}};
      tensor.bytes.assign(payload + entry.begin, payload + entry.end);
      file.tensors_[entry.name] = std::move(tensor);
    }
    return file;
  }

  /// The complete file: header length, JSON header (tensors in name order with contiguous
  /// offsets, padded with spaces so the data starts at a multiple of 8 bytes), then the data.
  std::vector<std::uint8_t> serialize() const {
    detail::require_little_endian_host();
    const std::string header = detail::safetensors_header_bytes(layout(), metadata_, source_);
    std::vector<std::uint8_t> out(header.begin(), header.end());
    for (const auto& entry : tensors_) {
      out.insert(out.end(), entry.second.bytes.begin(), entry.second.bytes.end());
    }
    return out;
  }

  /// Writes the file (as serialize() lays it out) through SafetensorsWriter: a failed write
  /// never leaves a half-written file under `path`.
  void write(const std::string& path) const {
    SafetensorsWriter writer(path);
    writer.metadata() = metadata_;
    for (const auto& [name, t] : tensors_)
      writer.add_raw(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    writer.write();
  }

  /// True if a tensor of this name exists.
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  /// The tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : tensors_) out.push_back(entry.first);
    return out;
  }

  /// The number of tensors.
  std::size_t size() const { return tensors_.size(); }

  /// All tensors by name.
  const std::map<std::string, SafetensorsTensor>& tensors() const { return tensors_; }

  /// The tensor `name`; throws FormatError listing some available names if it is missing.
  const SafetensorsTensor& tensor(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw detail::missing_tensor(source_, name, tensors_);
    return it->second;
  }

  /// The shape of tensor `name`.
  const std::vector<Index>& shape(const std::string& name) const { return tensor(name).shape; }

  /// The dtype of tensor `name` ("F32", "F64", ...).
  const std::string& dtype(const std::string& name) const { return tensor(name).dtype; }

  /// Source named in error messages: the path read, or what parse() was given.
  const std::string& source() const { return source_; }

  /// The string metadata ("__metadata__"); edit it before write().
  std::map<std::string, std::string>& metadata() { return metadata_; }
  /// The string metadata ("__metadata__").
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The elements of tensor `name` in row-major order, converted from F32 or F64 to T (doubles
  /// beyond float's range become +-infinity). Other dtypes throw FormatError.
  template <class T>
  std::vector<T> values(const std::string& name) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "SafetensorsFile converts to float or double only");
    const SafetensorsTensor& t = tensor(name);
    std::vector<T> out(static_cast<std::size_t>(t.numel()));
    convert(name, t, out.data());
    return out;
  }

  /// Tensor `name`, which must have rank 2, as a rows x cols matrix of T.
  template <class T>
  Matrix<T> matrix(const std::string& name) const {
    const SafetensorsTensor& t = tensor(name);
    require_rank(name, t, 2, "a matrix");
    Matrix<T> out(t.shape[0], t.shape[1]);
    convert(name, t, out.data());
    return out;
  }

  /// Tensor `name`, which must have rank 1, as a vector of T.
  template <class T>
  Vector<T> vector(const std::string& name) const {
    const SafetensorsTensor& t = tensor(name);
    require_rank(name, t, 1, "a vector");
    Vector<T> out(t.shape[0]);
    convert(name, t, out.data());
    return out;
  }

  /// Adds (or replaces) tensor `name` with the given shape, copying numel values from `data`
  /// (which may be null when the shape has a 0). float is stored as F32, double as F64.
  template <class T>
  void add(const std::string& name, const std::vector<Index>& shape, const T* data) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "SafetensorsFile stores float (F32) or double (F64) only");
    const char* dtype = std::is_same_v<T, float> ? "F32" : "F64";
    std::uint64_t bytes = 0;
    require<FormatError>(detail::safetensors_byte_count(shape, sizeof(T), bytes),
                         "cannot add tensor '", name, "': shape ", detail::shape_string(shape),
                         " has a negative dimension or is too large");
    require<FormatError>(bytes == 0 || data != nullptr, "cannot add tensor '", name,
                         "': no data given for shape ", detail::shape_string(shape));
    const auto* first = reinterpret_cast<const std::uint8_t*>(data);
    add_raw(
        name, dtype, shape,
        bytes == 0 ? std::vector<std::uint8_t>() : std::vector<std::uint8_t>(first, first + bytes));
  }

  /// Adds (or replaces) tensor `name` from an Eigen matrix or vector of float or double: shape
  /// [rows] for a compile-time column vector, [rows, cols] otherwise.
  template <class Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& m) {
    using T = typename Derived::Scalar;
    const Matrix<T> dense = m;  // row-major, contiguous
    if constexpr (Derived::ColsAtCompileTime == 1) {
      add<T>(name, {dense.rows()}, dense.data());
    } else {
      add<T>(name, {dense.rows(), dense.cols()}, dense.data());
    }
  }

  /// Adds (or replaces) tensor `name` with any safetensors dtype, given its raw little-endian
  /// bytes; throws FormatError if the dtype is unknown or the byte count does not match.
  void add_raw(const std::string& name, const std::string& dtype, const std::vector<Index>& shape,
               std::vector<std::uint8_t> bytes) {
    detail::require_writable_tensor(name, dtype, shape, bytes.size());
    tensors_[name] = SafetensorsTensor{dtype, shape, std::move(bytes)};
  }

  /// Removes tensor `name` if present.
  void remove(const std::string& name) { tensors_.erase(name); }

 private:
  std::vector<detail::SafetensorsLayout> layout() const {
    std::vector<detail::SafetensorsLayout> out;
    for (const auto& [name, t] : tensors_) out.push_back({name, t.dtype, t.shape, t.bytes.size()});
    return out;
  }

  void require_rank(const std::string& name, const SafetensorsTensor& t, std::size_t rank,
                    const char* what) const {
    require<FormatError>(t.shape.size() == rank, source_, ": tensor '", name, "' has shape ",
                         detail::shape_string(t.shape), " (rank ", t.shape.size(), "), but ", what,
                         " (rank ", rank, ") was requested");
  }

  template <class T>
  void convert(const std::string& name, const SafetensorsTensor& t, T* out) const {
    if (t.dtype == "F32") {
      detail::convert_stored<T, float>(t.bytes.data(), t.numel(), out);
    } else if (t.dtype == "F64") {
      detail::convert_stored<T, double>(t.bytes.data(), t.numel(), out);
    } else {
      throw FormatError(
          detail::concat(source_, ": tensor '", name, "' has dtype ", t.dtype,
                         ", which polygrad cannot convert to floating-point values; "
                         "only F32 and F64 are supported (convert it before saving)"));
    }
  }

  std::map<std::string, SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_ = "safetensors data";
};

}  // namespace polygrad
