#pragma once
// MeasuredRates: the rate of each kernel class (attention/rates.hpp) measured on this host the
// first time a plan needs it, and kept in a file under the host's name, so that later processes
// on the same machine reuse it (as FFTW keeps its "wisdom"). default_kernel_rates() is what
// "auto" uses unless PolyOptions::rates says otherwise.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/poly.hpp"
#include "polygrad/attention/rates.hpp"

namespace polygrad {

/// Kernel rates measured on this host: a class's rate is looked up in memory, then in the
/// file, and otherwise measured (one head on one thread, forward + backward at n and 2 n rows,
/// n sized to take about `seconds`) and written back to the file.
/// Safe to share between threads.
class MeasuredRates final : public KernelRates {
 public:
  /// Rates kept in `file` ("" keeps them in memory only); each measurement runs about `seconds`.
  explicit MeasuredRates(std::string file = default_file(), double seconds = 0.02)
      : file_(std::move(file)), seconds_(seconds) {}

  double rate(const KernelClass& kernel) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!loaded_) load();
    const auto found = rates_.find(kernel.key());
    if (found != rates_.end()) return found->second;
    const double measured =
        kernel.scalar_bytes == 4 ? measure<float>(kernel) : measure<double>(kernel);
    rates_[kernel.key()] = measured;
    ++measured_;
    save();
    return measured;
  }

  std::string source() const override {
    return "measured on this host" + (file_.empty() ? std::string() : " (kept in " + file_ + ")");
  }

  /// Classes this object has measured (rather than read from its file).
  Index measurements() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return measured_;
  }

  /// $POLYGRAD_RATES_FILE; else kernel-rates.json in $XDG_CACHE_HOME/polygrad or
  /// $HOME/.cache/polygrad; "" (memory only) when none of them is set.
  static std::string default_file() {
    if (const char* file = std::getenv("POLYGRAD_RATES_FILE")) return file;
    if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache)
      return std::string(cache) + "/polygrad/kernel-rates.json";
    if (const char* home = std::getenv("HOME"); home && *home)
      return std::string(home) + "/.cache/polygrad/kernel-rates.json";
    return "";
  }

  /// The name rates are kept under: the CPU's model name, the vector instructions this code was
  /// compiled for (a -march=native build and a portable one run at different rates) and the
  /// kernels' revision (kernel_revision).
  static std::string host() {
    std::string model = "unknown CPU";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
      if (line.rfind("model name", 0) == 0) {
        const auto colon = line.find(':');
        if (colon != std::string::npos) model = line.substr(line.find_first_not_of(' ', colon + 1));
        break;
      }
    }
#if defined(__AVX512F__)
    const char* vectors = ", AVX-512";
#elif defined(__AVX2__)
    const char* vectors = ", AVX2";
#else
    const char* vectors = ", baseline vectors";
