#pragma once
// Reading and writing safetensors files, the tensor format of Hugging Face and PyTorch, so that
// models, data and gradients move between polygrad and other tools without Python.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of JSON header, then the raw tensor bytes
// (little-endian, row-major). The header maps each tensor name to
//   {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}
// with offsets relative to the start of the data, plus an optional "__metadata__" object of
// string -> string. Every check below throws FormatError naming the source and what is wrong.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

// Tensor bytes are copied to and from float/double as they lie in memory, which is only right on
// a little-endian host; refuse to build elsewhere rather than produce garbage.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "polygrad/io/safetensors.hpp supports little-endian hosts only");
#endif
static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "safetensors F32/F64 are IEEE 754; this compiler's float/double are not");

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

namespace detail {

/// The dtypes of the safetensors specification and their element sizes in bytes.
inline const std::vector<std::pair<std::string, std::size_t>>& safetensors_dtypes() {
  static const std::vector<std::pair<std::string, std::size_t>> table = {
      {"F64", 8},  {"F32", 4},  {"F16", 2},     {"BF16", 2},    {"I64", 8},
      {"I32", 4},  {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},
      {"U16", 2},  {"U8", 1},   {"BOOL", 1},    {"F8_E5M2", 1}, {"F8_E4M3", 1}};
  return table;
}

/// Element size of a dtype, or 0 if the name is not a safetensors dtype.
inline std::size_t safetensors_dtype_size(const std::string& dtype) {
  for (const auto& [name, size] : safetensors_dtypes()) {
    if (name == dtype) return size;
  }
  return 0;
}

/// "F64, F32, ..." for error messages.
inline std::string safetensors_dtype_list() {
  std::string out;
  for (const auto& entry : safetensors_dtypes()) out += (out.empty() ? "" : ", ") + entry.first;
  return out;
}

/// "[2, 3]" for error messages.
inline std::string shape_string(const std::vector<Index>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

/// Byte count of a tensor, or false if a dimension is negative or the product overflows.
inline bool safetensors_byte_count(const std::vector<Index>& shape, std::size_t element_size,
                                   std::uint64_t& bytes) {
  std::uint64_t n = element_size;
  for (Index s : shape) {
    if (s < 0) return false;
    const auto dim = static_cast<std::uint64_t>(s);
    if (dim != 0 && n > std::numeric_limits<std::uint64_t>::max() / dim) return false;
    n *= dim;
  }
  bytes = n;
  return true;
}

/// Runtime twin of the static_assert above, for compilers without __BYTE_ORDER__.
inline void require_little_endian_host() {
  const std::uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  require<FormatError>(first == 1,
                       "safetensors I/O needs a little-endian host; this one is big-endian");
}

/// A tensor's place in the data section, as the header states it.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  std::vector<Index> shape;
  std::uint64_t begin = 0, end = 0;
};

/// The validated header: entries sorted by data offset, and the metadata.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
};

/// Headers larger than this are refused before parsing (the reference implementation uses the
/// same limit); real headers are kilobytes.
constexpr std::uint64_t safetensors_max_header = 100u << 20;

/// JSON nesting deeper than this cannot be a valid header (it needs 3 levels); the limit keeps
/// hostile input from exhausting the stack.
constexpr int safetensors_max_depth = 64;

inline std::uint64_t read_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// Reads a non-negative integer from a JSON value, or returns false.
inline bool json_unsigned(const nlohmann::json& v, std::uint64_t& out) {
  if (!v.is_number_unsigned()) return false;
  out = v.get<std::uint64_t>();
  return true;
}

