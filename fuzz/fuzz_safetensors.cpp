// libFuzzer target for the safetensors reader: any input must either parse or throw a
// polygrad::Error, never crash, leak or trip a sanitizer; whatever parses must serialise and
// parse back to the same tensors and metadata.
//
//   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPOLYGRAD_BUILD_FUZZERS=ON
//   cmake --build build-fuzz --target fuzz_safetensors
//   mkdir -p /tmp/st-corpus   # new inputs go to the first directory, not to the seeds
//   build-fuzz/fuzz/fuzz_safetensors -dict=fuzz/safetensors.dict -max_total_time=60 \
//       /tmp/st-corpus fuzz/corpus

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "polygrad/io/safetensors.hpp"

namespace {

using polygrad::Index;
using polygrad::SafetensorsFile;

/// Aborts (a crash libFuzzer reports, with the input) when an invariant fails.
void check(bool condition) {
  if (!condition) std::abort();
}

/// Calls every typed accessor on tensor `name` as T; each may throw polygrad::Error only.
template <class T>
void read_all(const SafetensorsFile& file, const std::string& name) {
  const auto& tensor = file.tensor(name);
  try {
    const std::vector<T> values = file.values<T>(name);
    check(Index(values.size()) == tensor.numel());
  } catch (const polygrad::Error&) {
  }
  try {
    const polygrad::Matrix<T> m = file.matrix<T>(name);
    check(tensor.shape.size() == 2 && m.rows() == tensor.shape[0] && m.cols() == tensor.shape[1]);
  } catch (const polygrad::Error&) {
  }
  try {
    const polygrad::Vector<T> v = file.vector<T>(name);
    check(tensor.shape.size() == 1 && v.size() == tensor.shape[0]);
  } catch (const polygrad::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  SafetensorsFile file;
  try {
    file = SafetensorsFile::parse(data, size, "fuzz input");
  } catch (const polygrad::Error&) {
    return 0;  // rejected cleanly: the expected outcome for most inputs
  }

  for (const auto& name : file.names()) {
    check(file.has(name));
    check(file.shape(name) == file.tensor(name).shape);
    check(!file.dtype(name).empty());
    read_all<float>(file, name);
    read_all<double>(file, name);
  }
  try {
    (void)file.tensor("\x01 not a tensor name");
    check(file.has("\x01 not a tensor name"));
  } catch (const polygrad::Error&) {
  }

  // Whatever parsed must serialise (no exception escapes here) and parse back unchanged.
  const std::vector<std::uint8_t> bytes = file.serialize();
  const SafetensorsFile again = SafetensorsFile::parse(bytes.data(), bytes.size(), "round trip");
  check(again.metadata() == file.metadata());
  check(again.size() == file.size());
  for (const auto& [name, tensor] : file.tensors()) {
    const auto& other = again.tensor(name);
    check(other.dtype == tensor.dtype && other.shape == tensor.shape &&
          other.bytes == tensor.bytes);
  }
  return 0;
}
