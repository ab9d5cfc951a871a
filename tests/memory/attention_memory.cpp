// attention_memory: one float forward + backward of the attention core on random data, with the
// peak resident memory and the elapsed time. Exits non-zero if the peak exceeds the limit, so
// CTest can hold a method to its O(n d) memory claim.
//
//   attention_memory <method> <n> <heads> <d_h> <causal 0|1> <limit_MiB> [extra...]
//
// <method> is a name of make_attention() (attention/factory.hpp); `extra` carries its options.

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "polygrad/attention/factory.hpp"

namespace {

using polygrad::AttentionMethod;
using polygrad::Index;
using Mat = polygrad::Matrix<float>;

/// The attention method called `name`, configured by the trailing arguments `extra`.
std::shared_ptr<const AttentionMethod<float>> make_method(const std::string& name,
                                                          const std::vector<std::string>& extra) {
  // exact takes no extra arguments; poly takes [adjoint|paper] [degree]. Scores are bounded by
  // construction for poly (unit q, k rows and scale = score_bound = 2, as QK normalisation with
  // tau = 2 gives).
  polygrad::require<polygrad::Error>(name == "poly" || extra.empty(), "method ", name,
                                     " takes no extra arguments, got ", extra.size());
  polygrad::PolyOptions options;
  if (extra.size() > 0) options.route = polygrad::parse_route(extra[0]);
  options.degree = extra.size() > 1 ? std::stoi(extra[1]) : 7;
  return polygrad::make_attention<float>(name, options);
}

/// Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).
double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

Index parse_index(const char* text, const char* what) {
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  polygrad::require<polygrad::Error>(end != text && *end == '\0' && value >= 0, what,
                                     " must be a non-negative integer, got '", text, "'");
  return Index(value);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::cerr << "usage: " << argv[0]
              << " <method> <n> <heads> <d_h> <causal 0|1> <limit_MiB> [extra...]\n";
    return 2;
  }
  try {
    const std::string name = argv[1];
    const Index n = parse_index(argv[2], "n");
    const Index heads = parse_index(argv[3], "heads");
    const Index dh = parse_index(argv[4], "d_h");
    const Index causal = parse_index(argv[5], "causal");
    const Index limit_mib = parse_index(argv[6], "limit_MiB");
    polygrad::require<polygrad::Error>(causal <= 1, "causal must be 0 or 1, got ", causal);
    const std::vector<std::string> extra(argv + 7, argv + argc);
    const auto method = make_method(name, extra);

    polygrad::AttentionShape shape;
    shape.heads = heads;
    shape.causal = causal == 1;
    shape.scale = 1.0 / std::sqrt(double(dh));
    const Index width = heads * dh;
    Mat Q = Mat::Random(n, width), K = Mat::Random(n, width);
    const Mat V = Mat::Random(n, width);
    if (name == "poly") {
      for (Index i = 0; i < n; ++i) {
        for (Index h = 0; h < heads; ++h) {
          Q.row(i).segment(h * dh, dh).normalize();
          K.row(i).segment(h * dh, dh).normalize();
        }
      }
      shape.scale = shape.score_bound = 2.0;
    }
    const Mat dO = Mat::Random(n, width);
    Mat O, dQ, dK, dV;

    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    auto context = method->forward(Q, K, V, shape, O);
    const auto t1 = Clock::now();
    context->backward(Q, K, V, O, dO, dQ, dK, dV);
    const auto t2 = Clock::now();
    context.reset();

    // Touch the results so the work cannot be skipped, and catch a broken method.
    const bool finite = O.allFinite() && dQ.allFinite() && dK.allFinite() && dV.allFinite();
    const double forward_s = std::chrono::duration<double>(t1 - t0).count();
    const double backward_s = std::chrono::duration<double>(t2 - t1).count();
    const double peak = peak_rss_mib();
    std::cout << "method " << name << "  n " << n << "  heads " << heads << "  d_h " << dh
              << "  causal " << causal << "  threads " << polygrad::detail::thread_count({}) << "\n"
              << "forward " << forward_s << " s  backward " << backward_s << " s  total "
              << forward_s + backward_s << " s\n"
              << "peak resident memory " << peak << " MiB (limit " << limit_mib << " MiB)\n";
    if (!finite) {
      std::cerr << "error: the output or a gradient holds NaN or infinity\n";
      return 1;
    }
    if (peak > double(limit_mib)) {
      std::cerr << "error: peak resident memory " << peak << " MiB exceeds the limit of "
                << limit_mib << " MiB\n";
      return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
