#pragma once
// A path in the temporary directory for a test's files, unique to the process, removed (with a
// writer's temporary beside it) when the test ends.

#include <unistd.h>
#include <filesystem>
#include <string>

namespace polygrad::test {

struct TempPath {
  std::string path;
  explicit TempPath(const std::string& stem)
      : path((std::filesystem::temp_directory_path() /
              ("polygrad_test_" + std::to_string(::getpid()) + "_" + stem))
                 .string()) {}
  ~TempPath() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    std::filesystem::remove(path + ".tmp", ec);
  }
  bool exists() const { return std::filesystem::exists(path); }
  bool temporary_exists() const { return std::filesystem::exists(path + ".tmp"); }
};

}  // namespace polygrad::test
