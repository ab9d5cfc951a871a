#pragma once
// A small, self-contained SVG line plot for the example programs and the benchmark plot: named
// series with markers and lines, linear or logarithmic axes, axis labels, a title and a legend
// column as wide as its longest name. No dependency beyond the standard library; the output
// opens in any browser.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace polygrad::examples {

/// A line plot: add series, then write() or svg().
class SvgPlot {
 public:
  /// One named series; points with a non-finite coordinate (or <= 0 on a log axis) are skipped.
  struct Series {
    std::string name;
    std::vector<double> x, y;
  };

  /// A plot with the given title and axis labels.
  SvgPlot(std::string title, std::string x_label, std::string y_label)
      : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

  /// Logarithmic x axis (base 10 ticks; base 2 ticks when the range is under two decades).
  SvgPlot& log_x(bool on = true) {
    log_x_ = on;
    return *this;
  }
  /// Logarithmic y axis.
  SvgPlot& log_y(bool on = true) {
    log_y_ = on;
    return *this;
  }
  /// Canvas size in pixels (default 720 x 480).
  SvgPlot& size(int width, int height) {
    width_ = width;
    height_ = height;
    return *this;
  }

  /// Adds a series; x and y must have the same length.
  SvgPlot& add(std::string name, std::vector<double> x, std::vector<double> y) {
    if (x.size() != y.size())
      throw std::invalid_argument("SvgPlot::add: series '" + name + "' has " +
                                  std::to_string(x.size()) + " x values but " +
                                  std::to_string(y.size()) + " y values");
    series_.push_back({std::move(name), std::move(x), std::move(y)});
    return *this;
  }

  /// The SVG document.
  std::string svg() const {
    // The title is centred on the canvas and wrapped to fit its width; every extra line moves
    // the plot down.
    const std::vector<std::string> title = wrap(title_, title_font_size, width_ - 2 * title_margin);
    const double left = 80, right = legend_width(), bottom = 56;
    const double top = 44 + title_line_height * double(title.size() - 1);
    const double pw = width_ - left - right, ph = height_ - top - bottom;
    Range xr = range(true), yr = range(false);
    const auto px = [&](double x) { return left + pw * (xr.map(x) - xr.lo) / (xr.hi - xr.lo); };
    const auto py = [&](double y) {
      return top + ph * (1 - (yr.map(y) - yr.lo) / (yr.hi - yr.lo));
    };

    std::ostringstream s;
    s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width_ << "\" height=\"" << height_
      << "\" viewBox=\"0 0 " << width_ << ' ' << height_
      << "\" font-family=\"sans-serif\" font-size=\"" << font_size << "\">\n";
    s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    for (std::size_t line = 0; line < title.size(); ++line) {
      s << "<text x=\"" << width_ / 2.0 << "\" y=\"" << 24 + title_line_height * double(line)
        << "\" text-anchor=\"middle\" font-size=\"" << title_font_size << "\">"
        << escape(title[line]) << "</text>\n";
    }

    // Grid and tick labels.
    for (double t : ticks(xr)) {
      const double x = px(t);
      s << "<line x1=\"" << x << "\" y1=\"" << top << "\" x2=\"" << x << "\" y2=\"" << top + ph
        << "\" stroke=\"#e4e4e4\"/>\n";
      s << "<text x=\"" << x << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">"
        << label(t) << "</text>\n";
    }
    for (double t : ticks(yr)) {
      const double y = py(t);
      s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + pw << "\" y2=\"" << y
        << "\" stroke=\"#e4e4e4\"/>\n";
      s << "<text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << label(t)
        << "</text>\n";
    }
    s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
    s << "<text x=\"" << left + pw / 2 << "\" y=\"" << height_ - 14 << "\" text-anchor=\"middle\">"
      << escape(x_label_) << "</text>\n";
    s << "<text transform=\"translate(18 " << top + ph / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(y_label_) << "</text>\n";

    // Series: a polyline through the usable points, a marker on each, a legend entry.
    for (std::size_t i = 0; i < series_.size(); ++i) {
      const Series& data = series_[i];
      const std::string colour = palette(i);
      std::ostringstream points;
      std::vector<std::pair<double, double>> marks;
      for (std::size_t j = 0; j < data.x.size(); ++j) {
        if (!usable(data.x[j], log_x_) || !usable(data.y[j], log_y_)) continue;
        marks.emplace_back(px(data.x[j]), py(data.y[j]));
        points << marks.back().first << ',' << marks.back().second << ' ';
      }
      if (marks.size() > 1)
        s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\""
          << points.str() << "\"/>\n";
      for (const auto& [x, y] : marks) s << marker(i, x, y, colour);
      const double ly = top + 10 + 20 * double(i), lx = left + pw + 14;
      s << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
        << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/>\n";
      s << marker(i, lx + 12, ly, colour);
      s << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\" text-anchor=\"start\">"
        << escape(data.name) << "</text>\n";
    }
    s << "</svg>\n";
    return s.str();
  }