/// Parses and validates the JSON header of a file whose data section is `data_size` bytes:
/// every entry well formed, every size consistent with its shape, and the offsets tiling the
/// data section exactly (no gap, no overlap, nothing past the end).
inline SafetensorsHeader parse_safetensors_header(const std::uint8_t* text, std::size_t length,
                                                  std::uint64_t data_size,
                                                  const std::string& source) {
  using nlohmann::json;
  json header;
  try {
    const json::parser_callback_t limit_depth = [&source](int depth, json::parse_event_t,
                                                          json&) {
      require<FormatError>(depth <= safetensors_max_depth, source,
                           ": safetensors header nests JSON deeper than ",
                           safetensors_max_depth, " levels; the file is corrupt");
      return true;
    };
    header = json::parse(text, text + length, limit_depth);
  } catch (const json::exception& e) {
    throw FormatError(concat(source, ": safetensors header is not valid JSON (", e.what(),
                             "); the file is corrupt or not a safetensors file"));
  }
  require<FormatError>(header.is_object(), source, ": safetensors header must be a JSON object, got ",
                       header.type_name());

  SafetensorsHeader result;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      require<FormatError>(value.is_object(), source,
                           ": \"__metadata__\" must be an object of strings, got ", value.type_name());
      for (const auto& [key, text_value] : value.items()) {
        require<FormatError>(text_value.is_string(), source, ": metadata entry \"", key,
                             "\" must be a string, got ", text_value.type_name());
        result.metadata[key] = text_value.get<std::string>();
      }
      continue;
    }
    const std::string where = concat(source, ": tensor '", name, "'");
    require<FormatError>(value.is_object(), where, " must be described by a JSON object, got ",
                         value.type_name());
    SafetensorsEntry entry;
    entry.name = name;

    const auto dtype = value.find("dtype");
    require<FormatError>(dtype != value.end(), where, " has no \"dtype\"");
    require<FormatError>(dtype->is_string(), where, ": \"dtype\" must be a string, got ",
                         dtype->type_name());
    entry.dtype = dtype->get<std::string>();
    const std::size_t element_size = safetensors_dtype_size(entry.dtype);
    require<FormatError>(element_size != 0, where, " has unknown dtype \"", entry.dtype,
                         "\"; supported dtypes: ", safetensors_dtype_list());

    const auto shape = value.find("shape");
    require<FormatError>(shape != value.end(), where, " has no \"shape\"");
    require<FormatError>(shape->is_array(), where, ": \"shape\" must be an array, got ",
                         shape->type_name());
    for (const auto& dim : *shape) {
      std::uint64_t d = 0;
      require<FormatError>(json_unsigned(dim, d), where,
                           ": \"shape\" must hold non-negative integers, got ", dim.dump());
      require<FormatError>(d <= static_cast<std::uint64_t>(std::numeric_limits<Index>::max()), where,
                           ": dimension ", d, " is too large");
      entry.shape.push_back(static_cast<Index>(d));
    }

    const auto offsets = value.find("data_offsets");
    require<FormatError>(offsets != value.end(), where, " has no \"data_offsets\"");
    require<FormatError>(offsets->is_array() && offsets->size() == 2 &&
                             json_unsigned((*offsets)[0], entry.begin) &&
                             json_unsigned((*offsets)[1], entry.end),
                         where, ": \"data_offsets\" must be [begin, end], two non-negative integers, got ",
                         offsets->dump());
    require<FormatError>(entry.begin <= entry.end, where, ": data_offsets [", entry.begin, ", ",
                         entry.end, "] end before they begin");
    require<FormatError>(entry.end <= data_size, where, ": data_offsets [", entry.begin, ", ",
                         entry.end, "] reach past the end of the data section (", data_size,
                         " bytes); the file is truncated or corrupt");

    std::uint64_t expected = 0;
    require<FormatError>(safetensors_byte_count(entry.shape, element_size, expected), where,
                         ": shape ", shape_string(entry.shape), " overflows a 64-bit byte count");
    require<FormatError>(expected == entry.end - entry.begin, where, ": shape ",
                         shape_string(entry.shape), " of ", entry.dtype, " needs ", expected,
                         " bytes, but data_offsets [", entry.begin, ", ", entry.end, "] hold ",
                         entry.end - entry.begin);
    result.entries.push_back(std::move(entry));
  }

  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::sort(result.entries.begin(), result.entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const auto& entry : result.entries) {
    require<FormatError>(entry.begin >= covered, source, ": tensor '", entry.name,
                         "' (bytes ", entry.begin, "..", entry.end, ") overlaps tensor '",
                         previous ? previous->name : std::string(), "' (ending at ", covered,
                         "); the file is corrupt");
    require<FormatError>(entry.begin == covered, source, ": bytes ", covered, "..", entry.begin,
                         " of the data section belong to no tensor (gap before '", entry.name,
                         "'); the file is corrupt");
    covered = entry.end;
    previous = &entry;
  }
  require<FormatError>(covered == data_size, source, ": the data section has ", data_size,
                       " bytes but the tensors cover only ", covered,
                       "; the header does not describe the whole file");
  return result;
}

