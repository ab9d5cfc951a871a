#pragma once
// A LanguageModel in one safetensors file: its parameters (as parameters() names them) and its
// configuration in the metadata -- the Transformer's fields (io/checkpoint.hpp) plus "model"
// ("LanguageModel"), "vocab" and "context". Callers may add metadata of their own (a tokenizer,
// a training step); loading ignores keys it does not know.

#include <map>
#include <memory>
#include <string>

#include "polygrad/io/checkpoint.hpp"
#include "polygrad/layers/language_model.hpp"

namespace polygrad {

/// The metadata save_language_model records for `config`.
inline std::map<std::string, std::string> language_model_metadata(
    const LanguageModelConfig& config) {
  auto m = transformer_metadata(config.transformer);
  m["model"] = "LanguageModel";
  m["vocab"] = std::to_string(config.vocab);
  m["context"] = std::to_string(config.context);
  return m;
}

/// The configuration in a LanguageModel file's metadata; `source` names the file in errors.
/// Throws FormatError if a field is missing or malformed or the configuration is invalid.
inline LanguageModelConfig language_model_config(const std::map<std::string, std::string>& metadata,
                                                 const std::string& source) {
  const auto kind = metadata.find("model");
  require<FormatError>(kind != metadata.end() && kind->second == "LanguageModel", source,
                       ": not a LanguageModel file (metadata \"model\" is ",
                       kind == metadata.end() ? std::string("missing") : "\"" + kind->second + "\"",
                       "); write it with save_language_model");
  LanguageModelConfig c;
  c.transformer = transformer_config(metadata, source);
  c.vocab = detail::metadata_index(metadata, "vocab", source);
  c.context = detail::metadata_index(metadata, "context", source);
  try {
    c.validate();
  } catch (const Error& e) {
    throw FormatError(detail::concat(source, ": metadata describes an invalid model: ", e.what()));
  }
  return c;
}

/// Saves `model`'s parameters (F32 for float, F64 for double) and configuration to `path`, with
/// `extra` metadata added (its keys must not be the configuration's).
template <class T>
void save_language_model(const std::string& path, LanguageModel<T>& model,
                         const std::map<std::string, std::string>& extra = {}) {
  auto metadata = language_model_metadata(model.config());
  for (const auto& [key, value] : extra) {
    require<Error>(metadata.emplace(key, value).second, "save_language_model: extra metadata \"",
                   key, "\" would overwrite the model's configuration; choose another key");
  }
  save_parameters(path, model.parameters(), metadata);
}

/// Builds the LanguageModel that `file` describes and loads its parameters (F32 or F64,
/// converted to T). `method` is the attention of every block (nullptr: ExactAttention<T>).
template <class T>
LanguageModel<T> load_language_model(const SafetensorsFile& file,
                                     std::shared_ptr<const AttentionMethod<T>> method = nullptr) {
  const LanguageModelConfig config = language_model_config(file.metadata(), file.source());
  const double D = double(config.transformer.d_model);
  detail::require_values_for(file, detail::transformer_parameter_count(config.transformer) +
                                       (2 * double(config.vocab) + double(config.context)) * D);
  LanguageModel<T> model(config, std::move(method));
  restore_parameters(file, model.parameters());
  return model;
}

/// Reads `path` and returns the LanguageModel it holds (see the overload above).
template <class T>
LanguageModel<T> load_language_model(const std::string& path,
                                     std::shared_ptr<const AttentionMethod<T>> method = nullptr) {
  return load_language_model<T>(SafetensorsFile::read(path), std::move(method));
}

}  // namespace polygrad