  /// Writes svg() to `path`; throws std::runtime_error if the file cannot be written.
  void write(const std::string& path) const {
    std::ofstream out(path, std::ios::binary);
    out << svg();
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + path);
  }

 private:
  // An axis range in plotted coordinates (log10 of the values on a log axis).
  struct Range {
    double lo, hi;
    bool log;
    double map(double v) const { return log ? std::log10(v) : v; }
  };

  static constexpr double title_font_size = 15, title_line_height = 19, title_margin = 10;
  static constexpr double font_size = 12;

  /// The legend column right of the frame: its line and marker (44 px), the longest name at a
  /// generous 0.6 em per character, and a margin; at least 170 px.
  double legend_width() const {
    std::size_t longest = 0;
    for (const Series& s : series_) longest = std::max(longest, s.name.size());
    return std::max(170.0, 44 + 0.6 * font_size * double(longest) + 10);
  }

  /// The words of `text` in lines that fit `width` pixels at `font_size`, estimating a
  /// character of a sans-serif font at 0.6 em (wider than most, so that lines stay inside).
  static std::vector<std::string> wrap(const std::string& text, double font_size, double width) {
    const std::size_t per_line = std::max<std::size_t>(1, std::size_t(width / (0.6 * font_size)));
    std::vector<std::string> lines(1);
    std::istringstream words(text);
    for (std::string word; words >> word;) {
      if (!lines.back().empty() && lines.back().size() + 1 + word.size() > per_line)
        lines.emplace_back();
      lines.back() += (lines.back().empty() ? "" : " ") + word;
    }
    return lines;
  }

  static bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

  Range range(bool x_axis) const {
    const bool log = x_axis ? log_x_ : log_y_;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const Series& data : series_) {
      for (std::size_t j = 0; j < data.x.size(); ++j) {
        if (!usable(data.x[j], log_x_) || !usable(data.y[j], log_y_)) continue;
        const double v = x_axis ? data.x[j] : data.y[j];
        const double m = log ? std::log10(v) : v;
        lo = std::min(lo, m);
        hi = std::max(hi, m);
      }
    }
    if (!std::isfinite(lo)) lo = 0, hi = 1;  // nothing to plot: an empty frame
    if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
    const double pad = 0.04 * (hi - lo);
    if (!log && !x_axis && lo >= 0 && lo - pad < 0)
      return {0, hi + pad, log};  // keep 0 on a linear y axis
    return {lo - pad, hi + pad, log};
  }

  // Tick values (in data units) inside the range.
  static std::vector<double> ticks(const Range& r) {
    std::vector<double> out;
    if (r.log) {
      const bool base2 = r.hi - r.lo < 2;  // under two decades: powers of 2 read better
      const double base = base2 ? 2 : 10, step = std::log10(base);
      for (double e = std::ceil(r.lo / step); e * step <= r.hi + 1e-12; e += 1)
        out.push_back(std::pow(base, e));
      if (out.size() > 12) {  // thin out dense powers of 2
        std::vector<double> thin;
        for (std::size_t i = 0; i < out.size(); i += 2) thin.push_back(out[i]);
        out = thin;
      }
      return out;
    }
    const double span = r.hi - r.lo, raw = span / 6;
    const double mag = std::pow(10, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
      if (raw <= m * mag) {
        step = m * mag;
        break;
      }
    for (double t = std::ceil(r.lo / step) * step; t <= r.hi + 1e-9 * span; t += step)
      out.push_back(std::abs(t) < 1e-12 * step ? 0 : t);
    return out;
  }

  static std::string label(double v) {
    char buffer[32];
    const double a = std::abs(v);
    if (v == 0) return "0";
    if (a >= 1e5 || a < 1e-3) {
      std::snprintf(buffer, sizeof buffer, "%.3g", v);
    } else if (a >= 100 && std::abs(v - std::round(v)) < 1e-9) {
      std::snprintf(buffer, sizeof buffer, "%.0f", v);
    } else {
      std::snprintf(buffer, sizeof buffer, "%.4g", v);
    }
    return buffer;
  }

  static std::string palette(std::size_t i) {
    static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};
    return colours[i % (sizeof colours / sizeof colours[0])];
  }

  // Circle, square, triangle, diamond, in turn, so series differ without colour too.
  static std::string marker(std::size_t i, double x, double y, const std::string& colour) {
    std::ostringstream s;
    switch (i % 4) {
      case 0:
        s << "<circle cx=\"" << x << "\" cy=\"" << y << "\" r=\"4\" fill=\"" << colour << "\"/>\n";
        break;
      case 1:
        s << "<rect x=\"" << x - 4 << "\" y=\"" << y - 4 << "\" width=\"8\" height=\"8\" fill=\""
          << colour << "\"/>\n";
        break;
      case 2:
        s << "<polygon points=\"" << x << ',' << y - 5 << ' ' << x - 5 << ',' << y + 4 << ' '
          << x + 5 << ',' << y + 4 << "\" fill=\"" << colour << "\"/>\n";
        break;
      default:
        s << "<polygon points=\"" << x << ',' << y - 5 << ' ' << x + 5 << ',' << y << ' ' << x
          << ',' << y + 5 << ' ' << x - 5 << ',' << y << "\" fill=\"" << colour << "\"/>\n";
    }
    return s.str();
  }

  static std::string escape(const std::string& text) {
    std::string out;
    for (char c : text) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
      }
    }
    return out;
  }

  std::string title_, x_label_, y_label_;
  bool log_x_ = false, log_y_ = false;
  int width_ = 720, height_ = 480;
  std::vector<Series> series_;
};

}  // namespace polygrad::examples