#endif
    return model + vectors + ", kernels r" + std::to_string(kernel_revision);
  }

 private:
  /// Reads this host's rates from the file; an absent or unreadable file leaves them empty.
  void load() const {
    loaded_ = true;
    if (file_.empty()) return;
    std::ifstream in(file_);
    if (!in) return;
    try {
      const nlohmann::json all = nlohmann::json::parse(in);
      const auto mine = all.find(host());
      if (mine == all.end()) return;
      for (const auto& [key, value] : mine->items())
        if (value.is_number() && value.get<double>() > 0) rates_[key] = value.get<double>();
    } catch (const nlohmann::json::exception&) {
      // A damaged cache is measured again and rewritten.
    }
  }

  /// Writes this host's rates into the file (other hosts' entries kept), through a temporary
  /// file renamed into place. A file that cannot be written leaves the rates in memory only.
  void save() const {
    if (file_.empty()) return;
    std::error_code error;
    const std::filesystem::path path(file_);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), error);
    nlohmann::json all = nlohmann::json::object();
    if (std::ifstream in(file_); in) {
      try {
        all = nlohmann::json::parse(in);
        if (!all.is_object()) all = nlohmann::json::object();
      } catch (const nlohmann::json::exception&) {
        all = nlohmann::json::object();
      }
    }
    for (const auto& [key, value] : rates_) all[host()][key] = value;
    const std::string temporary = file_ + ".tmp" + std::to_string(std::random_device{}());
    {
      std::ofstream out(temporary);
      if (!out) return;
      out << all.dump(1) << '\n';
      if (!out) return;
    }
    std::filesystem::rename(temporary, path, error);
    if (error) std::filesystem::remove(temporary, error);
  }

  /// Multiply-adds per second of forward + backward of `kernel` on one head and one thread: the
  /// marginal rate between n and 2 n rows, (cost(2n) - cost(n)) / (time(2n) - time(n)), so that
  /// what a call costs whatever its length (planning, allocation) does not lower the rate of a
  /// class measured on few rows. Each time is the fastest of two runs after a warm-up.
  template <class T>
  double measure(const KernelClass& kernel) const {
    const Index dh = kernel.head_dim;
    // Rows for about seconds_ of work at the table's rate (a guess; the time is measured).
    const double work = seconds_ * TableRates().rate(kernel);
    PolyOptions options;
    options.route = kernel.route;
    options.degree = kernel.degree;
    Index n;
    if (kernel.method == HeadMethod::exact) {
      n = std::clamp<Index>(Index(std::sqrt(work / cost::exact(1, dh, kernel.causal))), 128, 4096);
    } else {
      const Index k = SymmetricFeatures::count(dh, kernel.degree);
      const double per_row =
          kernel.route == PolyRoute::adjoint
              ? cost::poly_adjoint(1, dh, kernel.degree, k, options.chunk, kernel.causal)
              : cost::poly_paper(1, dh, kernel.degree, k, options.chunk, kernel.causal);
      n = std::clamp<Index>(Index(work / per_row), options.chunk, 8192);
    }
    std::unique_ptr<AttentionMethod<T>> method;
    if (kernel.method == HeadMethod::exact)
      method = std::make_unique<ExactAttention<T>>();
    else
      method = std::make_unique<PolyAttention<T>>(options);
    const auto [t1, cost1] = time_pass<T>(*method, kernel, n);
    const auto [t2, cost2] = time_pass<T>(*method, kernel, 2 * n);
    if (t2 > t1 * 1.05) return (cost2 - cost1) / (t2 - t1);
    return cost2 / std::max(t2, 1e-9);  // too close to tell apart: the plain rate
  }

  /// (seconds, predicted multiply-adds) of `method` on one head of n rows of `kernel`'s class.
  template <class T>
  static std::pair<double, double> time_pass(const AttentionMethod<T>& method,
                                             const KernelClass& kernel, Index n) {
    const Index dh = kernel.head_dim;
    // Unit query and key rows with scale 1: every score lies in [-1, 1], the bound R = 1.
    std::mt19937_64 random{std::uint64_t(n)};
    std::normal_distribution<double> normal;
    const auto draw = [&](bool unit_rows) {
      Matrix<T> X(n, dh);
      for (Index i = 0; i < n; ++i) {
        for (Index j = 0; j < dh; ++j) X(i, j) = T(normal(random));
        if (unit_rows) X.row(i).normalize();
      }
      return X;
    };
    const Matrix<T> Q = draw(true), K = draw(true), V = draw(false), dO = draw(false);
    AttentionShape shape(1, kernel.causal, 1.0, 1.0);
    shape.threading.threads = 1;
    Matrix<T> O, dQ, dK, dV;
    double fastest = std::numeric_limits<double>::infinity(), cost = 0;
    for (int run = 0; run < 3; ++run) {
      const auto start = std::chrono::steady_clock::now();
      auto context = method.forward(Q, K, V, shape, O);
      context->backward(Q, K, V, O, dO, dQ, dK, dV);
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      if (run > 0) fastest = std::min(fastest, took.count());  // run 0 warms up
      const HeadPlan plan = context->plans().front();
      cost = kernel.method == HeadMethod::exact ? plan.exact_cost : plan.poly_cost;
    }
    return {fastest, cost};
  }

  std::string file_;
  double seconds_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, double> rates_;
  mutable bool loaded_ = false;
  mutable Index measured_ = 0;
};

/// The rates plans predict seconds with unless PolyOptions::rates names others: TableRates
/// when the environment sets POLYGRAD_RATES=table, otherwise one MeasuredRates per process
/// (kept in MeasuredRates::default_file()).
inline std::shared_ptr<const KernelRates> default_kernel_rates() {
  static const std::shared_ptr<const KernelRates> rates =
      []() -> std::shared_ptr<const KernelRates> {
    const char* choice = std::getenv("POLYGRAD_RATES");
    if (choice && std::string(choice) == "table") return std::make_shared<TableRates>();
    require<PlanError>(!choice || std::string(choice) == "measured" || !*choice,
                       "POLYGRAD_RATES must be \"table\" or \"measured\" (or unset), got \"",
                       choice ? choice : "", "\"");
    return std::make_shared<MeasuredRates>();
  }();
  return rates;
}

}  // namespace polygrad
