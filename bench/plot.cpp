// polygrad_bench_plot: reads polygrad_bench's JSON output (--benchmark_out=x.json
// --benchmark_out_format=json), groups the runs per method (the benchmark name without its n
// argument), and writes a log-log SVG of time against n with one line per method. Each legend
// entry carries the slope of a least-squares fit of log time on log n, and the slopes are
// printed too. With repetitions the median aggregate is used, otherwise the mean of the runs.
// The SVG is drawn by the programs' plot writer, examples/support/svg_plot.hpp.
//
//   polygrad_bench_plot [--cpu-time] results.json scaling.svg [regex]
// regex keeps matching names only; --cpu-time plots the main thread's CPU time instead of wall
// time, which other processes on a busy machine disturb less (with balanced threads it is
// about work / threads).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/svg_plot.hpp"

namespace {

/// Seconds per unit of Google Benchmark's "time_unit".
double unit_seconds(const std::string& unit) {
  if (unit == "ns") return 1e-9;
  if (unit == "us") return 1e-6;
  if (unit == "ms") return 1e-3;
  return 1.0;
}

/// Splits "BM_X/n:4096/dh:8/.../real_time" into the method ("X dh:8 ...") and n; false when the
/// name has no n argument.
bool parse_name(const std::string& name, std::string& method, double& n) {
  static const std::regex n_arg("/n:([0-9]+)");
  std::smatch m;
  if (!std::regex_search(name, m, n_arg)) return false;
  n = std::stod(m[1]);
  std::string rest = m.prefix().str() + m.suffix().str();
  // Drop how the run was timed: it is not part of the method.
  rest = std::regex_replace(rest,
                            std::regex("/(real_time|iterations:[0-9]+|min_time:[0-9.]+|"
                                       "repeats:[0-9]+|threads:[0-9]+)"),
                            "");
  rest = std::regex_replace(rest, std::regex("^BM_(Attention)?"), "");
  // Keep what tells methods apart: "PolyAdjoint dh:8 g:7" (heads follow from d_h here).
  rest = std::regex_replace(rest, std::regex("/heads:[0-9]+|/causal:1|/degree:0"), "");
  rest = std::regex_replace(rest, std::regex("/degree:"), "/g:");
  for (char& c : rest)
    if (c == '/') c = ' ';
  method = rest;
  return true;
}

/// Least-squares slope of log y on log x.
double loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const double count = double(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx;
    sy += ly;
    sxx += lx * lx;
    sxy += lx * ly;
  }
  const double denominator = count * sxx - sx * sx;
  return denominator > 0 ? (count * sxy - sx * sy) / denominator : std::nan("");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const auto flag = std::find(args.begin(), args.end(), "--cpu-time");
  const bool cpu_time = flag != args.end();
  if (cpu_time) args.erase(flag);
  if (args.size() < 2 || args.size() > 3) {
    std::cerr << "usage: polygrad_bench_plot [--cpu-time] RESULTS.json OUT.svg [NAME_REGEX]\n"
                 "  RESULTS.json: polygrad_bench --benchmark_out=RESULTS.json "
                 "--benchmark_out_format=json\n";
    return 2;
  }
  nlohmann::json doc;
  try {
    std::ifstream in(args[0]);
    if (!in) throw std::runtime_error("cannot open " + args[0]);
    // Google Benchmark writes NaN (a coefficient of variation of a constant counter, say),
    // which is not JSON: read those values as null.
    std::stringstream text;
    text << in.rdbuf();
    doc = nlohmann::json::parse(
        std::regex_replace(text.str(), std::regex(R"(:\s*-?(NaN|nan|inf|Infinity)\b)"), ": null"));
  } catch (const std::exception& e) {
    std::cerr << "polygrad_bench_plot: " << args[0] << ": " << e.what() << "\n";
    return 1;
  }
  const std::regex keep(args.size() == 3 ? args[2] : ".*");
  const std::string time_key = cpu_time ? "cpu_time" : "real_time";

  // Per run name: the median aggregate if there is one, else the mean of its iteration runs.
  struct Times {
    std::vector<double> runs;
    double median = std::nan("");
  };
  std::map<std::string, Times> times;
  for (const auto& b : doc.value("benchmarks", nlohmann::json::array())) {
    if (b.value("error_occurred", false)) continue;
    const std::string run_name = b.value("run_name", b.value("name", ""));
    if (!std::regex_search(run_name, keep)) continue;
    const double t = b.value(time_key, 0.0) * unit_seconds(b.value("time_unit", "ns"));
    const std::string type = b.value("run_type", "iteration");
    if (type == "aggregate") {
      if (b.value("aggregate_name", "") == "median") times[run_name].median = t;
    } else {
      times[run_name].runs.push_back(t);
    }
  }

  std::map<std::string, std::vector<std::pair<double, double>>> series;  // method -> (n, seconds)
  for (const auto& [name, t] : times) {
    std::string method;
    double n = 0;
    if (!parse_name(name, method, n)) continue;
    double seconds = t.median;
    if (std::isnan(seconds)) {
      if (t.runs.empty()) continue;
      seconds = 0;
      for (double r : t.runs) seconds += r / double(t.runs.size());
    }
    series[method].emplace_back(n, seconds);
  }
  if (series.empty()) {
    std::cerr << "polygrad_bench_plot: no successful run with an n argument in " << args[0] << "\n";
    return 1;
  }

  polygrad::examples::SvgPlot plot(
      std::string("polygrad: ") + (cpu_time ? "main-thread CPU" : "wall") +
          " time against n (log-log, least-squares slopes)",
      "n (tokens)", cpu_time ? "main-thread CPU time per call (s)" : "wall time per call (s)");
  plot.log_x().log_y().size(960, 600);
  std::printf("%-40s %8s %8s %s\n", "method", "points", "slope", "n range");
  for (auto& [method, points] : series) {
    std::sort(points.begin(), points.end());
    std::vector<double> x, y;
    for (const auto& [n, s] : points) {
      x.push_back(n);
      y.push_back(s);
    }
    const double slope = loglog_slope(x, y);
    char legend[64];
    std::snprintf(legend, sizeof legend, " (slope %.2f)", slope);
    plot.add(method + legend, x, y);
    std::printf("%-40s %8zu %8.3f %.0f..%.0f\n", method.c_str(), x.size(), slope, x.front(),
                x.back());
  }
  try {
    plot.write(args[1]);
  } catch (const std::exception& e) {
    std::cerr << "polygrad_bench_plot: " << e.what() << "\n";
    return 1;
  }
  std::printf("wrote %s (%s)\n", args[1].c_str(), time_key.c_str());
  return 0;
}
