#pragma once
// A sequence split across processes (design.md section 8): the rows each process owns, and the
// few exchanges that sharded attention and a sharded model need -- tagged messages of double
// buffers between the shards, and sums and maxima over all of them.
//
// This header needs no MPI: it is the interface the library is written against.
// parallel/mpi.hpp implements it on an MPI communicator; code that never shards a sequence
// never sees either.

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "polygrad/core/error.hpp"
#include "polygrad/core/types.hpp"

namespace polygrad {

/// Rows [begin, begin + rows) of a sequence.
struct RowRange {
  /// The first row and the number of rows.
  ///@{
  Index begin = 0, rows = 0;
  ///@}
  /// One past the last row, begin + rows.
  Index end() const { return begin + rows; }
};

/// The balanced shard of `rank` among `size` ranks of a sequence of `total` rows: contiguous,
/// in rank order, the first total % size ranks one row longer than the rest. A rank may own no
/// rows when size > total (callers that need rows on every rank say so: require_rows_per_rank).
inline RowRange balanced_shard(Index total, int rank, int size) {
  require<ShapeError>(size >= 1 && rank >= 0 && rank < size, "balanced_shard: rank ", rank, " of ",
                      size, " does not exist");
  require<ShapeError>(total >= 0, "balanced_shard: a sequence of ", total, " rows");
  const Index base = total / size, extra = total % size;
  const Index begin = rank * base + std::min<Index>(rank, extra);
  return {begin, base + (rank < extra ? 1 : 0)};
}

/// A message in flight. wait() returns once the buffer it was given may be reused (a send) or
/// read (a receive); done() says whether that is so already, without waiting.
class PendingMessage {
 public:
  virtual ~PendingMessage() = default;
  /// Blocks until the message has completed.
  virtual void wait() = 0;
  /// Whether the message has completed; does not block.
  virtual bool done() = 0;
};

/// The processes that share one sequence, each holding a contiguous shard of its rows.
///
/// Collectives (sum, max) are called by every rank in the same order, from one thread at a time.
/// Messages are matched by (sender, tag) in the order they were sent; several threads may send
/// and receive at once when threads_may_communicate().
class SequenceGroup {
 public:
  virtual ~SequenceGroup() = default;
  /// This process's rank, 0 <= rank() < size(); shards are in rank order.
  virtual int rank() const = 0;
  /// The number of processes sharing the sequence.
  virtual int size() const = 0;
  /// Whether several threads of this process may exchange messages at the same time.
  virtual bool threads_may_communicate() const = 0;
  /// data[i] = the sum over ranks of data[i], on every rank; summed in rank order.
  virtual void sum(double* data, Index count) = 0;
  /// data[i] = the largest data[i] over ranks, on every rank.
  virtual void max(double* data, Index count) = 0;
  /// Starts sending count doubles to rank `to`; `data` must live until wait() returned.
  virtual std::unique_ptr<PendingMessage> send(int to, int tag, const double* data,
                                               Index count) = 0;
  /// Starts receiving count doubles from rank `from` into `data`.
  virtual std::unique_ptr<PendingMessage> receive(int from, int tag, double* data, Index count) = 0;
  /// The same for floats: rows of keys and values travel in their own precision (ring
  /// attention), states always in double.
  virtual std::unique_ptr<PendingMessage> send(int to, int tag, const float* data, Index count) = 0;
  /// Starts receiving count floats from rank `from` into `data`.
  virtual std::unique_ptr<PendingMessage> receive(int from, int tag, float* data, Index count) = 0;
  /// Ends the program on every rank after printing `message`: the way out of an error that one
  /// rank found while others may be waiting for its messages.
  [[noreturn]] virtual void abort(const std::string& message) = 0;
};

/// Sends that stay in flight, with copies of their data, until they are done: a rank hands its
/// final state to the next shard and goes on with its own work (the next head, the next layer)
/// without waiting for the receiver. Completed sends are released at the next send; the rest
/// at wait_all() or destruction. Several threads may send through one outbox.
class Outbox {
 public:
  Outbox() = default;
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  ~Outbox() { wait_all(); }

