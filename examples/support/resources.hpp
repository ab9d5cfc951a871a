#pragma once
// What a program measures of itself: its CPU time and its peak resident memory (Linux), so that
// the figures it reports need no outside tool.

#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <fstream>
#include <string>

namespace polygrad::examples {

/// User + system CPU seconds of this process so far, all threads.
inline double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return double(t.tv_sec) + 1e-6 * double(t.tv_usec); };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

/// Peak resident memory in MiB since the start, or since the last reset_peak_memory() where the
/// kernel allows resetting it ("VmHWM" of /proc/self/status; getrusage's ru_maxrss otherwise).
inline double peak_memory_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

/// Starts a new peak at the current resident memory (writing 5 to /proc/self/clear_refs, Linux
/// 4.0 and later). Returns false where that is not possible; the peak then counts from the start.
/// Memory that an earlier run freed is first handed back to the system (glibc keeps it
/// otherwise, and it would count as resident in the next run's peak).
inline bool reset_peak_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  std::ofstream clear("/proc/self/clear_refs");
  if (!clear) return false;
  clear << "5";
  clear.close();
  return bool(clear);
}

}  // namespace polygrad::examples
