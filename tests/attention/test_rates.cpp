// Predicted seconds: the kernel rates (table and measured on the host, kept in a file) and the
// decision of "auto" by predicted seconds rather than multiply-adds.

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "polygrad/attention/auto.hpp"
#include "polygrad/attention/calibration.hpp"
#include "polygrad/attention/rates.hpp"
#include "support/problems.hpp"

using namespace polygrad;

namespace {

/// The same rate for every exact class and another for every polynomial one.
class TwoRates final : public KernelRates {
 public:
  TwoRates(double exact, double poly) : exact_(exact), poly_(poly) {}
  double rate(const KernelClass& kernel) const override {
    return kernel.method == HeadMethod::exact ? exact_ : poly_;
  }
  std::string source() const override { return "two fixed rates"; }

 private:
  double exact_, poly_;
};

/// The plan auto makes for one causal head of n rows, d_h 8 and QK norm 2, epsilon 1e-3.
HeadPlan auto_plan(Index n, std::shared_ptr<const KernelRates> rates) {
  PolyOptions options;
  options.epsilon = 1e-3;
  options.rates = std::move(rates);
  test::AttentionProblem p = test::random_attention_problem(n, 1, 8, true, 2.0, 5).unit_qk();
  Matrix<double> O;
  return AutoAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O)->plans().at(0);
}

std::string temporary_file(const std::string& name) {
  const auto path = std::filesystem::temp_directory_path() / ("polygrad-test-" + name);
  std::filesystem::remove(path);
  return path.string();
}

}  // namespace

TEST_CASE("auto switches from exact to poly at the crossover of the predicted seconds",
          "[attention][rates][plan]") {
  // With the polynomial route 6 times as fast per multiply-add as the exact kernel (a ratio
  // that puts the crossover within a test's reach), the seconds cross where
  // 3.5 n^2 d_h / 1 = a n / 6, with a = cost::poly_adjoint / n (linear in n).
  const auto rates = std::make_shared<TwoRates>(1e9, 6e9);
  const HeadPlan probe = auto_plan(512, rates);
  REQUIRE(probe.degree > 0);
  const double per_row = probe.poly_cost / 512;
  const double crossover = per_row / 6 / cost::exact(1, 8, true);
  CAPTURE(probe.describe(), crossover);
  REQUIRE(crossover > 1000);
  REQUIRE(crossover < 8000);

  const HeadPlan below = auto_plan(Index(0.9 * crossover), rates);
  const HeadPlan above = auto_plan(Index(1.1 * crossover), rates);
  CAPTURE(below.describe(), above.describe());
  CHECK(below.method == HeadMethod::exact);
  CHECK(above.method == HeadMethod::poly);
  // Counting multiply-adds alone would have kept exact attention here.
  CHECK(above.exact_cost < above.poly_cost);
}

TEST_CASE("a plan shows both predicted seconds and where the rates came from",
          "[attention][rates][plan]") {
  const auto rates = std::make_shared<TwoRates>(1e9, 6e9);
  for (Index n : {Index(256), Index(4096)}) {  // one exact plan, one polynomial
    const HeadPlan plan = auto_plan(n, rates);
    CAPTURE(n, plan.describe());
    CHECK(plan.exact_seconds == Approx(plan.exact_cost / 1e9));
    CHECK(plan.poly_seconds == Approx(plan.poly_cost / 6e9));
    CHECK(plan.rates_source == "two fixed rates");
    CHECK(plan.method ==
          (plan.poly_seconds < plan.exact_seconds ? HeadMethod::poly : HeadMethod::exact));
    const std::string line = plan.describe();
    CHECK(line.find("predicted") != line.find("predicted", line.find("predicted") + 1));
  }
}

