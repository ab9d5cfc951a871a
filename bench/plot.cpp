// polygrad_bench_plot: reads polygrad_bench's JSON output (--benchmark_out=x.json
// --benchmark_out_format=json), groups the runs per method (the benchmark name without its n
// argument), and writes a log-log SVG of time against n with one line per method. Each legend
// entry carries the slope of a least-squares fit of log time on log n, and the slopes are
// printed too. With repetitions the median aggregate is used, otherwise the mean of the runs.
// The SVG writer is a few lines here rather than examples/support/svg_plot.hpp: that one keeps a
// fixed 170-pixel legend column, too narrow for method names with their slopes.
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
  rest = std::regex_replace(rest, std::regex("/(real_time|iterations:[0-9]+|min_time:[0-9.]+|"
                                             "repeats:[0-9]+|threads:[0-9]+)"), "");
  rest = std::regex_replace(rest, std::regex("^BM_(Attention)?"), "");
  // Keep what tells methods apart: "PolyAdjoint dh:8 g:7" (heads follow from d_h here).
  rest = std::regex_replace(rest, std::regex("/heads:[0-9]+|/causal:1|/degree:0"), "");
  rest = std::regex_replace(rest, std::regex("/degree:"), "/g:");
  for (char& c : rest)
    if (c == '/') c = ' ';
  method = rest;
  return true;
}

/// A log-log line plot: n on x (powers of 2), seconds on y (powers of 10), legend inside the
/// frame at the top left, where time-against-n curves leave room.
struct Series {
  std::string label;
  std::vector<double> x, y;
};

std::string svg_loglog(const std::string& title, const std::vector<Series>& series,
                       const std::string& y_label) {
  const double width = 960, height = 600, left = 80, right = 30, top = 44, bottom = 60;
  const double pw = width - left - right, ph = height - top - bottom;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const Series& s : series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, std::log2(s.x[i]));
      x1 = std::max(x1, std::log2(s.x[i]));
      y0 = std::min(y0, std::log10(s.y[i]));
      y1 = std::max(y1, std::log10(s.y[i]));
    }
  x0 -= 0.3, x1 += 0.3;
  // Room above the highest point for the legend.
  y0 = std::floor(y0 - 0.05), y1 = std::ceil(y1 + 0.15 * double(series.size()) * (y1 - y0) / 4 + 0.05);
  const auto px = [&](double x) { return left + pw * (std::log2(x) - x0) / (x1 - x0); };
  const auto py = [&](double y) { return top + ph * (1 - (std::log10(y) - y0) / (y1 - y0)); };
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                  "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"13\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << left + pw / 2 << "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">"
    << title << "</text>\n";
  for (int e = int(std::ceil(x0)); e <= int(std::floor(x1)); ++e) {
    const double x = px(std::ldexp(1.0, e));
    s << "<line x1=\"" << x << "\" y1=\"" << top << "\" x2=\"" << x << "\" y2=\"" << top + ph
      << "\" stroke=\"#e6e6e6\"/><text x=\"" << x << "\" y=\"" << top + ph + 18
      << "\" text-anchor=\"middle\">2^" << e << "</text>\n";
  }
  for (int e = int(y0); e <= int(y1); ++e) {
    const double y = py(std::pow(10.0, e));
    s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + pw << "\" y2=\"" << y
      << "\" stroke=\"#e6e6e6\"/><text x=\"" << left - 6 << "\" y=\"" << y + 4
      << "\" text-anchor=\"end\">1e" << e << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"#333\"/>\n"
    << "<text x=\"" << left + pw / 2 << "\" y=\"" << height - 16
    << "\" text-anchor=\"middle\">n (tokens)</text>\n"
    << "<text transform=\"translate(20 " << top + ph / 2
    << ") rotate(-90)\" text-anchor=\"middle\">" << y_label << "</text>\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const Series& d = series[i];
    const char* colour = colours[i % 8];
    s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
    for (std::size_t j = 0; j < d.x.size(); ++j) s << px(d.x[j]) << ',' << py(d.y[j]) << ' ';
    s << "\"/>\n";
    for (std::size_t j = 0; j < d.x.size(); ++j)
      s << "<circle cx=\"" << px(d.x[j]) << "\" cy=\"" << py(d.y[j]) << "\" r=\"3.5\" fill=\""
        << colour << "\"/>\n";
    const double ly = top + 18 + 20 * double(i), lx = left + 14;
    s << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 26 << "\" y2=\"" << ly
      << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/><text x=\"" << lx + 34 << "\" y=\""
      << ly + 4 << "\">" << d.label << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
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

  std::vector<Series> lines;
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
    lines.push_back({method + legend, x, y});
    std::printf("%-40s %8zu %8.3f %.0f..%.0f\n", method.c_str(), x.size(), slope, x.front(),
                x.back());
  }
  std::ofstream out(args[1], std::ios::binary);
  out << svg_loglog(std::string("polygrad: ") + (cpu_time ? "main-thread CPU" : "wall") +
                        " time against n (log-log, least-squares slopes)",
                    lines, cpu_time ? "main-thread CPU time per call (s)" : "wall time per call (s)");
  out.flush();
  if (!out) {
    std::cerr << "polygrad_bench_plot: cannot write " << args[1] << "\n";
    return 1;
  }
  std::printf("wrote %s (%s)\n", args[1].c_str(), time_key.c_str());
  return 0;
}