  /// Sends a copy of `data`, as doubles, to rank `to` of `group` and returns without waiting.
  template <class Derived>
  void send(SequenceGroup& group, int to, int tag, const Eigen::MatrixBase<Derived>& data) {
    auto copy = std::make_unique<Matrix<double>>(data);
    std::unique_ptr<PendingMessage> message = group.send(to, tag, copy->data(), copy->size());
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::size_t i = 0; i < messages_.size();) {  // release what has been delivered
      if (messages_[i]->done()) {
        messages_.erase(messages_.begin() + std::ptrdiff_t(i));
        buffers_.erase(buffers_.begin() + std::ptrdiff_t(i));
      } else {
        ++i;
      }
    }
    buffers_.push_back(std::move(copy));
    messages_.push_back(std::move(message));
  }
  /// Waits until every send is done and releases their copies.
  void wait_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& message : messages_) message->wait();
    messages_.clear();
    buffers_.clear();
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Matrix<double>>> buffers_;
  std::vector<std::unique_ptr<PendingMessage>> messages_;
};

/// This process's part of a sequence. Without a group the whole sequence is here. Copies
/// share one outbox for the states they hand on.
struct SequenceShard {
  SequenceGroup* group =
      nullptr;      ///< the processes sharing the sequence; nullptr: all rows are here
  Index begin = 0;  ///< the global row of this shard's first row
  Index total = 0;  ///< rows of the whole sequence
  std::shared_ptr<Outbox> outbox;  ///< holds the sends of states handed to the next shard

  /// Whether other processes hold other rows of the sequence.
  bool split() const { return group != nullptr && group->size() > 1; }
  /// This shard's rank (0 without a group).
  int rank() const { return group ? group->rank() : 0; }
  /// The number of shards (1 without a group).
  int size() const { return group ? group->size() : 1; }
  /// Whether this shard holds the start of the sequence (rank 0).
  bool first() const { return rank() == 0; }
  /// Whether this shard holds the end of the sequence (the last rank).
  bool last() const { return rank() == size() - 1; }
};

/// The balanced shard of this rank in `group` of a sequence of `total` rows; ShapeError when
/// there are more ranks than rows. (A shard made by hand may hold no rows at all.)
inline SequenceShard shard_of(SequenceGroup& group, Index total) {
  require<ShapeError>(total >= group.size(), "a sequence of ", total, " rows split over ",
                      group.size(), " ranks: more ranks than rows; run with at most ", total,
                      " ranks");
  const RowRange rows = balanced_shard(total, group.rank(), group.size());
  return {&group, rows.begin, total, std::make_shared<Outbox>()};
}

/// Receives a matrix of known shape from `from`: blocks until it arrived.
inline void receive_matrix(SequenceGroup& group, int from, int tag, Matrix<double>& out) {
  group.receive(from, tag, out.data(), out.size())->wait();
}

/// Throws `E` with `message` on every rank unless `value` is the same on every rank (a
/// configuration, a row count, a plan that the ranks must agree on). A collective.
template <class E = ShapeError, class... Parts>
void require_same_on_every_rank(SequenceGroup& group, double value, const Parts&... message) {
  double extremes[2] = {value, -value};
  group.max(extremes, 2);
  if (extremes[0] != -extremes[1]) {
    throw E(detail::concat(message..., " (rank ", group.rank(), " has ", value, "; the ranks ",
                           "range from ", -extremes[1], " to ", extremes[0], ")"));
  }
}

/// Throws `E` with `message` on every rank if `failed` holds on any rank. A collective: every
/// rank learns of an error found by one, so none is left waiting for the others.
template <class E = Error, class... Parts>
void require_on_every_rank(SequenceGroup& group, bool ok, const Parts&... message) {
  double failed = ok ? 0.0 : 1.0 + group.rank();
  group.max(&failed, 1);
  if (failed > 0) {
    throw E(detail::concat(message..., " (found on rank ", int(failed) - 1, ")"));
  }
}

}  // namespace polygrad
