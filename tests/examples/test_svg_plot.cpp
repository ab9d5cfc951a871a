// The SVG plots of the programs and of the benchmark plot fit their canvas: a long title wraps
// instead of running off the left edge (as docs/train_curves.svg's once did), and the legend
// column widens for long series names (the benchmark's methods with their slopes).
#include <catch2/catch.hpp>

#include <regex>

#include "../../examples/support/svg_plot.hpp"

namespace {

struct TextElement {
  double x;
  std::string anchor, font_size, text;
};

/// The <text> elements with an x attribute, in document order.
std::vector<TextElement> texts(const std::string& svg) {
  const std::regex element(
      "<text x=\"([-0-9.e]+)\" y=\"[-0-9.e]+\" text-anchor=\"(\\w+)\"(?: "
      "font-size=\"(\\d+)\")?>([^<]*)</text>");
  std::vector<TextElement> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), element);
       it != std::sregex_iterator(); ++it)
    out.push_back({std::stod((*it)[1]), (*it)[2], (*it)[3], (*it)[4]});
  return out;
}

}  // namespace

TEST_CASE("A long title wraps to lines that fit the canvas", "[examples][svg]") {
  const std::string title =
      "Character LM: exact vs approximate (poly adjoint chebyshev eps=0.001 "
      "audit=32) gradients over 20000 steps of 8 x 32768 characters";
  polygrad::examples::SvgPlot plot(title, "step", "loss");
  plot.add("exact", {1, 2, 3}, {3, 2, 1});
  const std::vector<TextElement> all = texts(plot.svg());
  std::string joined;
  int lines = 0;
  for (const TextElement& t : all) {
    if (t.font_size != "15") continue;  // the title's lines
    ++lines;
    joined += (joined.empty() ? "" : " ") + t.text;
    // Centred at x: its half-width, at a generous 0.6 em per character, stays on the canvas.
    REQUIRE(t.anchor == "middle");
    const double half = 0.5 * 0.6 * 15 * double(t.text.size());
    CHECK(t.x - half >= 0);
    CHECK(t.x + half <= 720);
  }
  CHECK(lines >= 2);
  CHECK(joined == title);  // every word, in order
}

TEST_CASE("A short title stays on one line", "[examples][svg]") {
  polygrad::examples::SvgPlot plot("Loss", "step", "loss");
  plot.add("exact", {1, 2}, {2, 1});
  int lines = 0;
  for (const TextElement& t : texts(plot.svg())) lines += t.font_size == "15";
  CHECK(lines == 1);
}

TEST_CASE("The legend column is as wide as its longest name", "[examples][svg]") {
  const std::string name = "AttentionPolyAdjoint dh:16 g:7 (slope 1.02)";
  polygrad::examples::SvgPlot plot("Time against n", "n", "seconds");
  plot.log_x().log_y().size(960, 600);
  plot.add("exact", {1024, 2048}, {1, 4});
  plot.add(name, {1024, 2048}, {0.5, 1});
  bool found = false;
  for (const TextElement& t : texts(plot.svg())) {
    if (t.text != name) continue;
    found = true;
    REQUIRE(t.anchor == "start");
    CHECK(t.x + 0.6 * 12 * double(t.text.size()) <= 960);  // at a generous 0.6 em per character
  }
  CHECK(found);
}