/// Checks the first 8 bytes of a file of `file_size` bytes and returns the header length.
inline std::uint64_t check_safetensors_prefix(const std::uint8_t* prefix, std::uint64_t file_size,
                                              const std::string& source) {
  require<FormatError>(file_size >= 8, source, ": file is ", file_size,
                       " bytes long, shorter than the 8-byte header length; it is truncated or "
                       "not a safetensors file");
  const std::uint64_t header_size = read_u64_le(prefix);
  require<FormatError>(header_size <= safetensors_max_header, source, ": header length ",
                       header_size, " is absurdly large (limit ", safetensors_max_header,
                       " bytes); the file is corrupt or not a safetensors file");
  require<FormatError>(header_size <= file_size - 8, source, ": header length ", header_size,
                       " reaches past the end of the file (", file_size,
                       " bytes); the file is truncated or not a safetensors file");
  return header_size;
}

/// Converts n values stored as float or double (little-endian bytes) to T, rounding doubles
/// outside float's range to +-infinity (a plain cast would be undefined behaviour).
template <class T, class Stored>
void convert_stored(const std::uint8_t* bytes, Index n, T* out) {
  if (n == 0) return;
  if constexpr (std::is_same_v<T, Stored>) {
    std::memcpy(out, bytes, static_cast<std::size_t>(n) * sizeof(T));
  } else {
    for (Index i = 0; i < n; ++i) {
      Stored v;
      std::memcpy(&v, bytes + i * sizeof(Stored), sizeof(Stored));
      if constexpr (sizeof(T) < sizeof(Stored)) {
        constexpr Stored top = static_cast<Stored>(std::numeric_limits<T>::max());
        if (v > top) {
          out[i] = std::numeric_limits<T>::infinity();
          continue;
        }
        if (v < -top) {
          out[i] = -std::numeric_limits<T>::infinity();
          continue;
        }
      }
      out[i] = static_cast<T>(v);
    }
  }
}

}  // namespace detail

/// A safetensors file in memory: tensors by name (kept sorted) and the string metadata.
///
///     SafetensorsFile f = SafetensorsFile::read("model.safetensors");
///     Matrix<double> w = f.matrix<double>("blocks.0.attn.q.weight");
///     f.add("grad.input", dX);  f.metadata()["note"] = "...";  f.write("out.safetensors");
class SafetensorsFile {
 public:
  /// Reads and validates a file. Throws FormatError if it is missing, unreadable or malformed.
  static SafetensorsFile read(const std::string& path) {
    detail::require_little_endian_host();
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    require<FormatError>(std::filesystem::exists(status), "cannot read ", path,
                         ": no such file");
    require<FormatError>(!std::filesystem::is_directory(status), "cannot read ", path,
                         ": it is a directory, not a safetensors file");
    std::ifstream in(path, std::ios::binary);
    require<FormatError>(in.is_open(), "cannot open ", path, ": ", std::strerror(errno));
    in.seekg(0, std::ios::end);
    const std::streamoff end = in.tellg();
    require<FormatError>(end >= 0, "cannot read ", path, ": its size is unknown");
    in.seekg(0, std::ios::beg);
    const auto file_size = static_cast<std::uint64_t>(end);

    std::uint8_t prefix[8] = {};
    if (file_size >= 8) read_exactly(in, prefix, 8, path);
    const std::uint64_t header_size = detail::check_safetensors_prefix(prefix, file_size, path);
    std::vector<std::uint8_t> text(static_cast<std::size_t>(header_size));
    read_exactly(in, text.data(), text.size(), path);
    const std::uint64_t data_size = file_size - 8 - header_size;
    auto header = detail::parse_safetensors_header(text.data(), text.size(), data_size, path);

    // Entries tile the data section in offset order, so the tensors are read front to back
    // straight into their own buffers (no second copy of the whole file).
    SafetensorsFile file;
    file.source_ = path;
    file.metadata_ = std::move(header.metadata);
    for (auto& entry : header.entries) {
      SafetensorsTensor tensor{entry.dtype, std::move(entry.shape), {}};
      tensor.bytes.resize(static_cast<std::size_t>(entry.end - entry.begin));
      read_exactly(in, tensor.bytes.data(), tensor.bytes.size(), path);
      file.tensors_[entry.name] = std::move(tensor);
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
    nlohmann::json header = nlohmann::json::object();
    std::uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors_) {
      header[name] = {{"dtype", tensor.dtype},
                      {"shape", tensor.shape},
                      {"data_offsets", {offset, offset + tensor.bytes.size()}}};
      offset += tensor.bytes.size();
    }
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(detail::concat("cannot write ", source_,
                                       ": a tensor name or metadata string is not valid UTF-8 (",
                                       e.what(), ")"));
    }
    text.append((8 - text.size() % 8) % 8, ' ');

