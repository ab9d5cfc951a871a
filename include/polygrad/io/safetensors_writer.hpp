#pragma once
// Writing a safetensors file (safetensors_format.hpp) without building it in memory: tensors are
// declared with where their values come from, and write() streams them to the file in name
// order, a megabyte at a time, through a temporary that is renamed into place -- so a failed
// write (a full disk, a source that throws) leaves nothing at the target path and no temporary.
//
//     SafetensorsWriter out("grads.safetensors");
//     out.add("grad.input", dx);            // by reference: dx must live until write()
//     out.metadata()["program"] = "...";
//     out.write();

#include <fstream>
#include <functional>

#include "polygrad/io/safetensors_format.hpp"

namespace polygrad {

/// A safetensors file to be written: tensors are declared with the source of their values, and
/// write() streams them to the file in name order; nothing is left behind if it fails.
class SafetensorsWriter {
 public:
  /// Fills out[0, count) with elements [first, first + count) of a tensor, in row-major order.
  template <class T>
  using Source = std::function<void(Index first, Index count, T* out)>;

  /// A file to be written at `path` by write().
  explicit SafetensorsWriter(std::string path) : path_(std::move(path)) {}

  /// The string metadata ("__metadata__") to write.
  std::map<std::string, std::string>& metadata() { return metadata_; }

  /// Adds (or replaces) tensor `name` of `shape`, stored as F32 (float) or F64 (double), whose
  /// values write() asks `source` for, in order, in pieces of at most a megabyte.
  template <class T>
  void add(const std::string& name, const std::vector<Index>& shape, Source<T> source) {
    const char* dtype = detail::safetensors_dtype_of<T>();
    std::uint64_t bytes = 0;
    require<FormatError>(detail::safetensors_byte_count(shape, sizeof(T), bytes),
                         "cannot add tensor '", name, "': shape ", detail::shape_string(shape),
                         " has a negative dimension or is too large");
    detail::require_writable_tensor(name, dtype, shape, bytes);
    tensors_[name] = Pending{
        {name, dtype, shape, bytes},
        [source = std::move(source)](std::uint64_t first, std::uint64_t n, std::uint8_t* out) {
          source(Index(first / sizeof(T)), Index(n / sizeof(T)), reinterpret_cast<T*>(out));
        },
        sizeof(T)};
  }

  /// Adds tensor `name` from `data`, numel(shape) values that must stay valid until write().
  template <class T>
  void add(const std::string& name, const std::vector<Index>& shape, const T* data) {
    std::uint64_t bytes = 0;
    require<FormatError>(
        !detail::safetensors_byte_count(shape, sizeof(T), bytes) || bytes == 0 || data != nullptr,
        "cannot add tensor '", name, "': no data given for shape ", detail::shape_string(shape));
    add<T>(name, shape, Source<T>([data](Index first, Index count, T* out) {
             std::copy(data + first, data + first + count, out);
           }));
  }

  /// Adds a matrix ([rows, cols]) or vector ([size]) of float or double, by reference: it must
  /// stay valid and unchanged until write().
  template <class T>
  void add(const std::string& name, const Matrix<T>& m) {
    add<T>(name, {m.rows(), m.cols()}, m.data());
  }
  /// Adds a vector ([size]) of float or double, by reference, like the matrix overload.
  template <class T>
  void add(const std::string& name, const Vector<T>& v) {
    add<T>(name, {v.size()}, v.data());
  }

  /// Adds tensor `name` of any safetensors dtype from `size` raw little-endian bytes that must
  /// stay valid until write().
  void add_raw(const std::string& name, const std::string& dtype, const std::vector<Index>& shape,
               const std::uint8_t* bytes, std::uint64_t size) {
    detail::require_writable_tensor(name, dtype, shape, size);
    tensors_[name] = Pending{{name, dtype, shape, size},
                             [bytes](std::uint64_t first, std::uint64_t n, std::uint8_t* out) {
                               std::copy(bytes + first, bytes + first + n, out);
                             },
                             1};
  }

  /// The number of tensors added.
  std::size_t size() const { return tensors_.size(); }

  /// Writes the header and every tensor, in name order, to a temporary beside the target, then
  /// renames it into place. Throws FormatError (or what a source throws) after removing the
  /// temporary; the target is then as it was.
  void write() const {
    detail::require_little_endian_host();
    std::vector<detail::SafetensorsLayout> layout;
    for (const auto& [name, t] : tensors_) layout.push_back(t.layout);
    const std::string header = detail::safetensors_header_bytes(layout, metadata_, path_);
    const std::string temporary = path_ + ".tmp";
    try {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      require<FormatError>(out.is_open(), "cannot write ", path_, ": ", std::strerror(errno));
      out.write(header.data(), static_cast<std::streamsize>(header.size()));
      std::vector<std::uint8_t> buffer;
      for (const auto& [name, t] : tensors_) {
        // Pieces of whole elements, so that typed sources see whole values.
        const std::uint64_t piece =
            std::max<std::uint64_t>(chunk_bytes / t.element * t.element, t.element);
        buffer.resize(std::size_t(std::min(piece, t.layout.bytes)));
        for (std::uint64_t done = 0; done < t.layout.bytes; done += piece) {
          const std::uint64_t n = std::min(piece, t.layout.bytes - done);
          t.source(done, n, buffer.data());
          out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(n));
          require<FormatError>(bool(out), "cannot write ", path_, ": writing tensor '", name,
                               "' failed (disk full?)");
        }
      }
      out.close();
      require<FormatError>(bool(out), "cannot write ", path_,
                           ": closing the file failed (disk full?)");
    } catch (...) {
      std::remove(temporary.c_str());
      throw;
    }
    if (std::rename(temporary.c_str(), path_.c_str()) != 0) {
      const std::string reason = std::strerror(errno);
      std::remove(temporary.c_str());
      throw FormatError(detail::concat("cannot write ", path_, ": ", reason));
    }
  }

 private:
  static constexpr std::uint64_t chunk_bytes = 1 << 20;

  struct Pending {
    detail::SafetensorsLayout layout;
    std::function<void(std::uint64_t first_byte, std::uint64_t bytes, std::uint8_t* out)> source;
    std::uint64_t element = 1;  // bytes per element
  };

  std::string path_;
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace polygrad
