#pragma once
// Checkpoints: named parameter lists and whole Transformers in safetensors files.
//
// A parameter list (core/parameter.hpp) maps to one tensor per view, under the view's name and
// with its shape ([out, in] for weights, as in PyTorch). A Transformer checkpoint adds its
// configuration to the metadata, as strings: layers, d_model, heads, d_ff, causal ("true" or
// "false") and, when set, scale and qk_norm. Loading is strict: every expected tensor must be
// present with its shape, and no unexpected tensor may be left over.

#include <charconv>
#include <cmath>
#include <limits>
#include <locale>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/parameter.hpp"
#include "polygrad/io/safetensors.hpp"
#include "polygrad/layers/transformer.hpp"

namespace polygrad {

/// Which buffer of a ParameterView to store or restore.
enum class ParameterBuffer {
  values,     ///< the parameter values (a checkpoint)
  gradients,  ///< the accumulated gradients (what polygrad_gradients writes)
};

/// Adds one tensor per parameter to `file`, named prefix + view name, with the view's shape,
/// holding its values or gradients as F32 (float) or F64 (double). Throws FormatError if two
/// views share a name.
template <class T>
void store_parameters(SafetensorsFile& file, const ParameterList<T>& params,
                      const std::string& prefix = "",
                      ParameterBuffer buffer = ParameterBuffer::values) {
  std::set<std::string> seen;
  for (const auto& p : params) {
    require<FormatError>(seen.insert(p.name).second, "cannot store parameters: the name '", p.name,
                         "' occurs twice in the parameter list");
    file.add<T>(prefix + p.name, p.shape, buffer == ParameterBuffer::values ? p.value : p.grad);
  }
}

/// Copies tensor prefix + name of `file` into each view's values (or gradients), converting
/// F32/F64 to T. Throws FormatError, before changing anything, if a tensor is missing, has
/// another shape or a dtype other than F32/F64, or if `file` holds a tensor under `prefix` that
/// no view expects (with an empty prefix: any tensor not in the list).
template <class T>
void restore_parameters(const SafetensorsFile& file, const ParameterList<T>& params,
                        const std::string& prefix = "",
                        ParameterBuffer buffer = ParameterBuffer::values) {
  const std::string& source = file.source();
  std::set<std::string> expected;
  std::vector<std::string> missing;
  for (const auto& p : params) {
    const std::string name = prefix + p.name;
    expected.insert(name);
    if (!file.has(name)) {
      missing.push_back(name);
      continue;
    }
    const auto& shape = file.shape(name);
    require<FormatError>(shape == p.shape, source, ": tensor '", name, "' has shape ",
                         detail::shape_string(shape), " but the model expects ",
                         detail::shape_string(p.shape),
                         "; the checkpoint was saved from a differently configured model");
    const auto& dtype = file.dtype(name);
    require<FormatError>(dtype == "F32" || dtype == "F64", source, ": tensor '", name,
                         "' has dtype ", dtype, "; parameters must be F32 or F64");
  }
  if (!missing.empty()) {
    std::string list;
    for (std::size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ...";
    throw FormatError(detail::concat(source, ": ", missing.size(), " expected tensor",
                                     missing.size() == 1 ? " is" : "s are", " missing (", list,
                                     "); the checkpoint does not match the model"));
  }
  std::vector<std::string> extra;
  for (const auto& name : file.names()) {
    if (name.compare(0, prefix.size(), prefix) == 0 && !expected.count(name)) extra.push_back(name);
  }
  if (!extra.empty()) {
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 5) list += ", ...";
    throw FormatError(detail::concat(source, ": ", extra.size(), " unexpected tensor",
                                     extra.size() == 1 ? "" : "s", " (", list,
                                     ") that the model has no parameter for; the checkpoint was "
                                     "saved from a different model"));
  }
  // Everything checked: now copy, so a failed load leaves the parameters as they were.
  for (const auto& p : params) {
    const std::vector<T> values = file.values<T>(prefix + p.name);
    T* target = buffer == ParameterBuffer::values ? p.value : p.grad;
    if (!values.empty()) std::copy(values.begin(), values.end(), target);
  }
}

/// Writes `params` (their values) and `metadata` to a safetensors file at `path`.
template <class T>
void save_parameters(const std::string& path, const ParameterList<T>& params,
                     const std::map<std::string, std::string>& metadata = {}) {
  SafetensorsFile file;
  store_parameters(file, params);
  file.metadata() = metadata;
  file.write(path);
}

/// Reads the file at `path` into `params` (see restore_parameters) and returns its metadata.
template <class T>
std::map<std::string, std::string> load_parameters(const std::string& path,
                                                   const ParameterList<T>& params) {
  const SafetensorsFile file = SafetensorsFile::read(path);
  restore_parameters(file, params);
  return file.metadata();
}

namespace detail {

/// A double with enough digits to read back to the same value.
inline std::string round_trip_string(double v) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(std::numeric_limits<double>::max_digits10);
  out << v;
  return out.str();
}

inline const std::string& metadata_field(const std::map<std::string, std::string>& metadata,
                                         const std::string& key, const std::string& source) {
  const auto it = metadata.find(key);
  require<FormatError>(it != metadata.end(), source, ": metadata has no \"", key,
                       "\"; a Transformer checkpoint records layers, d_model, heads, d_ff and ",
                       "causal (was it written by save_transformer?)");
  return it->second;
}

inline Index metadata_index(const std::map<std::string, std::string>& metadata,
                            const std::string& key, const std::string& source) {
  const std::string& text = metadata_field(metadata, key, source);
  long long v = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), v);
  require<FormatError>(error == std::errc() && end == text.data() + text.size(), source,
                       ": metadata \"", key, "\" must be an integer, got \"", text, "\"");
  return static_cast<Index>(v);
}