TEST_CASE("a head auto cannot plan polynomially says why", "[attention][rates][plan]") {
  PolyOptions options;
  options.rates = std::make_shared<TwoRates>(3e9, 1e9);
  Matrix<double> O;
  SECTION("causal without a bound") {
    test::AttentionProblem p = test::random_attention_problem(300, 1, 4, true, 1.0, 6);
    const HeadPlan plan =
        AutoAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O)->plans().at(0);
    CAPTURE(plan.describe());
    CHECK(plan.method == HeadMethod::exact);
    CHECK(plan.poly_refused.find("bound R taken from the data") != std::string::npos);
    CHECK(plan.describe().find("no polynomial plan: causal polynomial attention") !=
          std::string::npos);
  }
  SECTION("d_h 64, whose rank does not fit the memory budget") {
    test::AttentionProblem p = test::random_attention_problem(100, 1, 64, true, 2.0, 7).unit_qk();
    const HeadPlan plan =
        AutoAttention<double>(options).forward(p.Q, p.K, p.V, p.shape, O)->plans().at(0);
    CAPTURE(plan.describe());
    CHECK(plan.method == HeadMethod::exact);
    CHECK(plan.poly_refused.find("over the budget") != std::string::npos);
    CHECK(plan.exact_seconds > 0);
    CHECK(plan.poly_seconds == 0);
  }
}

TEST_CASE("the rate table: its measured points, interpolation between them, double at half",
          "[attention][rates]") {
  const TableRates table;
  KernelClass exact;
  exact.scalar_bytes = 4;
  exact.head_dim = 8;
  CHECK(table.rate(exact) == Approx(1.8e10));
  exact.head_dim = 12;  // between d_h 8 and 16
  CHECK(table.rate(exact) > 1.8e10);
  CHECK(table.rate(exact) < 4.07e10);
  exact.head_dim = 1000;  // beyond the table: its last rate
  CHECK(table.rate(exact) == Approx(3.1e10));
  KernelClass poly = exact;
  poly.method = HeadMethod::poly;
  poly.head_dim = 8;
  poly.degree = 7;  // k = 6435, a point of the table
  CHECK(table.rate(poly) == Approx(3.2e10));
  poly.scalar_bytes = 8;
  CHECK(table.rate(poly) == Approx(1.6e10));
}

TEST_CASE("measured rates are kept in a file under the host's name and read back",
          "[attention][rates]") {
  const std::string file = temporary_file("kernel-rates.json");
  KernelClass kernel;
  kernel.head_dim = 4;
  double measured = 0;
  {
    const MeasuredRates rates(file, 0.002);
    measured = rates.rate(kernel);
    CHECK(measured > 1e6);                  // multiply-adds per second: any real machine does more
    CHECK(rates.rate(kernel) == measured);  // asked again: remembered
    CHECK(rates.measurements() == 1);
    CHECK(rates.source().find(file) != std::string::npos);
  }
  std::ifstream written(file);
  REQUIRE(written);
  const nlohmann::json json = nlohmann::json::parse(written);
  CHECK(json.at(MeasuredRates::host()).at(kernel.key()).get<double>() == measured);
  {
    const MeasuredRates again(file, 0.002);
    CHECK(again.rate(kernel) == measured);
    CHECK(again.measurements() == 0);  // read from the file, not measured
  }
  {
    std::ofstream damaged(file);
    damaged << "{ not json";
  }
  const MeasuredRates after_damage(file, 0.002);
  CHECK(after_damage.rate(kernel) > 1e6);
  CHECK(after_damage.measurements() == 1);
  std::ifstream rewritten(file);
  CHECK(nlohmann::json::parse(rewritten).contains(MeasuredRates::host()));
  std::filesystem::remove(file);
}

TEST_CASE("a polynomial class is measured by running its route", "[attention][rates]") {
  const MeasuredRates rates("", 0.002);  // in memory only
  KernelClass kernel;
  kernel.method = HeadMethod::poly;
  kernel.head_dim = 2;
  kernel.degree = 3;
  CHECK(rates.rate(kernel) > 1e6);
  CHECK(rates.measurements() == 1);
  CHECK(rates.source() == "measured on this host");
}
