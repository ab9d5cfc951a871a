#pragma once
// One safetensors file from a sequence split across processes (design.md section 8): the file
// one process would have written. Tensors whose rows the ranks hold in shards (an output, an
// input gradient) are written by rank 0, which receives the other ranks' rows piece by piece as
// the file reaches them; tensors every rank holds whole (summed parameter gradients) come from
// rank 0's copy. No rank holds more than its own rows and one piece of another's.
//
//     ShardedWriter out("grads.safetensors", shard);
//     out.add("grad.W", W_grad);              // the same on every rank
//     out.add_rows("output", y_local);        // this rank's rows of [n, D]
//     out.write();                            // every rank calls it

#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "polygrad/io/safetensors_writer.hpp"
#include "polygrad/parallel/group.hpp"

namespace polygrad {

/// The safetensors file one process would have written, from a sequence split across ranks:
/// rank 0 writes it, receiving the other ranks' rows of the sharded tensors piece by piece.
/// Every rank adds the same tensors and calls write().
class ShardedWriter {
 public:
  /// A file written at `path` by rank 0 of shard.group (or by this process when the sequence
  /// is not split) from the rows each rank holds.
  ShardedWriter(std::string path, SequenceShard shard)
      : shard_(std::move(shard)), writer_(std::move(path)) {}

  /// The string metadata; rank 0's is written.
  std::map<std::string, std::string>& metadata() { return writer_.metadata(); }

  /// A tensor every rank holds whole, valid until write(): rank 0's copy is written.
  template <class T>
  void add(const std::string& name, const std::vector<Index>& shape, const T* data) {
    if (shard_.rank() == 0) writer_.add<T>(name, shape, data);
    ++whole_;
  }
  /// A matrix every rank holds whole, [rows, cols], valid until write().
  template <class T>
  void add(const std::string& name, const Matrix<T>& m) {
    add<T>(name, {m.rows(), m.cols()}, m.data());
  }

  /// Tensor `name`, [n, width] (heads = 1) or [heads, n, width], of which this rank holds rows
  /// [shard.begin, shard.begin + local.rows()) of every head as `local`: rows x (heads width),
  /// head h in columns [h width, (h + 1) width). By reference: valid until write().
  template <class T>
  void add_rows(const std::string& name, const Matrix<T>& local, Index heads = 1) {
    require<ShapeError>(heads >= 1 && local.cols() % heads == 0, "ShardedWriter: tensor '", name,
                        "' has ", local.cols(), " columns, which ", heads, " heads do not divide");
    require<ShapeError>(sharded_.empty() || local.rows() == local_rows_, "ShardedWriter: tensor '",
                        name, "' has ", local.rows(), " rows here, the tensors added before it ",
                        local_rows_, "; every sharded tensor holds this rank's rows");
    local_rows_ = local.rows();
    sharded_[name] = [this, name, &local, heads](bool root) {
      if (root) {
        add_gathered<T>(name, local, heads);
      } else {
        send_rows<T>(local, heads);
      }
    };
  }

  /// The tensors added (rank 0's count).
  std::size_t size() const { return writer_.size(); }

  /// Writes the file: a collective, every rank having added the same tensors. Split across
  /// processes, an error while writing (a full disk) ends the program on every rank with its
  /// message, after the writer has removed its temporary: the other ranks would wait forever.
  void write() {
    if (!shard_.split()) {
      for (auto& [name, add] : sharded_) add(true);
      writer_.write();
      return;
    }
    SequenceGroup& group = *shard_.group;
    require_same_on_every_rank(group, double(sharded_.size()), "ShardedWriter: the ranks added ",
                               "different numbers of sharded tensors");
    require_same_on_every_rank(group, double(whole_), "ShardedWriter: the ranks added different ",
                               "numbers of whole tensors");
    std::vector<double> counts(std::size_t(group.size()), 0.0);
    counts[std::size_t(group.rank())] = double(local_rows_);
    group.sum(counts.data(), Index(counts.size()));
    rows_of_.assign(counts.begin(), counts.end());
    Index all = 0, before = 0;
    for (int r = 0; r < group.size(); ++r) {
      if (r < group.rank()) before += rows_of_[std::size_t(r)];
      all += rows_of_[std::size_t(r)];
    }
    require_on_every_rank<ShapeError>(
        group, all == shard_.total && before == shard_.begin, "ShardedWriter: the ranks hold ", all,
        " rows in all, the ", "sequence has ", shard_.total, ", and this rank's rows start ", "at ",
        shard_.begin, " where the ranks before it end at ", before);
    try {
      const bool root = group.rank() == 0;
      for (auto& [name, add] : sharded_) add(root);  // other ranks send here, in name order
      if (root) writer_.write();
    } catch (const std::exception& e) {
      group.abort(e.what());
    }
  }

