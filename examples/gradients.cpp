// polygrad_gradients: gradients of a Transformer, or of one attention call, from and to
// safetensors files, so that other tools (PyTorch, JAX) can check polygrad and vice versa.
//
//   polygrad_gradients --model M --data D --out G [--dtype float|double] [--qk-norm tau]
//                      [--recompute] [--threads t] [attention flags]
//       D: input [n, D], target [n, D]. Y = model(input), L = 1/2 ||Y - target||^2.
//       G: output [n, D], loss [1], grad.input [n, D], grad.<parameter> for every parameter;
//       metadata plan.layer<i>: how each head of layer i was computed (one line per head).
//   polygrad_gradients attention --data D --out G [--causal] [--scale c | --qk-norm tau]
//                      [--dtype ...] [attention flags]
//       D: q, k, v, do, each [H, n, d_h]. G: o, dq, dk, dv of the same shapes; metadata plan.
//   polygrad_gradients compare A B [--tolerance t]
//       relative Frobenius error ||a - b|| / ||b|| of every tensor the two files share.
//   polygrad_gradients init --out M [--layers --d-model --heads --d-ff --causal/--no-causal
//                                    --scale --qk-norm --seed --dtype]
//   polygrad_gradients make-data --model M --tokens n --out D [--seed s]       (input, target)
//   polygrad_gradients make-data --heads H --head-dim d --tokens n --out D     (q, k, v, do)
//
//   attention flags (support/attention_cli.hpp): --attention exact|poly|auto,
//       --route adjoint|paper, --family chebyshev|taylor, --degree g | --epsilon e, --bound R,
//       --audit s (default 32 rows per head for poly/auto, 0 disables).
//
// Data are read with SafetensorsReader straight into the matrices and results streamed out with
// SafetensorsWriter, so the program holds no second copy of either. Each mode prints its time
// and its peak resident memory; the model mode a progress line per layer and pass on stderr.
//
// Built with MPI (CMake found it), the model and attention modes split the sequence across the
// ranks of `mpirun -np P polygrad_gradients ...` (docs/sequence_parallel.md): each rank reads
// only its rows of the data file, attention joins the ranks (polynomial scans or ring exact),
// and rank 0 writes the same output file one process would, receiving the other ranks' rows as
// it writes them. init, make-data and compare run in one process.
//
// Errors: `polygrad_gradients: <message>` on stderr and exit status 1; command-line usage
// errors exit with status 2 after the usage text.

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "polygrad/io/checkpoint.hpp"
#include "polygrad/io/safetensors.hpp"
#include "polygrad/io/safetensors_reader.hpp"
#include "polygrad/io/safetensors_writer.hpp"
#include "polygrad/layers/multihead_attention.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"
#include "polygrad/parallel/reduce.hpp"
#include "polygrad/parallel/sharded_writer.hpp"
#if defined(POLYGRAD_GRADIENTS_WITH_MPI)
#include "polygrad/parallel/mpi.hpp"
#endif
#include "support/attention_cli.hpp"
#include "support/format.hpp"
#include "support/program.hpp"
#include "support/progress.hpp"
#include "support/resources.hpp"

