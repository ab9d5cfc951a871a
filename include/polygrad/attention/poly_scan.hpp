#pragma once
// The chunk scan shared by every polynomial route (design.md section 5): the sequence is cut
// into chunks of C rows, and one running feature state is carried across them, in forward or
// reverse order. Each chunk first reads the state (the rows before it in scan order), then
// enters it. The forward pass, both passes of the adjoint backward and both of the paper
// backward are this one scan with different read and add steps; the non-causal case is the
// scan in which every chunk reads the state of the whole sequence.
//
// A scan starts from whatever its state holds and leaves the final state behind. When the
// sequence is split across processes (design.md section 8), a ScanLink joins the scans of the
// shards: a causal scan starts from the final state of the shard before it in scan order and
// hands its own on to the shard after it; a non-causal scan reads the sum of every shard's state.

#include <algorithm>

#include "polygrad/approx/feature_products.hpp"
#include "polygrad/parallel/group.hpp"

/// The polynomial method on one head: the chunk scan, the forward pass and the two backward
/// routes (design.md sections 4-5). PolyAttention runs them on every head.
namespace polygrad::poly {

/// Rows [begin, begin + size) of the sequence.
struct Chunk {
  /// The chunk's first row and its number of rows.
  ///@{
  Index begin, size;
  ///@}
};

/// The direction of a chunk scan.
enum class ScanOrder {
  forward,  ///< chunk 0 first: prefix states (rows before)
  reverse,  ///< the last chunk first: suffix states (rows after)
};

/// The chunks of rows [0, n) in scan order.
class ChunkScan {
 public:
  /// Chunks of `chunk` rows (the last may be shorter) visited in `order`; PlanError if
  /// chunk < 1.
  ChunkScan(Index n, Index chunk, ScanOrder order) : n_(n), chunk_(chunk), order_(order) {
    require<PlanError>(chunk >= 1, "the chunk size must be at least 1, got ", chunk);
  }
  /// The number of chunks, n / chunk rounded up.
  Index count() const { return (n_ + chunk_ - 1) / chunk_; }
  /// The i-th chunk visited.
  Chunk operator[](Index i) const {
    const Index c = order_ == ScanOrder::forward ? i : count() - 1 - i;
    const Index begin = c * chunk_;
    return {begin, std::min(chunk_, n_ - begin)};
  }
  /// n, the rows scanned.
  Index rows() const { return n_; }
  /// The direction of the scan.
  ScanOrder order() const { return order_; }

 private:
  Index n_, chunk_;
  ScanOrder order_;
};

/// Calls body(begin, size) for the strips of W = simd::width<T> rows that make up a chunk (the
/// last may be shorter); `begin` counts from the chunk's first row. Monomials are built and used
/// one strip at a time, so that a block of them stays in cache (monomial_block.hpp).
template <class T, class Body>
void for_each_strip(Chunk chunk, Body&& body) {
  constexpr Index W = simd::width<T>;
  for (Index begin = 0; begin < chunk.size; begin += W)
    body(begin, std::min(W, chunk.size - begin));
}

/// A running sum, in double, of monomial-weighted rows: S += M X for the monomials M (k x W)
/// and rows X (W x m) of each strip that enters. Stored transposed, (m x k), as
/// feature_products.hpp takes states. Sums over at most `fold_rows` rows are formed in T, then
/// added in double (design.md section 7: the long sums stay in double whatever T is).
/// refresh() returns diag(w) S in T, the state with the pair weights applied, ready for reading.
///
/// A causal scan refreshes after every chunk, so a fold waits until the next rows would exceed
/// `fold_rows` or a refresh comes, and folding and refreshing are then one pass over the state;
/// the partial sum in T is not cleared after a fold but overwritten by the next strip that
/// enters (it holds nothing while no rows are pending).
template <class T>
class FeatureState {
 public:
  /// S = 0 for k features and rows of m columns; sums in T are folded into double once
  /// `fold_rows` rows have entered.
  FeatureState(Index k, Index m, Index fold_rows)
      : sumT_(Matrix<double>::Zero(m, k)),
        partialT_(Matrix<T>::Zero(m, padded_rows<T>(k))),
        currentT_(Matrix<T>::Zero(m, k)),
        fold_rows_(fold_rows) {}
  /// rows: (W x m), zero past the strip's rows.
  void add(const Monomials<T>& monomials, const ConstMatrixRef<T>& rows,
           ProductScratch<T>& scratch) {
    if (pending_ + rows.rows() > fold_rows_) fold();
    add_monomial_products(monomials, rows, partialT_, scratch,
                          pending_ == 0 ? Update::assign : Update::add);
    pending_ += rows.rows();
  }
  /// Sets the working copy to (diag(w) S)^T in T and returns it: (m x k).
  const Matrix<T>& refresh(const Vector<double>& w) {
    require<ShapeError>(w.size() == sumT_.cols(), "FeatureState::refresh: ", w.size(),
                        " weights for ", sumT_.cols(), " features");
    const Index m = sumT_.rows(), k = sumT_.cols();
    for (Index j = 0; j < m; ++j) {
      double* sum = sumT_.row(j).data();
      const T* partial = partialT_.row(j).data();
      T* current = currentT_.row(j).data();
      if (pending_ > 0) {
        for (Index f = 0; f < k; ++f) {
          sum[f] += double(partial[f]);
          current[f] = T(sum[f] * w(f));
        }
      } else {
        for (Index f = 0; f < k; ++f) current[f] = T(sum[f] * w(f));
      }
    }
    pending_ = 0;
    return currentT_;
  }
  /// S^T in double, (m x k): the start plus every row added so far.
  const Matrix<double>& total() {
    fold();
    return sumT_;
  }
  /// k, the number of features.
  Index features() const { return sumT_.cols(); }
  /// m, the columns of the rows that enter.
  Index width() const { return sumT_.rows(); }
  /// Starts again from S^T = `start` (m x k), e.g. the state of the shards before this one.
  void reset(const Matrix<double>& start) {
    require_shape(start, sumT_.rows(), sumT_.cols(), "the start of a feature state");
    pending_ = 0;
    sumT_ = start;
  }