 private:
  /// Message tag of the rows sent to rank 0 (apart from attention's, exact_ring.hpp).
  static constexpr int rows_tag = 30010;
  /// Rows per message: about 512 KiB of doubles.
  static Index piece_rows(Index width) { return std::max<Index>(1, (Index(1) << 16) / width); }

  /// Sends this rank's rows of every head to rank 0 in the order rank 0 writes them: head by
  /// head, pieces of piece_rows() rows, each sent when the last was received.
  template <class T>
  void send_rows(const Matrix<T>& local, Index heads) {
    const Index width = local.cols() / heads, piece = piece_rows(width);
    Matrix<T> buffer;
    for (Index h = 0; h < heads; ++h) {
      for (Index i = 0; i < local.rows(); i += piece) {
        const Index count = std::min(piece, local.rows() - i);
        buffer = local.block(i, h * width, count, width);
        shard_.group->send(0, rows_tag, buffer.data(), buffer.size())->wait();
      }
    }
  }

  /// On rank 0: adds `name` to the writer with a source that reads rank 0's rows from `local`
  /// and receives every other rank's rows in the order the writer asks for them.
  template <class T>
  void add_gathered(const std::string& name, const Matrix<T>& local, Index heads) {
    const Index width = local.cols() / heads, n = shard_.split() ? shard_.total : local.rows();
    std::vector<Index> shape{n, width};
    if (heads > 1) shape.insert(shape.begin(), heads);
    // First row of every rank, and the piece of another rank's rows last received.
    std::vector<Index> begin_of(rows_of_.size() + 1, 0);
    for (std::size_t r = 0; r < rows_of_.size(); ++r) begin_of[r + 1] = begin_of[r] + rows_of_[r];
    struct Piece {
      Matrix<T> rows;  // (count, width)
      Index head = -1, first = 0;
    };
    auto piece = std::make_shared<Piece>();
    const Index own = local.rows(), step = piece_rows(width);
    auto value = [this, piece, begin_of, &local, width, own, step](Index h, Index i, Index c) -> T {
      if (i < own) return local(i, h * width + c);  // rank 0 holds rows [0, own)
      if (piece->head != h || i < piece->first || i >= piece->first + piece->rows.rows()) {
        const int r =
            int(std::upper_bound(begin_of.begin(), begin_of.end(), i) - begin_of.begin()) - 1;
        const Index first = begin_of[std::size_t(r)] + (i - begin_of[std::size_t(r)]) / step * step;
        piece->rows.resize(std::min(step, begin_of[std::size_t(r) + 1] - first), width);
        shard_.group->receive(r, rows_tag, piece->rows.data(), piece->rows.size())->wait();
        piece->head = h;
        piece->first = first;
      }
      return piece->rows(i - piece->first, c);
    };
    writer_.add<T>(
        name, shape,
        SafetensorsWriter::Source<T>([value, n, width](Index first, Index count, T* out) {
          Index h = first / (n * width), i = first / width % n, c = first % width;
          for (Index e = 0; e < count; ++e) {
            out[e] = value(h, i, c);
            if (++c == width) {
              c = 0;
              if (++i == n) {
                i = 0;
                ++h;
              }
            }
          }
        }));
  }

  SequenceShard shard_;
  SafetensorsWriter writer_;
  std::map<std::string, std::function<void(bool root)>> sharded_;
  std::size_t whole_ = 0;
  Index local_rows_ = 0;        // this rank's rows of every sharded tensor
  std::vector<Index> rows_of_;  // every rank's rows, in rank order
};

}  // namespace polygrad