namespace {

using namespace polygrad;

constexpr const char* program_name = "polygrad_gradients";

using examples::AttentionCli;

// ---------------------------------------------------------------------------------------------
// Options of each mode.

struct ModelOptions {
  std::string model, data, out;
  std::string dtype = "double";
  double qk_norm = 0;  // > 0: overrides the model's QK normalisation
  bool recompute = false;
  AttentionCli attention;
};

struct AttentionOptions {
  std::string data, out;
  bool causal = false;
  double scale = 0;    // 0: 1/sqrt(d_h)
  double qk_norm = 0;  // > 0: normalise q and k per head, scale tau, score bound tau
  std::string dtype = "double";
  AttentionCli attention;
};

int threads = 0;  // --threads, every mode: 0 is OpenMP's default

struct CompareOptions {
  std::string first, second;
  double tolerance = -1;  // < 0: report only
};

struct InitOptions {
  std::string out;
  TransformerConfig config = TransformerConfig::demo();  // the demo model unless told otherwise
  double scale = 0, qk_norm = 0;                         // 0: not set
  bool no_qk_norm = false;
  std::uint64_t seed = Transformer<double>::default_seed;
  std::string dtype = "double";
};

struct MakeDataOptions {
  std::string model, out;
  Index tokens = 0, heads = 0, head_dim = 0;
  std::uint64_t seed = 1;
  std::string dtype = "double";
};

using examples::Progress;
using examples::Stopwatch;
using examples::with_dtype;

// ---------------------------------------------------------------------------------------------
// The ranks of mpirun, when the program is built with MPI.

SequenceGroup* world = nullptr;  // null without MPI

int world_size() { return world ? world->size() : 1; }
bool is_root() { return !world || world->rank() == 0; }

/// The shard of a sequence of n rows this rank holds (the whole of it in one process), and its
/// rows. ShapeError on every rank when there are more ranks than rows.
SequenceShard sequence_shard(Index n, RowRange& rows) {
  if (world_size() == 1) {
    rows = {0, n};
    return {};
  }
  SequenceShard shard = shard_of(*world, n);
  rows = balanced_shard(n, world->rank(), world->size());
  return shard;
}

/// The largest `value` over the ranks.
double most_over_ranks(double value) {
  if (world_size() > 1) world->max(&value, 1);
  return value;
}

/// Refuses a mode that writes or reads one file as a whole under mpirun.
void require_one_process(const char* mode) {
  require<Error>(world_size() == 1, mode, " runs in one process; it was started on ", world_size(),
                 " ranks: run it without mpirun (or with -np 1)");
}

/// The last line of every mode's report (the most of any rank, split across ranks). A
/// collective when split.
void print_peak_memory() {
  const double peak = most_over_ranks(examples::peak_memory_mib());
  if (!is_root()) return;
  std::cout << "peak resident memory " << (world_size() > 1 ? "per rank (most) " : "") << std::fixed
            << std::setprecision(0) << peak << " MiB\n"
            << std::defaultfloat;
}

/// The metadata every output file carries: program, attention summary and dtype.
std::map<std::string, std::string> run_metadata(const AttentionCli& attention,
                                                const std::string& dtype) {
  return {{"program", program_name}, {"attention", attention.summary()}, {"dtype", dtype}};
}

// ---------------------------------------------------------------------------------------------
// Model mode: output, loss and every gradient of a Transformer.

template <class T>
void run_model(const ModelOptions& o) {
  SafetensorsFile checkpoint = SafetensorsFile::read(o.model);
  // The configuration lives in the metadata, so --qk-norm edits it before the model is built.
  if (o.qk_norm > 0) checkpoint.metadata()["qk_norm"] = detail::round_trip_string(o.qk_norm);
  Transformer<T> model = load_transformer<T>(checkpoint, o.attention.make<T>());
  const TransformerConfig& config = model.config();
  Threading threading;
  threading.threads = threads;
  model.set_threading(threading);
  model.set_recompute(o.recompute);
  SafetensorsReader data(o.data);
  for (const char* name : {"input", "target"}) {
    const std::vector<Index>& shape = data.shape(name);
    require<ShapeError>(shape.size() == 2 && shape[0] >= 1 && shape[1] == config.d_model, o.data,
                        ": ", name, " must be [n, ", config.d_model, "] with n >= 1 to match the ",
                        "model's d_model, got ", detail::shape_string(shape));
  }
  require<ShapeError>(data.shape("target") == data.shape("input"), o.data,
                      ": target must have the shape of input ",
                      detail::shape_string(data.shape("input")), ", got ",
                      detail::shape_string(data.shape("target")));
  const Index n = data.shape("input")[0];
  if (is_root())
    o.attention.warn_if_much_slower<T>(n, config.d_model / config.heads, config.causal,
                                       config.qk_norm.value_or(0), std::cerr);
  RowRange rows;
  const SequenceShard shard = sequence_shard(n, rows);
  if (shard.split()) model.set_shard(shard);
  Progress progress(false, 10.0);
  if (is_root()) {
    model.set_observer([&](const LayerEvent& e) {
      progress.update(std::string(e.backward ? "backward" : "forward") + " layer " +
                          std::to_string(e.layer + 1) + "/" + std::to_string(e.layers) + ": " +
                          examples::seconds_text(e.seconds) + " (attention " +
                          examples::seconds_text(e.attention_seconds) + ")",
                      true);
    });
  }

  Stopwatch clock;
  model.zero_grad();
  const Matrix<T> input = data.read_rows<T>("input", rows.begin, rows.rows);  // (n_r, D)
  const Matrix<T> output = model.forward(input);
  LossResult<T> loss;
  {
    const Matrix<T> target =
        data.read_rows<T>("target", rows.begin, rows.rows);  // for the loss only
    loss = mse_loss(output, target, threading);
  }
  const Matrix<T> grad_input = model.backward(loss.grad);
  const ParameterList<T> params = model.parameters();
  if (shard.split()) {
    sum_gradients(params, *shard.group);
    loss.value = sum_over_ranks(loss.value, *shard.group);
  }
  progress.done();
  const double seconds = most_over_ranks(clock.seconds());

  ShardedWriter out(o.out, shard);
  out.add_rows("output", output);
  const T loss_value = static_cast<T>(loss.value);
  out.add<T>("loss", {1}, &loss_value);
  out.add_rows("grad.input", grad_input);
  for (const auto& p : params) out.add<T>("grad." + p.name, p.shape, p.grad);
  out.metadata() = run_metadata(o.attention, o.dtype);
  const auto descriptions = model.describe_attention();
  for (std::size_t i = 0; i < descriptions.size(); ++i)
    out.metadata()["plan.layer" + std::to_string(i)] = descriptions[i];
  if (config.qk_norm) out.metadata()["qk_norm"] = detail::round_trip_string(*config.qk_norm);
  out.write();

  const auto [forward_attention, backward_attention] = model.attention_seconds();
  const double attention_seconds = most_over_ranks(forward_attention + backward_attention);
  if (is_root()) {
    std::cout << "model " << o.model << ": " << examples::count_of(config.layers, "layer")
              << ", d_model " << config.d_model << ", " << config.heads << " heads, d_ff "
              << config.d_ff << ", " << (config.causal ? "causal" : "non-causal") << ", scale "
              << config.attention_scale() << (config.qk_norm ? " (qk_norm)" : "") << "\n";
    std::cout << "n " << n << ", dtype " << o.dtype << ", attention " << o.attention.summary()
              << (o.recompute ? ", recomputation on" : "");
    if (shard.split()) std::cout << ", split across " << world_size() << " ranks";
    std::cout << "\n";
    std::cout.precision(10);
    std::cout << "loss " << loss.value << "\n";
    for (std::size_t i = 0; i < descriptions.size(); ++i) {
      std::istringstream lines(descriptions[i]);
      for (std::string line; std::getline(lines, line);)
        std::cout << "layer " << i << " " << line << "\n";
    }
    std::cout.precision(4);
    std::cout << "forward + backward " << seconds << " s, of which attention " << attention_seconds
              << " s" << (shard.split() ? " (slowest rank)" : "") << "\n";
    std::cout << "wrote " << out.size() << " tensors to " << o.out << "\n";
  }
  print_peak_memory();
}

// ---------------------------------------------------------------------------------------------
// Attention mode: O and dQ, dK, dV of one multi-head attention call.

/// Rows [rows.begin, rows.end()) of every head of tensor `name` [H, n, d_h] of `data`, as the
/// rows x (H d_h) matrix the attention methods take (head h owns columns [h d_h, (h + 1) d_h)),
/// read head by head in pieces of rows.
template <class T>
Matrix<T> read_heads(SafetensorsReader& data, const std::string& name, Index H, Index n, Index dh,
                     RowRange range) {
  Matrix<T> m(range.rows, H * dh);
  const Index piece = std::max<Index>(1, (Index(1) << 18) / dh);  // rows per read
  Matrix<T> rows(std::max<Index>(std::min(piece, range.rows), 1), dh);
  for (Index h = 0; h < H; ++h) {
    for (Index i = 0; i < range.rows; i += piece) {
      const Index count = std::min(piece, range.rows - i);
      data.read_elements(name, (h * n + range.begin + i) * dh, count * dh, rows.data());
      m.block(i, h * dh, count, dh) = rows.topRows(count);
    }
  }
  return m;
}

template <class T>
void run_attention(const AttentionOptions& o) {
  SafetensorsReader data(o.data);
  const std::vector<Index> shape = data.shape("q");
  require<ShapeError>(shape.size() == 3 && shape[0] >= 1 && shape[1] >= 1 && shape[2] >= 1, o.data,
                      ": q must be [H, n, d_h] with every size at least 1, got ",
                      detail::shape_string(shape));
  for (const char* name : {"k", "v", "do"}) {
    require<ShapeError>(data.shape(name) == shape, o.data, ": ", name, " must have the shape of q ",
                        detail::shape_string(shape), ", got ",
                        detail::shape_string(data.shape(name)));
  }
  const Index H = shape[0], n = shape[1], dh = shape[2];
  RowRange rows;
  const SequenceShard shard = sequence_shard(n, rows);
  Stopwatch clock;
  const Matrix<T> Q = read_heads<T>(data, "q", H, n, dh, rows);    // (n_r, H d_h)
  const Matrix<T> K = read_heads<T>(data, "k", H, n, dh, rows);    // (n_r, H d_h)
  const Matrix<T> V = read_heads<T>(data, "v", H, n, dh, rows);    // (n_r, H d_h)
  const Matrix<T> dO = read_heads<T>(data, "do", H, n, dh, rows);  // (n_r, H d_h)
  if (shard.split()) {
    require_on_every_rank<NumericError>(
        *shard.group, Q.allFinite() && K.allFinite() && V.allFinite() && dO.allFinite(), o.data,
        ": q, k, v ", "or do holds NaN or infinity");
  }
  require_finite(dO, "do");

  AttentionShape attention;
  attention.heads = H;
  attention.causal = o.causal;
  attention.scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(double(dh));
  attention.threading.threads = threads;
  attention.shard = shard;
  const auto method = o.attention.make<T>();
  if (is_root())
    o.attention.warn_if_much_slower<T>(n, dh, o.causal, o.qk_norm > 0 ? o.qk_norm : 0, std::cerr);
  Matrix<T> O, dQ, dK, dV;
  std::unique_ptr<AttentionContext<T>> context;
  if (o.qk_norm > 0) {
    // As MultiHeadAttention does: unit q and k per head, scores tau cos(q, k), so |S| <= tau;
    // the gradients with respect to the raw q and k go back through the normalisation.
    Matrix<T> q_norms(rows.rows, H), k_norms(rows.rows, H);
    Matrix<T> Qn = Q, Kn = K;
    detail::normalise_head_rows<T>(Qn, q_norms);
    detail::normalise_head_rows<T>(Kn, k_norms);
    attention.scale = o.qk_norm;
    attention.score_bound = o.qk_norm;
    context = method->forward(Qn, Kn, V, attention, O);
    Matrix<T> dQn, dKn;
    context->backward(Qn, Kn, V, O, dO, dQn, dKn, dV);
    detail::normalise_head_rows_backward<T>(dQn, Qn, q_norms);
    detail::normalise_head_rows_backward<T>(dKn, Kn, k_norms);
    dQ = std::move(dQn);
    dK = std::move(dKn);
  } else {
    context = method->forward(Q, K, V, attention, O);
    context->backward(Q, K, V, O, dO, dQ, dK, dV);
  }

  const double seconds = most_over_ranks(clock.seconds());
  ShardedWriter out(o.out, shard);
  out.add_rows("o", O, H);
  out.add_rows("dq", dQ, H);
  out.add_rows("dk", dK, H);
  out.add_rows("dv", dV, H);
  out.metadata() = run_metadata(o.attention, o.dtype);
  out.metadata()["causal"] = o.causal ? "true" : "false";
  out.metadata()["scale"] = detail::round_trip_string(attention.scale);
  if (o.qk_norm > 0) out.metadata()["qk_norm"] = detail::round_trip_string(o.qk_norm);
  out.metadata()["plan"] = context->describe();
  out.write();

  if (is_root()) {
    std::cout << "attention " << o.attention.summary() << ": H " << H << ", n " << n << ", d_h "
              << dh << ", " << (o.causal ? "causal" : "non-causal") << ", scale " << attention.scale
              << (o.qk_norm > 0 ? " (qk_norm)" : "") << ", dtype " << o.dtype;
    if (shard.split()) std::cout << ", split across " << world_size() << " ranks";
    std::cout << "\n" << context->describe() << "\n";
    std::cout << "read, forward + backward " << seconds << " s\n";
    std::cout << "wrote o, dq, dk, dv to " << o.out << "\n";
  }
  print_peak_memory();
}

// ---------------------------------------------------------------------------------------------
// init and make-data: files for users and tests, without Python.

template <class T>
void run_init(InitOptions o) {
  require_one_process("init");
  if (o.no_qk_norm) o.config.qk_norm.reset();
  if (o.scale > 0) o.config.scale = o.scale;
  if (o.qk_norm > 0) o.config.qk_norm = o.qk_norm;
  Transformer<T> model(o.config);
  model.init(o.seed);
  save_transformer(o.out, model);
  std::cout << "wrote a " << o.config.layers << "-layer model (d_model " << o.config.d_model << ", "
            << o.config.heads << " heads, d_ff " << o.config.d_ff
            << (o.config.qk_norm
                    ? ", QK normalisation tau " + examples::significant(*o.config.qk_norm, 3)
                    : std::string(", no QK normalisation"))
            << ", seed " << o.seed << ", " << o.dtype << ") to " << o.out << "\n";
}

template <class T>
Matrix<T> normal_matrix(Index rows, Index cols, std::mt19937_64& rng) {
  Matrix<T> m(rows, cols);
  detail::fill_normal(m, rng, 1.0);
  return m;
}

template <class T>
void run_make_data(const MakeDataOptions& o) {
  require_one_process("make-data");
  require<Error>(o.tokens >= 1, "--tokens must be at least 1, got ", o.tokens);
  std::mt19937_64 rng(o.seed);
  SafetensorsFile out;
  if (!o.model.empty()) {
    const SafetensorsFile model = SafetensorsFile::read(o.model);
    const Index D = transformer_config(model.metadata(), o.model).d_model;
    out.add("input", normal_matrix<T>(o.tokens, D, rng));
    out.add("target", normal_matrix<T>(o.tokens, D, rng));
    std::cout << "wrote input and target [" << o.tokens << ", " << D << "] to " << o.out << "\n";
  } else {
    require<Error>(o.heads >= 1 && o.head_dim >= 1,
                   "make-data needs --model, or --heads and --head-dim (each at least 1)");
    for (const char* name : {"q", "k", "v", "do"}) {
      const Matrix<T> m = normal_matrix<T>(o.heads * o.tokens, o.head_dim, rng);
      out.add<T>(name, {o.heads, o.tokens, o.head_dim}, m.data());
    }
    std::cout << "wrote q, k, v, do [" << o.heads << ", " << o.tokens << ", " << o.head_dim
              << "] to " << o.out << "\n";
  }
  out.write(o.out);
}

// ---------------------------------------------------------------------------------------------
// compare: how far one file's tensors are from another's (the second is the reference).

/// Prints ||a - b||_F / ||b||_F for every tensor name in both files; throws if they share none,
/// if a shared name has two shapes, or if the largest error exceeds a given tolerance.
void run_compare(const CompareOptions& o) {
  require_one_process("compare");
  const SafetensorsFile a = SafetensorsFile::read(o.first);
  const SafetensorsFile b = SafetensorsFile::read(o.second);
  double worst = -1;
  std::string worst_name;
  std::size_t compared = 0;
  std::cout.precision(4);
  for (const std::string& name : a.names()) {
    if (!b.has(name)) {
      std::cout << "only in " << o.first << ": " << name << "\n";
      continue;
    }
    require<ShapeError>(a.shape(name) == b.shape(name), "tensor '", name, "' is ",
                        detail::shape_string(a.shape(name)), " in ", o.first, " but ",
                        detail::shape_string(b.shape(name)), " in ", o.second);
    const std::vector<double> x = a.values<double>(name), y = b.values<double>(name);
    const Eigen::Map<const Vector<double>> xv(x.data(), Index(x.size())),
        yv(y.data(), Index(y.size()));
    const double error = examples::relative_error(xv, yv);
    std::cout << name << " " << std::scientific << error << std::defaultfloat << "\n";
    ++compared;
    if (!(error <= worst)) {  // NaN counts as the worst
      worst = error;
      worst_name = name;
    }
  }
  for (const std::string& name : b.names())
    if (!a.has(name)) std::cout << "only in " << o.second << ": " << name << "\n";
  require<Error>(compared > 0, o.first, " and ", o.second, " share no tensor name");
  std::cout << "max " << std::scientific << worst << std::defaultfloat << " (" << worst_name
            << ") over " << compared << " tensors\n";
  require<NumericError>(o.tolerance < 0 || worst <= o.tolerance, "the relative error of '",
                        worst_name, "' is ", worst, ", above the tolerance ", o.tolerance);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(POLYGRAD_GRADIENTS_WITH_MPI)
  mpi::Environment environment(argc, argv);
  mpi::Communicator communicator;
  world = &communicator;
#endif
  CLI::App app{"Gradients of a polygrad Transformer or attention call, as safetensors files",
               program_name};
  const auto dtype_check = CLI::IsMember({"float", "double"});

  ModelOptions model;
  app.add_option("--model", model.model, "Transformer checkpoint (safetensors)");
  app.add_option("--data", model.data, "input [n, D] and target [n, D] (safetensors)");
  app.add_option("--out", model.out, "where to write output, loss and the gradients");
  app.add_option("--dtype", model.dtype, "scalar type of the computation and the output")
      ->check(dtype_check)
      ->capture_default_str();
  app.add_option("--qk-norm", model.qk_norm,
                 "QK normalisation with temperature tau (overrides the checkpoint's qk_norm)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--recompute", model.recompute,
               "keep only the block inputs and attention outputs between the passes and "
               "recompute the rest in the backward pass (less memory, same gradients)");
  app.add_option("--threads", threads, "threads (0: OMP_NUM_THREADS or every core)")
      ->check(CLI::Range(0, 1024));
  model.attention.add(app);

  AttentionOptions attention;
  CLI::App* attention_cmd =
      app.add_subcommand("attention", "O and dQ, dK, dV of one attention call ([H, n, d_h])");
  attention_cmd->add_option("--data", attention.data, "q, k, v, do, each [H, n, d_h]")->required();
  attention_cmd->add_option("--out", attention.out, "where to write o, dq, dk, dv")->required();
  attention_cmd->add_flag("--causal", attention.causal, "mask keys after each query");
  auto* scale_option =
      attention_cmd
          ->add_option("--scale", attention.scale, "c in S = c Q K^T (default 1/sqrt(d_h))")
          ->check(CLI::PositiveNumber);
  attention_cmd
      ->add_option("--qk-norm", attention.qk_norm,
                   "normalise q and k per head and score tau (q/|q|).(k/|k|); gradients are "
                   "with respect to the raw q, k")
      ->check(CLI::PositiveNumber)
      ->excludes(scale_option);
  attention_cmd->add_option("--dtype", attention.dtype, "scalar type")
      ->check(dtype_check)
      ->capture_default_str();
  attention_cmd->add_option("--threads", threads, "threads (0: OMP_NUM_THREADS or every core)")
      ->check(CLI::Range(0, 1024));
  attention.attention.add(*attention_cmd);

  CompareOptions compare;
  CLI::App* compare_cmd = app.add_subcommand(
      "compare", "relative Frobenius error ||a - b|| / ||b|| of every tensor two files share");
  compare_cmd->add_option("a", compare.first, "safetensors file to check")->required();
  compare_cmd->add_option("b", compare.second, "reference safetensors file")->required();
  compare_cmd
      ->add_option("--tolerance", compare.tolerance,
                   "exit 1 if the largest relative error is above this")
      ->check(CLI::NonNegativeNumber);

  InitOptions init;
  CLI::App* init_cmd = app.add_subcommand(
      "init",
      "write a randomly initialised Transformer (by default the demo model: 4 layers, "
      "d_model 64, 8 heads of d_h 8, d_ff 256, causal, QK normalisation tau 2)");
  init_cmd->add_option("--out", init.out, "checkpoint to write")->required();
  init_cmd->add_option("--layers", init.config.layers, "number of blocks")->capture_default_str();
  init_cmd->add_option("--d-model", init.config.d_model, "model width D")->capture_default_str();
  init_cmd->add_option("--heads", init.config.heads, "attention heads H")->capture_default_str();
  init_cmd->add_option("--d-ff", init.config.d_ff, "MLP width F")->capture_default_str();
  init_cmd->add_flag("--causal,!--no-causal", init.config.causal, "causal mask (default on)");
  init_cmd->add_option("--scale", init.scale, "attention scale c (default 1/sqrt(d_h))")
      ->check(CLI::PositiveNumber);
  CLI::Option* init_qk_norm = init_cmd
                                  ->add_option("--qk-norm", init.qk_norm,
                                               "QK normalisation with temperature tau (default 2)")
                                  ->check(CLI::PositiveNumber);
  init_cmd->add_flag("--no-qk-norm", init.no_qk_norm, "no QK normalisation")
      ->excludes(init_qk_norm);
  init_cmd->add_option("--seed", init.seed, "random seed")->capture_default_str();
  init_cmd->add_option("--dtype", init.dtype, "stored precision (F32 or F64)")
      ->check(dtype_check)
      ->capture_default_str();

  MakeDataOptions make_data;
  CLI::App* data_cmd = app.add_subcommand(
      "make-data", "write random input/target for a model, or q/k/v/do for attention");
  auto* data_model =
      data_cmd->add_option("--model", make_data.model, "checkpoint whose width to use");
  data_cmd->add_option("--tokens", make_data.tokens, "sequence length n")->required();
  data_cmd->add_option("--out", make_data.out, "data file to write")->required();
  data_cmd->add_option("--seed", make_data.seed, "random seed")->capture_default_str();
  data_cmd->add_option("--heads", make_data.heads, "H, for attention data")->excludes(data_model);
  data_cmd->add_option("--head-dim", make_data.head_dim, "d_h, for attention data")
      ->excludes(data_model);
  data_cmd->add_option("--dtype", make_data.dtype, "stored precision")
      ->check(dtype_check)
      ->capture_default_str();

  app.require_subcommand(0, 1);

  const int parsed = examples::parse_command_line(app, argc, argv, [&] {
    if (app.get_subcommands().empty()) {
      for (const auto& [value, name] :
           {std::pair{&model.model, "--model"}, std::pair{&model.data, "--data"},
            std::pair{&model.out, "--out"}}) {
        if (value->empty()) throw CLI::RequiredError(name);
      }
    }
    model.attention.check();
    attention.attention.check();
  });
  if (parsed >= 0) return parsed;
  // The audit compares rows against exact attention over the whole sequence, which no rank of a
  // split one holds: off by default there (asking for it is an error the method reports).
  for (AttentionCli* cli : {&model.attention, &attention.attention}) {
    if (world_size() > 1 && cli->audit < 0) cli->audit = 0;
  }

  return examples::run_program(program_name, [&] {
    if (attention_cmd->parsed()) {
      with_dtype(attention.dtype, [&](auto t) { run_attention<decltype(t)>(attention); });
    } else if (init_cmd->parsed()) {
      with_dtype(init.dtype, [&](auto t) { run_init<decltype(t)>(init); });
    } else if (data_cmd->parsed()) {
      with_dtype(make_data.dtype, [&](auto t) { run_make_data<decltype(t)>(make_data); });
    } else if (compare_cmd->parsed()) {
      run_compare(compare);
    } else {
      with_dtype(model.dtype, [&](auto t) { run_model<decltype(t)>(model); });
    }
  });
}