 private:
  void fold() {
    if (pending_ == 0) return;
    sumT_ += partialT_.leftCols(sumT_.cols()).template cast<double>();
    pending_ = 0;
  }

  Matrix<double> sumT_;  // (m, k)
  Matrix<T> partialT_;   // (m, k padded to whole packets): rows added since the last fold, if any
  Matrix<T> currentT_;   // (m, k)
  Index fold_rows_, pending_ = 0;
};

/// How one pass of one head's scan joins the same pass on the other shards of the sequence.
/// Without a split shard the scan is alone. Each joined pass uses two message tags: `tag` for
/// the state handed along the shards and tag + 1 for the whole-sequence sum (non-causal).
struct ScanLink {
  SequenceShard shard;  ///< this process's part of the sequence; the scan is alone unless split
  int tag = 0;          ///< the tag of the state handed along; tag + 1 for the sum of all states
  /// Whether other shards take part in the scan.
  bool joined() const { return shard.split(); }
};

/// The scan of a causal route: each chunk, in scan order, reads the state as it stands -- the
/// start plus the chunks visited before it -- then enters it. read(chunk, S) gets the state
/// refreshed (m x k, weights applied); add(chunk, state) adds the chunk's rows.
template <class T, class Read, class Add>
void scan_causal(const ChunkScan& chunks, FeatureState<T>& state, const Vector<double>& w,
                 Read&& read, Add&& add) {
  for (Index i = 0; i < chunks.count(); ++i) {
    read(chunks[i], state.refresh(w));
    add(chunks[i], state);
  }
}

/// The scan of a non-causal route: every chunk enters the state, then every chunk reads the
/// state of the whole sequence (plus the start).
template <class T, class Read, class Add>
void scan_whole(const ChunkScan& chunks, FeatureState<T>& state, const Vector<double>& w,
                Read&& read, Add&& add) {
  for (Index i = 0; i < chunks.count(); ++i) add(chunks[i], state);
  const Matrix<T>& S = state.refresh(w);
  for (Index i = 0; i < chunks.count(); ++i) read(chunks[i], S);
}

namespace detail {

/// scan_causal across shards: the state starts from the final state of the shard before this
/// one in scan order, and this shard's final state goes to the shard after it.
template <class T, class Read, class Add>
void scan_causal_joined(const ChunkScan& chunks, FeatureState<T>& state, const Vector<double>& w,
                        Read&& read, Add&& add, const ScanLink& link) {
  SequenceGroup& group = *link.shard.group;
  const bool forward = chunks.order() == ScanOrder::forward;
  const int before = group.rank() + (forward ? -1 : 1), after = group.rank() + (forward ? 1 : -1);
  if (before >= 0 && before < group.size()) {
    Matrix<double> start(state.width(), state.features());
    receive_matrix(group, before, link.tag, start);
    state.reset(start);
  }
  scan_causal(chunks, state, w, read, add);
  if (after >= 0 && after < group.size())
    link.shard.outbox->send(group, after, link.tag, state.total());
}

/// scan_whole across shards: every chunk enters the local state; the local states are summed
/// along the shards in scan order, the shard at the end of that order sends the sum to every
/// other, and every chunk reads it.
template <class T, class Read, class Add>
void scan_whole_joined(const ChunkScan& chunks, FeatureState<T>& state, const Vector<double>& w,
                       Read&& read, Add&& add, const ScanLink& link) {
  SequenceGroup& group = *link.shard.group;
  const bool forward = chunks.order() == ScanOrder::forward;
  const int rank = group.rank(), P = group.size();
  const int before = rank + (forward ? -1 : 1), after = rank + (forward ? 1 : -1);
  const int end = forward ? P - 1 : 0;
  for (Index i = 0; i < chunks.count(); ++i) add(chunks[i], state);
  Matrix<double> sum(state.width(), state.features());
  if (before >= 0 && before < P) {
    receive_matrix(group, before, link.tag, sum);
    sum += state.total();
  } else {
    sum = state.total();
  }
  if (rank == end) {
    for (int r = 0; r < P; ++r)
      if (r != rank) link.shard.outbox->send(group, r, link.tag + 1, sum);
  } else {
    link.shard.outbox->send(group, after, link.tag, sum);
    receive_matrix(group, end, link.tag + 1, sum);
  }
  state.reset(sum);
  const Matrix<T>& S = state.refresh(w);
  for (Index i = 0; i < chunks.count(); ++i) read(chunks[i], S);
}

}  // namespace detail

/// scan_causal or scan_whole, joined to the other shards' scans when `link` says so.
template <class T, class Read, class Add>
void scan(bool causal, const ChunkScan& chunks, FeatureState<T>& state, const Vector<double>& w,
          Read&& read, Add&& add, const ScanLink& link = {}) {
  if (link.joined()) {
    if (causal) {
      detail::scan_causal_joined(chunks, state, w, read, add, link);
    } else {
      detail::scan_whole_joined(chunks, state, w, read, add, link);
    }
  } else if (causal) {
    scan_causal(chunks, state, w, read, add);
  } else {
    scan_whole(chunks, state, w, read, add);
  }
}

}  // namespace polygrad::poly
