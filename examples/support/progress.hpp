#pragma once
// Progress lines for the example programs, on stderr so that stdout stays a clean report.
//
// On a terminal the current line is redrawn in place ("\r"); otherwise (a log file, CI) each
// update is printed as its own line, but at most one every few seconds, so logs stay readable.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace polygrad::examples {

/// Reports "what: step i/n (detail)" with the elapsed time. Quiet mode prints nothing.
class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  /// `quiet` silences everything; `log_interval` limits lines when stderr is not a terminal.
  explicit Progress(bool quiet = false, double log_interval_s = 5.0)
      : quiet_(quiet), interval_(log_interval_s), start_(Clock::now()) {
#if defined(__unix__) || defined(__APPLE__)
    tty_ = isatty(fileno(stderr)) != 0;
#endif
  }
  ~Progress() { done(); }

  /// Seconds since construction.
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  /// Shows `message`; `force` prints it even inside the log interval (use it for milestones).
  void update(const std::string& message, bool force = false) {
    if (quiet_) return;
    const double now = elapsed();
    std::fflush(stdout);  // what the program printed so far comes before this line in a shared log
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[%7.1fs] ", now);
    if (tty_) {
      // Pad to erase a longer previous line.
      std::string line = stamp + message;
      const std::size_t width = line.size();
      if (line.size() < last_width_) line.append(last_width_ - line.size(), ' ');
      last_width_ = width;
      std::fprintf(stderr, "\r%s", line.c_str());
      std::fflush(stderr);
      open_ = true;
    } else if (force || now - last_ >= interval_) {
      std::fprintf(stderr, "%s%s\n", stamp, message.c_str());
      last_ = now;
    }
  }

  /// Runs work() while a background thread shows "message (t s)" with the time it has taken so
  /// far: every second on a terminal, every log interval otherwise. Returns what work() returns.
  template <class Work>
  auto during(const std::string& message, Work&& work) -> decltype(work()) {
    const Clock::time_point begin = Clock::now();
    update(message, true);
    struct Heartbeat {
      Progress& progress;
      std::string message;
      Clock::time_point begin;
      std::mutex mutex;
      std::condition_variable wake;
      bool stop = false;
      std::thread thread;
      void loop() {
        const auto period = std::chrono::duration<double>(progress.tty_ ? 1.0 : progress.interval_);
        std::unique_lock<std::mutex> lock(mutex);
        while (!wake.wait_for(lock, period, [&] { return stop; })) {
          char took[32];
          std::snprintf(took, sizeof took, " (%.0f s)",
                        std::chrono::duration<double>(Clock::now() - begin).count());
          progress.update(message + took, true);
        }
      }
      ~Heartbeat() {
        {
          const std::lock_guard<std::mutex> lock(mutex);
          stop = true;
        }
        wake.notify_all();
        if (thread.joinable()) thread.join();
      }
    } heartbeat{*this, message, begin, {}, {}, false, {}};
    if (!quiet_) heartbeat.thread = std::thread([&heartbeat] { heartbeat.loop(); });
    return work();  // the heartbeat stops in its destructor, also when work() throws
  }

  /// Ends a redrawn line, so that the next output starts on a fresh one.
  void done() {
    if (open_) {
      std::fprintf(stderr, "\n");
      std::fflush(stderr);
      open_ = false;
      last_width_ = 0;
    }
  }

 private:
  bool quiet_, tty_ = false, open_ = false;
  double interval_, last_ = -1e9;
  std::size_t last_width_ = 0;
  Clock::time_point start_;
};

}  // namespace polygrad::examples
