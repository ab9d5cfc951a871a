#pragma once
// SequenceGroup on an MPI communicator (design.md section 8). Only code that includes this
// header needs MPI (CMake: link polygrad::mpi).
//
//   polygrad::mpi::Environment mpi(argc, argv);      // MPI_Init_thread .. MPI_Finalize
//   polygrad::mpi::Communicator world;               // MPI_COMM_WORLD, duplicated
//   polygrad::SequenceShard shard = polygrad::shard_of(world, n);
//
// Every MPI call is checked: a failure throws polygrad::Error with MPI's own message.

#include <mpi.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "polygrad/parallel/group.hpp"

/// SequenceGroup on MPI (design.md section 8); only code that includes parallel/mpi.hpp
/// needs MPI.
namespace polygrad::mpi {

namespace detail {

/// Throws Error naming the call and MPI's message unless `code` is MPI_SUCCESS.
inline void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(polygrad::detail::concat(call, " failed: ", std::string(text, std::size_t(length))));
}

/// MPI counts are int: larger buffers are an error, not a silent truncation.
inline int count_of(Index count) {
  require<ShapeError>(count >= 0 && count <= INT_MAX, "an MPI message of ", count,
                      " numbers is larger than MPI's int count allows; use more ranks or ",
                      "a smaller state");
  return int(count);
}

}  // namespace detail

/// Initialises MPI for the lifetime of the object (with MPI_THREAD_MULTIPLE when the library
/// offers it, so that heads running on several threads exchange their states independently),
/// and finalises it at the end. One per program.
class Environment {
 public:
  /// Calls MPI_Init_thread with main's arguments; Error if MPI is already initialised.
  Environment(int& argc, char**& argv) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    require<Error>(!initialised,
                   "MPI is already initialised: make one mpi::Environment per program");
    detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided_),
                  "MPI_Init_thread");
  }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() { MPI_Finalize(); }
  /// The thread level MPI provides (MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE).
  int thread_level() const { return provided_; }

 private:
  int provided_ = MPI_THREAD_SINGLE;
};

/// A PendingMessage on one MPI request. A message dropped before it completed is waited for by
/// its destructor (MPI_Abort if that fails), so its buffer is never touched after it is freed.
class Message final : public PendingMessage {
 public:
  Message() = default;
  /// The request that MPI_Isend or MPI_Irecv fills in (MPI_REQUEST_NULL until then).
  MPI_Request* request() { return &request_; }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    detail::check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
  }
  bool done() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int flag = 0;
    detail::check(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    return flag != 0;
  }
  ~Message() override {
    // A message dropped without wait() is completed here, so its buffer is never read after
    // the caller freed it. Errors cannot be thrown from a destructor: the program aborts.
    if (request_ != MPI_REQUEST_NULL && MPI_Wait(&request_, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      MPI_Abort(MPI_COMM_WORLD, 1);
  }

 private:
  MPI_Request request_ = MPI_REQUEST_NULL;
};

/// A SequenceGroup on its own duplicate of an MPI communicator (so that polygrad's messages
/// never match the caller's).
class Communicator final : public SequenceGroup {
 public:
  /// A group of the ranks of `comm`, on a duplicate of it (MPI_Comm_dup: a collective).
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) {
    detail::check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    int level = MPI_THREAD_SINGLE;
    detail::check(MPI_Query_thread(&level), "MPI_Query_thread");
    threads_ = level == MPI_THREAD_MULTIPLE;
  }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ~Communicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool threads_may_communicate() const override { return threads_; }
  /// The duplicated communicator polygrad's messages use.
  MPI_Comm comm() const { return comm_; }

  /// Bytes this rank has sent in messages (the states handed between shards) since it was made.
  std::uint64_t bytes_sent() const { return bytes_sent_; }
  /// Bytes this rank has passed to sums and maxima since it was made.
  std::uint64_t bytes_reduced() const { return bytes_reduced_; }

  void sum(double* data, Index count) override {
    bytes_reduced_ += std::uint64_t(count) * sizeof(double);
    detail::check(
        MPI_Allreduce(MPI_IN_PLACE, data, detail::count_of(count), MPI_DOUBLE, MPI_SUM, comm_),
        "MPI_Allreduce (sum)");
  }
  void max(double* data, Index count) override {
    bytes_reduced_ += std::uint64_t(count) * sizeof(double);
    detail::check(
        MPI_Allreduce(MPI_IN_PLACE, data, detail::count_of(count), MPI_DOUBLE, MPI_MAX, comm_),
        "MPI_Allreduce (max)");
  }
  std::unique_ptr<PendingMessage> send(int to, int tag, const double* data, Index count) override {
    return start_send(to, tag, data, count, MPI_DOUBLE);
  }
  std::unique_ptr<PendingMessage> receive(int from, int tag, double* data, Index count) override {
    return start_receive(from, tag, data, count, MPI_DOUBLE);
  }
  std::unique_ptr<PendingMessage> send(int to, int tag, const float* data, Index count) override {
    return start_send(to, tag, data, count, MPI_FLOAT);
  }
  std::unique_ptr<PendingMessage> receive(int from, int tag, float* data, Index count) override {
    return start_receive(from, tag, data, count, MPI_FLOAT);
  }
  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "polygrad: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 1);
    std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
  }

 private:
  template <class T>
  std::unique_ptr<PendingMessage> start_send(int to, int tag, const T* data, Index count,
                                             MPI_Datatype type) {
    bytes_sent_ += std::uint64_t(count) * sizeof(T);
    auto message = std::make_unique<Message>();
    detail::check(
        MPI_Isend(data, detail::count_of(count), type, to, tag, comm_, message->request()),
        "MPI_Isend");
    return message;
  }
  template <class T>
  std::unique_ptr<PendingMessage> start_receive(int from, int tag, T* data, Index count,
                                                MPI_Datatype type) {
    auto message = std::make_unique<Message>();
    detail::check(
        MPI_Irecv(data, detail::count_of(count), type, from, tag, comm_, message->request()),
        "MPI_Irecv");
    return message;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool threads_ = false;
  std::atomic<std::uint64_t> bytes_sent_{0}, bytes_reduced_{0};
};

}  // namespace polygrad::mpi
