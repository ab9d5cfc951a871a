#pragma once
// The safetensors format, the tensor format of Hugging Face and PyTorch: what the reader
// (safetensors_reader.hpp), the writer (safetensors_writer.hpp) and the in-memory file
// (safetensors.hpp) share.
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

namespace detail {

/// The dtypes of the safetensors specification and their element sizes in bytes.
inline const std::vector<std::pair<std::string, std::size_t>>& safetensors_dtypes() {
  static const std::vector<std::pair<std::string, std::size_t>> table = {
      {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
      {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}};
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
    const json::parser_callback_t limit_depth = [&source](int depth, json::parse_event_t, json&) {
      require<FormatError>(depth <= safetensors_max_depth, source,
                           ": safetensors header nests JSON deeper than ", safetensors_max_depth,
                           " levels; the file is corrupt");
      return true;
    };
    header = json::parse(text, text + length, limit_depth);
  } catch (const json::exception& e) {
    throw FormatError(concat(source, ": safetensors header is not valid JSON (", e.what(),
                             "); the file is corrupt or not a safetensors file"));
  }
  require<FormatError>(header.is_object(), source,
                       ": safetensors header must be a JSON object, got ", header.type_name());

  SafetensorsHeader result;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      require<FormatError>(value.is_object(), source,
                           ": \"__metadata__\" must be an object of strings, got ",
                           value.type_name());
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
      require<FormatError>(d <= static_cast<std::uint64_t>(std::numeric_limits<Index>::max()),
                           where, ": dimension ", d, " is too large");
      entry.shape.push_back(static_cast<Index>(d));
    }

    const auto offsets = value.find("data_offsets");
    require<FormatError>(offsets != value.end(), where, " has no \"data_offsets\"");
    require<FormatError>(
        offsets->is_array() && offsets->size() == 2 && json_unsigned((*offsets)[0], entry.begin) &&
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
    require<FormatError>(entry.begin >= covered, source, ": tensor '", entry.name, "' (bytes ",
                         entry.begin, "..", entry.end, ") overlaps tensor '",
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

/// One tensor's line of a header being written: name, dtype, shape and byte count.
struct SafetensorsLayout {
  std::string name, dtype;
  std::vector<Index> shape;
  std::uint64_t bytes = 0;
};

/// The 8-byte length and the JSON header of a file holding `tensors` in the given order with
/// contiguous offsets, padded with spaces so that the data starts at a multiple of 8 bytes.
/// `source` names the file in the FormatError thrown for a name or string that is not UTF-8.
inline std::string safetensors_header_bytes(const std::vector<SafetensorsLayout>& tensors,
                                            const std::map<std::string, std::string>& metadata,
                                            const std::string& source) {
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (const SafetensorsLayout& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(concat("cannot write ", source,
                             ": a tensor name or metadata string is not valid UTF-8 (", e.what(),
                             ")"));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<char>(std::uint8_t(n >> (8 * i)));
  return out + text;
}

/// Checks that a tensor can be written: a known dtype, and `bytes` matching its shape.
inline void require_writable_tensor(const std::string& name, const std::string& dtype,
                                    const std::vector<Index>& shape, std::uint64_t bytes) {
  require<FormatError>(name != "__metadata__",
                       "\"__metadata__\" is reserved and cannot name a tensor");
  const std::size_t element_size = safetensors_dtype_size(dtype);
  require<FormatError>(element_size != 0, "cannot add tensor '", name, "': unknown dtype \"", dtype,
                       "\"; supported dtypes: ", safetensors_dtype_list());
  std::uint64_t expected = 0;
  require<FormatError>(safetensors_byte_count(shape, element_size, expected) && expected == bytes,
                       "cannot add tensor '", name, "': shape ", shape_string(shape), " of ", dtype,
                       " does not match ", bytes, " bytes");
}

/// The FormatError for a tensor `name` that a file (`source`) does not hold, listing the first
/// few of the names it does hold (a map keyed by name).
template <class Map>
FormatError missing_tensor(const std::string& source, const std::string& name, const Map& held) {
  std::string available;
  std::size_t listed = 0;
  for (const auto& entry : held) {
    if (listed == 6) {
      available += ", ...";
      break;
    }
    available += (listed++ ? ", " : "") + entry.first;
  }
  return FormatError(concat(source, ": no tensor named '", name, "'; ",
                            held.empty() ? std::string("the file holds no tensors")
                                         : concat("it holds ", held.size(), " (", available, ")")));
}

/// "F32" for float, "F64" for double.
template <class T>
const char* safetensors_dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "safetensors tensors are read and written as float (F32) or double (F64)");
  return std::is_same_v<T, float> ? "F32" : "F64";
}

}  // namespace detail
}  // namespace polygrad
