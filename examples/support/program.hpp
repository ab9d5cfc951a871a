#pragma once
// What every example program does the same way: command-line errors, run-time errors, the
// scalar type chosen by --dtype, and timing.
//
// Exit status: 0 success, 1 a run-time error ("<program>: <message>" on stderr), 2 a usage error
// (the message and the usage text on stderr).

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "polygrad/core/types.hpp"

namespace polygrad::examples {

/// Parses argv; on a usage error prints it with the usage text and returns 2, on --help prints
/// the help and returns 0, otherwise returns -1 (go on). `check` runs after a successful parse and
/// may throw CLI::ParseError for combinations CLI11 cannot express.
template <class Check>
int parse_command_line(CLI::App& app, int argc, char** argv, Check&& check) {
  try {
    app.parse(argc, argv);
    check();
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << app.get_name() << ": " << e.what() << "\n\n" << app.help();
    return 2;
  }
  return -1;
}

/// Runs body(); reports an exception as "<program>: <message>" and returns 1, else returns 0.
template <class Body>
int run_program(const std::string& program, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    // polygrad::Error above all; std::bad_alloc and I/O errors are reported the same way.
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}

/// Calls body(T{}) with T = float or double as `dtype` says (checked by the parser).
template <class Body>
void with_dtype(const std::string& dtype, Body&& body) {
  if (dtype == "float") {
    body(float{});
  } else {
    body(double{});
  }
}

/// Wall-clock seconds since construction or the last restart().
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void restart() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

/// "12.3 s".
inline std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", seconds);
  return text;
}

/// ||a - b||_F / ||b||_F in double (b is the reference); ||a - b||_F when b is zero.
template <class A, class B>
double relative_error(const A& a, const B& b) {
  const double diff = (a.template cast<double>() - b.template cast<double>()).norm();
  const double norm = b.template cast<double>().norm();
  return norm > 0 ? diff / norm : diff;
}

}  // namespace polygrad::examples