inline double metadata_double(const std::string& text, const std::string& key,
                              const std::string& source) {
  std::istringstream in(text);
  in.imbue(std::locale::classic());
  double v = 0;
  in >> v;
  require<FormatError>(!in.fail() && in.peek() == std::char_traits<char>::eof(), source,
                       ": metadata \"", key, "\" must be a number, got \"", text, "\"");
  return v;
}

/// The number of parameter values a Transformer of `config` holds (see transformer.hpp), in
/// double so that absurd configurations do not overflow.
inline double transformer_parameter_count(const TransformerConfig& c) {
  const double D = double(c.d_model), F = double(c.d_ff);
  const double per_block = 2 * D + (4 * D * D + 4 * D) + 2 * D + (F * D + F + D * F + D);
  return double(c.layers) * per_block + 2 * D;
}

/// Throws FormatError unless `file` holds about as many values as the `parameters` its metadata
/// promises. Corrupt metadata must not make a loader allocate a huge model; the slack lets a
/// small mismatch reach the precise per-tensor messages of restore_parameters instead.
inline void require_values_for(const SafetensorsFile& file, double parameters) {
  double stored = 0;
  for (const auto& entry : file.tensors()) stored += double(entry.second.numel());
  require<FormatError>(parameters <= 2 * stored + 1e6, file.source(), ": metadata describes a ",
                       "model with ", parameters, " parameters, but the file holds only ", stored,
                       " values; the checkpoint is incomplete or corrupt");
}

}  // namespace detail

/// The metadata that save_transformer records for `config`.
inline std::map<std::string, std::string> transformer_metadata(const TransformerConfig& config) {
  std::map<std::string, std::string> m;
  m["layers"] = std::to_string(config.layers);
  m["d_model"] = std::to_string(config.d_model);
  m["heads"] = std::to_string(config.heads);
  m["d_ff"] = std::to_string(config.d_ff);
  m["causal"] = config.causal ? "true" : "false";
  if (config.scale) m["scale"] = detail::round_trip_string(*config.scale);
  if (config.qk_norm) m["qk_norm"] = detail::round_trip_string(*config.qk_norm);
  return m;
}

/// The configuration recorded in a checkpoint's metadata; `source` names the file in errors.
/// Throws FormatError if a field is missing or malformed or the configuration is invalid.
inline TransformerConfig transformer_config(const std::map<std::string, std::string>& metadata,
                                            const std::string& source) {
  TransformerConfig c;
  c.layers = detail::metadata_index(metadata, "layers", source);
  c.d_model = detail::metadata_index(metadata, "d_model", source);
  c.heads = detail::metadata_index(metadata, "heads", source);
  c.d_ff = detail::metadata_index(metadata, "d_ff", source);
  const std::string& causal = detail::metadata_field(metadata, "causal", source);
  require<FormatError>(causal == "true" || causal == "false", source,
                       ": metadata \"causal\" must be \"true\" or \"false\", got \"", causal, "\"");
  c.causal = causal == "true";
  if (const auto it = metadata.find("scale"); it != metadata.end())
    c.scale = detail::metadata_double(it->second, "scale", source);
  if (const auto it = metadata.find("qk_norm"); it != metadata.end())
    c.qk_norm = detail::metadata_double(it->second, "qk_norm", source);
  try {
    c.validate();
  } catch (const Error& e) {
    throw FormatError(detail::concat(source, ": metadata describes an invalid model: ", e.what()));
  }
  return c;
}

/// Saves `model`'s parameters and configuration to `path`, as F32 (float) or F64 (double).
template <class T>
void save_transformer(const std::string& path, Transformer<T>& model) {
  save_parameters(path, model.parameters(), transformer_metadata(model.config()));
}

/// Builds the Transformer that `file` describes and loads its parameters (F32 or F64, converted
/// to T). `method` is the attention of every block (nullptr: ExactAttention<T>).
template <class T>
Transformer<T> load_transformer(const SafetensorsFile& file,
                                std::shared_ptr<const AttentionMethod<T>> method = nullptr) {
  const TransformerConfig config = transformer_config(file.metadata(), file.source());
  detail::require_values_for(file, detail::transformer_parameter_count(config));
  Transformer<T> model(config, std::move(method));
  restore_parameters(file, model.parameters());
  return model;
}

/// Reads `path` and returns the Transformer it holds (see the overload above).
template <class T>
Transformer<T> load_transformer(const std::string& path,
                                std::shared_ptr<const AttentionMethod<T>> method = nullptr) {
  return load_transformer<T>(SafetensorsFile::read(path), std::move(method));
}

}  // namespace polygrad