    std::vector<std::uint8_t> out;
    out.reserve(8 + text.size() + static_cast<std::size_t>(offset));
    const std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
    out.insert(out.end(), text.begin(), text.end());
    for (const auto& entry : tensors_) {
      out.insert(out.end(), entry.second.bytes.begin(), entry.second.bytes.end());
    }
    return out;
  }

  /// Writes the file (see serialize()); a temporary file is renamed into place, so a failed
  /// write never leaves a half-written file under `path`.
  void write(const std::string& path) const {
    const std::vector<std::uint8_t> bytes = serialize();
    const std::string temporary = path + ".tmp";
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      require<FormatError>(out.is_open(), "cannot write ", path, ": ", std::strerror(errno));
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
      out.close();
      if (!out) {
        std::remove(temporary.c_str());
        throw FormatError(detail::concat("cannot write ", path, ": writing ", bytes.size(),
                                         " bytes failed (disk full?)"));
      }
    }
    if (std::rename(temporary.c_str(), path.c_str()) != 0) {
      const std::string reason = std::strerror(errno);
      std::remove(temporary.c_str());
      throw FormatError(detail::concat("cannot write ", path, ": ", reason));
    }
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
    if (it == tensors_.end()) {
      std::string available;
      std::size_t listed = 0;
      for (const auto& entry : tensors_) {
        if (listed == 6) {
          available += ", ...";
          break;
        }
        available += (listed++ ? ", " : "") + entry.first;
      }
      throw FormatError(detail::concat(
          source_, ": no tensor named '", name, "'; ",
          tensors_.empty() ? std::string("the file holds no tensors")
                           : detail::concat("it holds ", tensors_.size(), " (", available, ")")));
    }
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
    add_raw(name, dtype, shape,
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
    require<FormatError>(name != "__metadata__",
                         "\"__metadata__\" is reserved and cannot name a tensor");
    const std::size_t element_size = detail::safetensors_dtype_size(dtype);
    require<FormatError>(element_size != 0, "cannot add tensor '", name, "': unknown dtype \"",
                         dtype, "\"; supported dtypes: ", detail::safetensors_dtype_list());
    std::uint64_t expected = 0;
    require<FormatError>(detail::safetensors_byte_count(shape, element_size, expected) &&
                             expected == bytes.size(),
                         "cannot add tensor '", name, "': shape ", detail::shape_string(shape),
                         " of ", dtype, " does not match ", bytes.size(), " bytes");
    tensors_[name] = SafetensorsTensor{dtype, shape, std::move(bytes)};
  }

  /// Removes tensor `name` if present.
  void remove(const std::string& name) { tensors_.erase(name); }

 private:
  static void read_exactly(std::ifstream& in, std::uint8_t* out, std::size_t n,
                           const std::string& path) {
    if (n == 0) return;
    in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
    require<FormatError>(in.gcount() == static_cast<std::streamsize>(n), "cannot read ", path,
                         ": the file ended early (was it changed while being read?)");
  }

  void require_rank(const std::string& name, const SafetensorsTensor& t, std::size_t rank,
                    const char* what) const {
    require<FormatError>(t.shape.size() == rank, source_, ": tensor '", name, "' has shape ",
                         detail::shape_string(t.shape), " (rank ", t.shape.size(), "), but ",
                         what, " (rank ", rank, ") was requested");
  }

  template <class T>
  void convert(const std::string& name, const SafetensorsTensor& t, T* out) const {
    if (t.dtype == "F32") {
      detail::convert_stored<T, float>(t.bytes.data(), t.numel(), out);
    } else if (t.dtype == "F64") {
      detail::convert_stored<T, double>(t.bytes.data(), t.numel(), out);
    } else {
      throw FormatError(detail::concat(source_, ": tensor '", name, "' has dtype ", t.dtype,
                                       ", which polygrad cannot convert to floating-point values; "
                                       "only F32 and F64 are supported (convert it before saving)"));
    }
  }

  std::map<std::string, SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_ = "safetensors data";
};

}  // namespace polygrad
