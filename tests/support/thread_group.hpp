#pragma once
// A SequenceGroup of threads in one process, for tests that split a sequence without MPI (and
// so run under the sanitizers too). run_ranks(P, body) starts P threads, each calling
// body(group) with its own rank; messages are copied when sent and matched by (from, tag) in
// order, collectives meet at a barrier and combine the ranks' buffers in rank order.

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "polygrad/parallel/group.hpp"

namespace polygrad::test {

class ThreadGroupHub {
 public:
  explicit ThreadGroupHub(int size) : size_(size), deposits_(std::size_t(size)) {}

  /// Messages are kept in double whatever their type (a float converts there and back exactly).
  template <class T>
  void post(int from, int to, int tag, const T* data, Index count) {
    std::lock_guard<std::mutex> lock(mutex_);
    mail_[{from, to, tag}].emplace_back(data, data + count);
    changed_.notify_all();
  }
  template <class T>
  void take(int from, int to, int tag, T* data, Index count) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto& queue = mail_[{from, to, tag}];
    changed_.wait(lock, [&] { return !queue.empty(); });
    if (Index(queue.front().size()) != count) throw std::logic_error("message of the wrong length");
    std::copy(queue.front().begin(), queue.front().end(), data);
    queue.pop_front();
  }
  /// Every rank passes its buffer; each gets combine() of all of them, in rank order.
  void combine(int rank, double* data, Index count, bool maximum) {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t generation = generation_;
    deposits_[std::size_t(rank)].assign(data, data + count);
    if (++arrived_ == size_) {
      result_ = deposits_[0];
      for (int r = 1; r < size_; ++r)
        for (Index i = 0; i < count; ++i)
          result_[std::size_t(i)] =
              maximum ? std::max(result_[std::size_t(i)], deposits_[std::size_t(r)][std::size_t(i)])
                      : result_[std::size_t(i)] + deposits_[std::size_t(r)][std::size_t(i)];
      arrived_ = 0;
      ++generation_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return generation_ != generation; });
    }
    std::copy(result_.begin(), result_.end(), data);
    // Nobody may deposit for the next collective before every rank has read this one.
    if (++read_ == size_) {
      read_ = 0;
      ++read_generation_;
      changed_.notify_all();
    } else {
      const std::uint64_t waiting_for = read_generation_;
      changed_.wait(lock, [&] { return read_generation_ != waiting_for; });
    }
  }
  int size() const { return size_; }

 private:
  int size_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<double>>> mail_;
  std::vector<std::vector<double>> deposits_;
  std::vector<double> result_;
  int arrived_ = 0, read_ = 0;
  std::uint64_t generation_ = 0, read_generation_ = 0;
};

class ThreadGroup final : public SequenceGroup {
 public:
  ThreadGroup(ThreadGroupHub& hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_.size(); }
  bool threads_may_communicate() const override { return true; }
  void sum(double* data, Index count) override { hub_.combine(rank_, data, count, false); }
  void max(double* data, Index count) override { hub_.combine(rank_, data, count, true); }

  std::unique_ptr<PendingMessage> send(int to, int tag, const double* data, Index count) override {
    hub_.post(rank_, to, tag, data, count);  // copied: done at once
    return std::make_unique<Done>();
  }
  std::unique_ptr<PendingMessage> receive(int from, int tag, double* data, Index count) override {
    return std::make_unique<Receive<double>>(hub_, from, rank_, tag, data, count);
  }
  std::unique_ptr<PendingMessage> send(int to, int tag, const float* data, Index count) override {
    hub_.post(rank_, to, tag, data, count);
    return std::make_unique<Done>();
  }
  std::unique_ptr<PendingMessage> receive(int from, int tag, float* data, Index count) override {
    return std::make_unique<Receive<float>>(hub_, from, rank_, tag, data, count);
  }
  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "thread rank %d: %s\n", rank_, message.c_str());
    std::abort();
  }

 private:
  struct Done final : PendingMessage {
    void wait() override {}
    bool done() override { return true; }
  };
  template <class T>
  struct Receive final : PendingMessage {
    Receive(ThreadGroupHub& hub, int from, int to, int tag, T* data, Index count)
        : hub(hub), from(from), to(to), tag(tag), data(data), count(count) {}
    void wait() override {
      if (!received) hub.take(from, to, tag, data, count);
      received = true;
    }
    bool done() override { return received; }
    ThreadGroupHub& hub;
    int from, to, tag;
    T* data;
    Index count;
    bool received = false;
  };

  ThreadGroupHub& hub_;
  int rank_;
};

/// Runs body(group) on `ranks` threads, one rank each, and waits for all of them. Checks made
/// inside body must be thread-safe (collect results and check them afterwards).
inline void run_ranks(int ranks, const std::function<void(SequenceGroup&)>& body) {
  ThreadGroupHub hub(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&hub, &body, r] {
      ThreadGroup group(hub, r);
      body(group);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace polygrad::test
