// polygrad_train: a character-level language model trained twice from the same seed, once with
// exact attention gradients and once with the polynomial method's, both evaluated on held-out
// text with exact attention. At the end it prints the final losses beside the untrained and the
// unigram model's, each run's training seconds, and when the approx run first reached the exact
// run's final loss.
//
//   polygrad_train [--text FILE] [--steps N] [--attention poly|auto] [--route adjoint|paper] ...
//
// Model: token and position embeddings -> Transformer (causal, QK normalisation, so the
// polynomial plan R = tau is fixed in advance) -> LM head, mean cross-entropy (LanguageModel).
// Optimiser AdamW (weight decay on matrices only) with linear warm-up and cosine decay
// (WarmupCosine) and the global gradient norm clipped (clip_gradient_norm). The default text is
// Genesis from the King James Version (public domain; examples/data/README.md says where it came
// from).
//
// Writes to --out-dir: train_curves.csv and .svg (losses against tokens), train_clock.svg
// (held-out loss against training seconds), train_clock.csv (see below), the training state
// train_state.safetensors (every --checkpoint-every steps: both runs' models, AdamW states and
// loss curves, from which --resume continues) and, at the end, each run on its own in
// train_exact.safetensors and train_approx.safetensors, and each model as a LanguageModel file
// with its vocabulary, model_exact.safetensors and model_approx.safetensors (polygrad_sample
// reads them).
//
// Built with MPI, `mpirun -np P polygrad_train ...` splits every sequence across the P ranks
// (docs/sequence_parallel.md): each rank runs its rows of each window, attention joins the ranks
// (ring exact, polynomial scans), the gradients are summed once per step, and every rank takes
// the same optimiser step. Rank 0 prints, plots and writes the checkpoints.
//
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "polygrad/attention/exact.hpp"
#include "polygrad/inference/forward.hpp"
#include "polygrad/io/checkpoint.hpp"
#include "polygrad/io/language_model_file.hpp"
#include "polygrad/io/safetensors.hpp"
#include "polygrad/loss/cross_entropy.hpp"
#include "polygrad/optim/adamw.hpp"
#include "polygrad/optim/clip.hpp"
#include "polygrad/optim/schedule.hpp"
#include "polygrad/parallel/reduce.hpp"
#if defined(POLYGRAD_TRAIN_WITH_MPI)
#include "polygrad/parallel/mpi.hpp"
#endif
#include "support/attention_cli.hpp"
#include "support/byte_vocabulary.hpp"
#include "support/csv.hpp"
#include "support/format.hpp"
#include "support/program.hpp"
#include "support/progress.hpp"
#include "support/svg_plot.hpp"

#ifndef POLYGRAD_EXAMPLE_DATA_DIR
#define POLYGRAD_EXAMPLE_DATA_DIR "examples/data"
#endif

namespace {

using namespace polygrad;
using examples::fixed;
using examples::Progress;
using examples::scientific;
using examples::Stopwatch;

constexpr const char* program_name = "polygrad_train";

SequenceGroup* world = nullptr;  // the ranks of mpirun; null without MPI

/// The rows of every window this process holds: all of them in one process, a balanced shard of
/// them when the windows are split across the ranks of `world`.
struct WindowSplit {
  SequenceShard shard;
  RowRange rows;

  explicit WindowSplit(Index seq_len) : rows{0, seq_len} {
    if (world == nullptr || world->size() == 1) return;
    shard = shard_of(*world, seq_len);
    rows = balanced_shard(seq_len, world->rank(), world->size());
  }
  bool split() const { return shard.split(); }
  bool root() const { return shard.rank() == 0; }
  /// The sum of `value` over the ranks.
  double sum(double value) const { return split() ? sum_over_ranks(value, *shard.group) : value; }
  /// This rank's part of window [start, start + seq_len) of `text`, and of the window after it
  /// (the targets).
  std::vector<int> part(const std::vector<int>& text, std::size_t start) const {
    const auto first = text.begin() + std::ptrdiff_t(start) + std::ptrdiff_t(rows.begin);
    return std::vector<int>(first, first + std::ptrdiff_t(rows.rows));
  }
};

struct TrainOptions {
  std::string text = std::string(POLYGRAD_EXAMPLE_DATA_DIR) + "/genesis_kjv.txt";
  TransformerConfig config = [] {
    TransformerConfig c;
    c.layers = 2;
    c.d_model = 64;
    c.heads = 16;  // d_h = 4: rank k = C(4 + g, g) stays small at the degree tau = 4 needs
    c.d_ff = 256;
    c.causal = true;
    return c;
  }();
  double qk_norm = 4.0;
  Index seq_len = 256, batch = 4;
  int steps = 200, warmup = 20, eval_every = 25, checkpoint_every = 50;
  double clip_norm = 1.0;  // 0: no clipping
  Index eval_seqs = 16;
  double holdout = 0.1;
  AdamWOptions adamw = [] {
    AdamWOptions a;
    a.lr = 3e-3;
    a.weight_decay = 0.01;
    return a;
  }();
  std::uint64_t seed = 1;
  std::string dtype = "float";
  examples::AttentionCli attention;
  std::string out_dir = "polygrad_train_out";
  bool resume = false, quiet = false;
  int threads = 0;  // 0: OpenMP's default
};

// ---------------------------------------------------------------------------------------------
// The text: bytes as tokens, the vocabulary is the set of bytes that occur.

struct Corpus {
  std::string vocab;  // the distinct bytes, sorted; token id = index
  std::vector<int> train, held_out;
};

Corpus read_corpus(const TrainOptions& o) {
  std::ifstream in(o.text, std::ios::binary);
  require<Error>(bool(in), "cannot read ", o.text, ": no such file or not readable; pass a text ",
                 "file with --text");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  require<Error>(!in.bad(), "cannot read ", o.text, ": read error");
  const std::size_t held = static_cast<std::size_t>(double(text.size()) * o.holdout);
  const std::size_t need = static_cast<std::size_t>(o.seq_len) + 2;
  require<Error>(held >= need && text.size() - held >= need, o.text, " has ", text.size(),
                 " bytes; with --holdout ", o.holdout, " and --seq-len ", o.seq_len,
                 " both the training part and the held-out part need at least ", need,
                 " bytes: use a longer text or a shorter --seq-len");
  Corpus c;
  bool seen[256] = {};
  for (unsigned char ch : text) seen[ch] = true;
  for (int b = 0; b < 256; ++b)
    if (seen[b]) c.vocab.push_back(char(b));
  int id_of[256] = {};
  for (std::size_t i = 0; i < c.vocab.size(); ++i)
    id_of[static_cast<unsigned char>(c.vocab[i])] = int(i);
  const std::size_t split = text.size() - held;
  for (std::size_t i = 0; i < text.size(); ++i)
    (i < split ? c.train : c.held_out).push_back(id_of[static_cast<unsigned char>(text[i])]);
  return c;
}

/// A run: one model, its optimiser, its attention for training and its loss curve.
template <class T>
struct Run {
  std::string name;  // "exact" or "approx"
  std::unique_ptr<LanguageModel<T>> model;
  std::unique_ptr<AdamW<T>> optimiser;
  std::shared_ptr<const AttentionMethod<T>> attention;
  std::vector<double> curve_step, curve_train, curve_eval;  // one entry per evaluation
  std::vector<double> curve_seconds;  // training seconds up to each evaluation (NaN: unknown)
  double train_sum = 0;               // training losses since the last evaluation
  int train_count = 0;
  double seconds = 0;  // time in training steps since step 0 (since resuming if the clock was lost)
  std::string plan;    // the attention plan of the last training step, layer 0
};

/// Window starts of the held-out evaluation: `count` windows spread evenly over the held-out text.
std::vector<std::size_t> eval_starts(const Corpus& c, Index seq_len, Index count) {
  std::vector<std::size_t> out;
  const std::size_t last = c.held_out.size() - std::size_t(seq_len) - 1;
  for (Index i = 0; i < count; ++i)
    out.push_back(count == 1 ? 0 : std::size_t(double(last) * double(i) / double(count - 1)));
  return out;
}

/// The mean cross-entropy of a whole window from this rank's rows of it, and its gradient with
/// respect to this rank's logits (the local mean's, scaled by the share of rows held here).
template <class T>
LossResult<T> window_loss(const Matrix<T>& logits, const std::vector<int>& next,
                          const WindowSplit& split, Index seq_len) {
  LossResult<T> result = cross_entropy_loss(logits, next);
  const double share = double(split.rows.rows) / double(seq_len);
  result.grad *= T(share);
  result.value = split.sum(result.value * share);
  return result;
}

/// Windows of a text packed into one batch (attention/packed.hpp): their tokens, the tokens
/// after them (the targets) and their offsets.
struct Batch {
  std::vector<int> ids, next;
  SequenceOffsets offsets;
};

Batch pack_windows(const std::vector<int>& text, const std::vector<std::size_t>& starts,
                   Index seq_len) {
  Batch batch;
  for (std::size_t start : starts) {
    const auto first = text.begin() + std::ptrdiff_t(start);
    batch.ids.insert(batch.ids.end(), first, first + std::ptrdiff_t(seq_len));
    batch.next.insert(batch.next.end(), first + 1, first + 1 + std::ptrdiff_t(seq_len));
  }
  batch.offsets = offsets_of_lengths(std::vector<Index>(starts.size(), seq_len));
  return batch;
}

/// Mean held-out cross-entropy (nats per character) with exact attention; restores `training`.
template <class T>
double evaluate(LanguageModel<T>& model, const Corpus& c, const TrainOptions& o,
                const std::shared_ptr<const AttentionMethod<T>>& training,
                const WindowSplit& split) {
  const auto exact = std::make_shared<ExactAttention<T>>();
  const auto starts = eval_starts(c, o.seq_len, o.eval_seqs);
  if (!split.split()) {  // one packed pass over all the windows, nothing kept for a backward
    const Batch batch = pack_windows(c.held_out, starts, o.seq_len);
    // Every window has seq_len targets: the mean over rows is the mean over windows.
    return cross_entropy_loss(infer_logits<T>(model, batch.ids, batch.offsets, exact), batch.next)
        .value;
  }
  model.set_attention(exact);
  double total = 0;
  for (std::size_t start : starts) {
    const Matrix<T> logits = model.forward(split.part(c.held_out, start), split.rows.begin);
    total += window_loss(logits, split.part(c.held_out, start + 1), split, o.seq_len).value;
  }
  model.set_attention(training);
  return total / double(starts.size());
}

/// The baseline a trained model must beat: the held-out cross-entropy (nats per character) of
/// the unigram model, character frequencies of the training text with add-one smoothing (a
/// character may occur only in the held-out part), on the targets `evaluate` scores.
double unigram_loss(const Corpus& c, const TrainOptions& o) {
  std::vector<double> count(c.vocab.size(), 1.0);
  for (int id : c.train) count[std::size_t(id)] += 1;
  const double total = double(c.train.size() + c.vocab.size());
  double sum = 0;
  const auto starts = eval_starts(c, o.seq_len, o.eval_seqs);
  for (std::size_t start : starts)
    for (std::size_t i = start + 1; i <= start + std::size_t(o.seq_len); ++i)
      sum -= std::log(count[std::size_t(c.held_out[i])] / total);
  return sum / double(starts.size() * std::size_t(o.seq_len));
}

/// The learning rate of every step: linear warm-up, then a half cosine down to 10%.
WarmupCosine schedule(const TrainOptions& o) {
  return WarmupCosine{o.adamw.lr, 0.1 * o.adamw.lr, o.warmup, std::max(o.steps, o.warmup)};
}

/// One AdamW step on the batch of step s (the same batch for both runs). Returns the mean loss.
template <class T>
double train_step(Run<T>& run, const Corpus& c, const TrainOptions& o, int s,
                  const WindowSplit& split) {
  Stopwatch clock;
  std::mt19937_64 rng(o.seed * 1000003ULL + std::uint64_t(s));
  std::uniform_int_distribution<std::size_t> pick(0, c.train.size() - std::size_t(o.seq_len) - 1);
  run.model->zero_grad();
  double loss = 0;
  if (!split.split()) {  // one forward and one backward over the packed batch
    std::vector<std::size_t> starts(std::size_t(o.batch));
    for (auto& start : starts) start = pick(rng);
    const Batch batch = pack_windows(c.train, starts, o.seq_len);
    const LossResult<T> result =
        cross_entropy_loss(run.model->forward_packed(batch.ids, batch.offsets), batch.next);
    run.model->backward(result.grad);  // the mean over rows is the mean over sequences
    loss = result.value;
  } else {  // split across ranks: one window at a time
    for (Index b = 0; b < o.batch; ++b) {
      const std::size_t start = pick(rng);  // the same on every rank
      const Matrix<T> logits = run.model->forward(split.part(c.train, start), split.rows.begin);
      LossResult<T> result = window_loss(logits, split.part(c.train, start + 1), split, o.seq_len);
      run.model->backward(result.grad / T(o.batch));  // the batch loss is the mean over sequences
      loss += result.value / double(o.batch);
    }
  }
  if (split.split()) sum_gradients(run.model->parameters(), *split.shard.group);
  if (o.clip_norm > 0) clip_gradient_norm(run.model->parameters(), o.clip_norm);
  run.plan = run.model->transformer().describe_attention().front();
  run.optimiser->set_lr(schedule(o)(s));
  run.optimiser->step();
  run.seconds += clock.seconds();
  return loss;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints. A run's tensors are model.<parameter>, optim.<AdamW state>, curve.{step,train,eval}
// and curve.pending (the training losses summed since the last evaluation, and their count).
// The training state, train_state.safetensors, holds both runs' (under "exact." and "approx.")
// in one file, so that a resumed training never pairs runs saved at different steps; it is the
// only file --resume reads. Each run's own file, train_<run>.safetensors, is written at the
// end. Every file is written to a temporary and renamed into place (SafetensorsWriter), so a
// process killed while writing leaves the previous file whole. The data position and random
// state are the step: step s trains on the windows std::mt19937_64(seed * 1000003 + s) draws.

/// What must match to resume, and what a run's file says about the model and the text.
std::map<std::string, std::string> checkpoint_metadata(const TrainOptions& o, const Corpus& c) {
  TransformerConfig config = o.config;
  config.qk_norm = o.qk_norm;
  auto m = transformer_metadata(config);
  m["program"] = program_name;
  m["vocab_hex"] = examples::to_hex(c.vocab);
  m["seq_len"] = std::to_string(o.seq_len);
  m["seed"] = std::to_string(o.seed);
  return m;
}

/// The attention a run trains with, as the metadata records it.
std::string attention_summary(const TrainOptions& o, const std::string& run) {
  return run == "exact" ? "exact" : o.attention.summary();
}

/// Adds `run`'s tensors to `file`, each name under `prefix`.
template <class T>
void store_run(SafetensorsFile& file, Run<T>& run, const std::string& prefix) {
  store_parameters(file, run.model->parameters(), prefix + "model.");
  for (const auto& [name, buffer] : run.optimiser->state())
    file.add<T>(prefix + "optim." + name, {buffer->size()}, buffer->data());
  const Index points = Index(run.curve_step.size());
  file.add<double>(prefix + "curve.step", {points}, run.curve_step.data());
  file.add<double>(prefix + "curve.train", {points}, run.curve_train.data());
  file.add<double>(prefix + "curve.eval", {points}, run.curve_eval.data());
  const double pending[2] = {run.train_sum, double(run.train_count)};
  file.add<double>(prefix + "curve.pending", {2}, pending);
}

/// Restores `run` from the tensors under `prefix` of `file`.
template <class T>
void restore_run(const SafetensorsFile& file, Run<T>& run, const std::string& prefix) {
  const std::string& path = file.source();
  restore_parameters(file, run.model->parameters(), prefix + "model.");
  for (const auto& [name, buffer] : run.optimiser->state()) {
    const std::vector<T> values = file.values<T>(prefix + "optim." + name);
    require<FormatError>(Index(values.size()) == buffer->size(), path, ": optimiser state '",
                         prefix, name, "' has ", values.size(), " values, expected ",
                         buffer->size());
    *buffer = Eigen::Map<const Vector<T>>(values.data(), Index(values.size()));
  }
  run.curve_step = file.values<double>(prefix + "curve.step");
  run.curve_train = file.values<double>(prefix + "curve.train");
  run.curve_eval = file.values<double>(prefix + "curve.eval");
  require<FormatError>(run.curve_train.size() == run.curve_step.size() &&
                           run.curve_eval.size() == run.curve_step.size(),
                       path, ": the loss curves of run '", run.name, "' have different lengths");
  const std::vector<double> pending = file.values<double>(prefix + "curve.pending");
  require<FormatError>(pending.size() == 2, path, ": ", prefix, "curve.pending must hold 2 values");
  run.train_sum = pending[0];
  run.train_count = int(pending[1]);
}

/// Writes one run's model, optimiser state and curves to `path`.
template <class T>
void save_run(Run<T>& run, const TrainOptions& o, const Corpus& c, const std::string& path) {
  SafetensorsFile file;
  store_run(file, run, "");
  file.metadata() = checkpoint_metadata(o, c);
  file.metadata()["run"] = run.name;
  file.metadata()["attention"] = attention_summary(o, run.name);
  file.metadata()["step"] = std::to_string(run.optimiser->step_count());
  file.write(path);
}

/// Writes the training state: both runs, at the same step.
template <class T>
void save_state(std::vector<Run<T>>& runs, const TrainOptions& o, const Corpus& c,
                const std::string& path) {
  SafetensorsFile file;
  file.metadata() = checkpoint_metadata(o, c);
  for (Run<T>& run : runs) {
    store_run(file, run, run.name + ".");
    file.metadata()["attention." + run.name] = attention_summary(o, run.name);
  }
  file.metadata()["step"] = std::to_string(runs.front().optimiser->step_count());
  file.write(path);
}

/// Restores both runs from the training state at `path`; returns the step it was saved at.
/// Throws FormatError if the file was written for another text, model or seed, or is not whole.
template <class T>
int load_state(std::vector<Run<T>>& runs, const TrainOptions& o, const Corpus& c,
               const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::read(path);
  for (const auto& [key, value] : checkpoint_metadata(o, c)) {
    const auto it = file.metadata().find(key);
    require<FormatError>(
        it != file.metadata().end() && it->second == value, path, ": cannot resume: metadata \"",
        key, "\" is \"", it == file.metadata().end() ? std::string("(missing)") : it->second,
        "\" but this run has \"", value.size() > 40 ? value.substr(0, 40) + "..." : value,
        "\"; use the text, model flags and --seed the checkpoint was made with");
  }
  // A resumed run may change the polynomial settings: the attention is not checked.
  for (Run<T>& run : runs) restore_run(file, run, run.name + ".");
  const int step = int(detail::metadata_index(file.metadata(), "step", path));
  for (Run<T>& run : runs) run.optimiser->set_step_count(step);
  return step;
}

// ---------------------------------------------------------------------------------------------
// The training clock, train_clock.csv: each run's training seconds (steps only, not evaluations)
// since step 0 at every evaluation and every checkpoint, one row per step. Times differ from run
// to run, so they stay out of the training state, which a resumed run reproduces byte for byte.
// The clock is written (to a temporary, renamed into place) just before the state: a resumed
// run finds the row of its step unless the file was removed, and then counts from zero.

using Clock = std::map<int, std::array<double, 2>>;  // step -> seconds of (exact, approx)

// Significant digits in the CSV files: seconds to the microsecond up to 10 s (a clock's noise is
// larger), losses to 1e-9 relative (far below any difference between runs).
constexpr int seconds_digits = 7, loss_digits = 9;

void save_clock(const Clock& clock, const std::string& path) {
  examples::CsvWriter csv({"step", "seconds_exact", "seconds_approx"});
  for (const auto& [step, seconds] : clock)
    csv.row()
        .cell(static_cast<long long>(step))
        .cell(seconds[0], seconds_digits)
        .cell(seconds[1], seconds_digits);
  csv.write(path + ".tmp");
  std::filesystem::rename(path + ".tmp", path);
}

/// The rows of the clock at `path` up to `last_step`; empty if there is no such file.
Clock load_clock(const std::string& path, int last_step) {
  Clock clock;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::array<std::string, 3> cells;
    std::istringstream fields(line);
    for (auto& cell : cells) std::getline(fields, cell, ',');
    const auto number = [](const std::string& cell) {
      return cell.empty() ? std::nan("") : std::strtod(cell.c_str(), nullptr);
    };
    const int step = std::atoi(cells[0].c_str());
    if (step <= last_step) clock[step] = {number(cells[1]), number(cells[2])};
  }
  return clock;
}

// ---------------------------------------------------------------------------------------------

/// Sends std::cout to nowhere for its lifetime on ranks other than 0, which compute but do not
/// report.
class QuietUnlessRoot {
 public:
  explicit QuietUnlessRoot(bool root) : saved_(root ? nullptr : std::cout.rdbuf(nullptr)) {}
  ~QuietUnlessRoot() {
    if (saved_) {
      std::cout.rdbuf(saved_);
      std::cout.clear();
    }
  }
  QuietUnlessRoot(const QuietUnlessRoot&) = delete;
  QuietUnlessRoot& operator=(const QuietUnlessRoot&) = delete;

 private:
  std::streambuf* saved_;
};

template <class T>
void train(const TrainOptions& o) {
  const WindowSplit split(o.seq_len);
  const QuietUnlessRoot quiet(split.root());
  const Corpus corpus = read_corpus(o);
  TransformerConfig config = o.config;
  config.qk_norm = o.qk_norm;
  const Index vocab = Index(corpus.vocab.size());

  std::vector<Run<T>> runs(2);
  runs[0].name = "exact";
  runs[0].attention = std::make_shared<ExactAttention<T>>();
  runs[1].name = "approx";
  runs[1].attention = o.attention.make<T>();
  if (split.root())
    o.attention.warn_if_much_slower<T>(o.seq_len, config.d_model / config.heads, config.causal,
                                       config.qk_norm.value_or(0), std::cerr);
  LanguageModelConfig model_config;
  model_config.vocab = vocab;
  model_config.context = o.seq_len;
  model_config.transformer = config;
  for (Run<T>& run : runs) {
    run.model = std::make_unique<LanguageModel<T>>(model_config, run.attention, o.seed);
    run.model->set_threading(Threading{o.threads});
    if (split.split()) run.model->transformer().set_shard(split.shard);
    run.optimiser = std::make_unique<AdamW<T>>(run.model->parameters(), o.adamw);
  }

  if (split.root()) std::filesystem::create_directories(o.out_dir);
  const auto run_path = [&](const Run<T>& run) {
    return (std::filesystem::path(o.out_dir) / ("train_" + run.name + ".safetensors")).string();
  };
  const auto model_path = [&](const Run<T>& run) {
    return (std::filesystem::path(o.out_dir) / ("model_" + run.name + ".safetensors")).string();
  };
  const std::string state_path =
      (std::filesystem::path(o.out_dir) / "train_state.safetensors").string();
  const std::string clock_path = (std::filesystem::path(o.out_dir) / "train_clock.csv").string();
  int start = 0;
  Clock clock;
  if (o.resume) {
    start = load_state(runs, o, corpus, state_path);
    clock = load_clock(clock_path, start);
    if (!clock.count(start))
      std::cout << "no training clock for step " << start << " in " << clock_path
                << ": training seconds count from this session\n";
    const auto seconds_at = [&](int step, std::size_t run) {
      const auto it = clock.find(step);
      return it == clock.end() ? std::nan("") : it->second[run];
    };
    for (std::size_t r = 0; r < runs.size(); ++r) {
      runs[r].seconds = clock.count(start) ? seconds_at(start, r) : 0.0;
      for (double step : runs[r].curve_step)
        runs[r].curve_seconds.push_back(seconds_at(int(step), r));
    }
  }

  std::cout << "text " << o.text << ": " << corpus.train.size() << " training and "
            << corpus.held_out.size() << " held-out characters, vocabulary " << vocab << "\n";
  std::cout << "model: embeddings -> " << examples::count_of(config.layers, "layer") << ", d_model "
            << config.d_model << ", " << config.heads << " heads (d_h " << config.head_dim()
            << "), MLP " << config.d_ff << ", causal, QK normalisation tau = " << o.qk_norm
            << " -> LM head; " << o.dtype << "\n";
  std::cout << "training: " << o.steps << " steps of " << o.batch << " x " << o.seq_len
            << " characters, AdamW lr " << o.adamw.lr << " (warm-up " << o.warmup
            << ", cosine to 10%; weight decay " << o.adamw.weight_decay << " on matrices only), "
            << (o.clip_norm > 0 ? "gradient norm clipped at " + fixed(o.clip_norm, 2)
                                : std::string("no clipping"))
            << ", seed " << o.seed
            << (start > 0 ? ", resumed at step " + std::to_string(start) : std::string()) << "\n";
  if (split.split()) {
    std::cout << "every window split across " << split.shard.size() << " ranks\n";
  }
  std::cout << "approx run: " << o.attention.summary()
            << "; held-out loss: mean cross-entropy (nats/char) of " << o.eval_seqs
            << " held-out windows, always with exact attention\n\n";

  Progress progress(o.quiet || !split.root(), 10.0);
  const auto header = [&] {
    std::cout << std::setw(6) << "step" << std::setw(14) << "train exact" << std::setw(14)
              << "train approx" << std::setw(16) << "held-out exact" << std::setw(17)
              << "held-out approx" << std::setw(9) << "diff"
              << "\n";
  };
  const auto print_point = [&](std::size_t i) {
    const double e = runs[0].curve_eval[i], a = runs[1].curve_eval[i];
    const auto train_cell = [&](double v) {
      return std::isnan(v) ? std::string("-") : fixed(v, 4);
    };
    std::cout << std::setw(6) << runs[0].curve_step[i] << std::setw(14)
              << train_cell(runs[0].curve_train[i]) << std::setw(14)
              << train_cell(runs[1].curve_train[i]) << std::setw(16) << fixed(e, 4) << std::setw(17)
              << fixed(a, 4) << std::setw(10) << examples::percent_change(a / e - 1) << "\n";
  };
  const auto record = [&](int step) {
    for (Run<T>& run : runs) {
      const double held = evaluate(*run.model, corpus, o, run.attention, split);
      run.curve_step.push_back(step);
      run.curve_train.push_back(run.train_count ? run.train_sum / run.train_count : std::nan(""));
      run.curve_eval.push_back(held);
      run.curve_seconds.push_back(run.seconds);
      run.train_sum = 0;
      run.train_count = 0;
    }
    clock[step] = {runs[0].seconds, runs[1].seconds};
  };

  header();
  if (start == 0) record(0);
  for (std::size_t i = 0; i < runs[0].curve_step.size(); ++i) print_point(i);
  const double untrained = runs[0].curve_eval.front();

  for (int s = start + 1; s <= o.steps; ++s) {
    for (Run<T>& run : runs) {
      run.train_sum += train_step(run, corpus, o, s, split);
      ++run.train_count;
    }
    progress.update("step " + std::to_string(s) + "/" + std::to_string(o.steps) + ", train loss " +
                    fixed(runs[0].train_sum / runs[0].train_count, 3) + " (exact), " +
                    fixed(runs[1].train_sum / runs[1].train_count, 3) + " (approx)");
    if (s % o.eval_every == 0 || s == o.steps) {
      record(s);
      progress.done();
      print_point(runs[0].curve_step.size() - 1);
    }
    if ((s % o.checkpoint_every == 0 || s == o.steps) && split.root()) {
      clock[s] = {runs[0].seconds, runs[1].seconds};
      save_clock(clock, clock_path);
      save_state(runs, o, corpus, state_path);
    }
  }
  progress.done();
  if (!split.root()) return;
  for (Run<T>& run : runs) {
    save_run(run, o, corpus, run_path(run));
    save_language_model(model_path(run), *run.model,
                        {{"vocab_hex", examples::to_hex(corpus.vocab)},
                         {"program", program_name},
                         {"run", run.name},
                         {"step", std::to_string(o.steps)}});
  }

  // The curves as CSV and SVG.
  const std::filesystem::path dir(o.out_dir);
  std::vector<double> tokens;  // training tokens seen at each evaluation
  for (double step : runs[0].curve_step) tokens.push_back(step * double(o.batch * o.seq_len));
  examples::CsvWriter csv({"step", "tokens", "seconds_exact", "seconds_approx", "train_exact",
                           "train_approx", "heldout_exact", "heldout_approx"});
  for (std::size_t i = 0; i < runs[0].curve_step.size(); ++i)
    csv.row()
        .cell(runs[0].curve_step[i])
        .cell(tokens[i])
        .cell(runs[0].curve_seconds[i], seconds_digits)
        .cell(runs[1].curve_seconds[i], seconds_digits)
        .cell(runs[0].curve_train[i], loss_digits)
        .cell(runs[1].curve_train[i], loss_digits)
        .cell(runs[0].curve_eval[i], loss_digits)
        .cell(runs[1].curve_eval[i], loss_digits);
  csv.write((dir / "train_curves.csv").string());
  examples::SvgPlot plot("Character LM trained with exact and approximate gradients",
                         "training tokens", "cross-entropy (nats/char)");
  plot.add("train, exact", tokens, runs[0].curve_train)
      .add("train, approx", tokens, runs[1].curve_train)
      .add("held-out, exact", tokens, runs[0].curve_eval)
      .add("held-out, approx", tokens, runs[1].curve_eval);
  plot.write((dir / "train_curves.svg").string());
  examples::SvgPlot clock_plot(
      "Held-out loss against training time (exact attention at evaluation)",
      "training seconds (steps only)", "held-out cross-entropy (nats/char)");
  clock_plot.add("exact gradients", runs[0].curve_seconds, runs[0].curve_eval)
      .add("approx gradients", runs[1].curve_seconds, runs[1].curve_eval);
  clock_plot.write((dir / "train_clock.svg").string());

  const double exact_final = runs[0].curve_eval.back(), approx_final = runs[1].curve_eval.back();
  std::cout << "\nheld-out loss after " << int(runs[0].curve_step.back())
            << " steps (exact attention at evaluation): untrained " << fixed(untrained, 4)
            << ", exact-trained " << fixed(exact_final, 4) << ", approx-trained "
            << fixed(approx_final, 4) << " ("
            << examples::percent_change(approx_final / exact_final - 1) << ")\n";
  std::cout << "unigram model (training-text character frequencies): "
            << fixed(unigram_loss(corpus, o), 4) << "\n";
  std::cout << "training time (steps only): exact " << examples::significant(runs[0].seconds, 3)
            << " s, approx " << examples::significant(runs[1].seconds, 3) << " s\n";
  // The first evaluation at which the approx-trained model is as good as the exact-trained one
  // ends, up to the evaluation's precision (its logits are in T): the time to the same loss is
  // at most that run's seconds there.
  const double tolerance = 10 * double(std::numeric_limits<T>::epsilon());
  const std::string reached_what = "the exact-trained final held-out loss " +
                                   fixed(exact_final, 4) + " (to " + scientific(tolerance, 1) +
                                   " relative, 10 " + o.dtype + " epsilons)";
  std::size_t reach = 0;
  while (reach < runs[1].curve_eval.size() &&
         !(runs[1].curve_eval[reach] <= exact_final * (1 + tolerance)))
    ++reach;
  if (reach == runs[1].curve_eval.size()) {
    std::cout << "the approx-trained model did not reach " << reached_what << " by step "
              << int(runs[1].curve_step.back()) << "\n";
  } else {
    const double at = runs[1].curve_seconds[reach];
    std::cout << "the approx-trained model reached " << reached_what << " at step "
              << int(runs[1].curve_step[reach]) << ", after " << examples::significant(at, 3)
              << " s of training: " << examples::significant(at / runs[0].seconds, 3)
              << "x exact's " << examples::significant(runs[0].seconds, 3) << " s\n";
  }
  const std::string& plan = runs[1].plan;
  if (!plan.empty())
    std::cout << "approx plan, layer 0 " << plan.substr(0, plan.find('\n')) << "\n";
  std::cout << "wrote " << (dir / "train_curves.csv").string() << ", "
            << (dir / "train_curves.svg").string() << ", " << (dir / "train_clock.svg").string()
            << ", the runs " << run_path(runs[0]) << ", " << run_path(runs[1])
            << ", their models for polygrad_sample " << model_path(runs[0]) << ", "
            << model_path(runs[1]) << " and the training state " << state_path << "\n";
}

}  // namespace

int main(int argc, char** argv) {
#if defined(POLYGRAD_TRAIN_WITH_MPI)
  mpi::Environment environment(argc, argv);
  mpi::Communicator communicator;
  world = &communicator;
#endif
  CLI::App app{
      "Train a character-level transformer twice, with exact and with approximate "
      "attention gradients, and compare held-out losses",
      program_name};
  TrainOptions o;
  app.add_option("--text", o.text, "training text (bytes are tokens)")->capture_default_str();
  app.add_option("--steps", o.steps, "training steps")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "characters per sequence")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  app.add_option("--layers", o.config.layers, "transformer blocks")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--d-model", o.config.d_model, "model width D")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--heads", o.config.heads, "attention heads H (d_h = D / H)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--d-ff", o.config.d_ff, "MLP width")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--qk-norm", o.qk_norm, "QK normalisation temperature tau (R = tau)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lr", o.adamw.lr, "peak AdamW learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--weight-decay", o.adamw.weight_decay, "AdamW decoupled weight decay")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--clip-norm", o.clip_norm,
                 "clip the global gradient norm to this (0: no clipping)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "warm-up steps")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "steps between held-out evaluations")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--eval-seqs", o.eval_seqs, "held-out windows per evaluation")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--holdout", o.holdout, "fraction of the text held out (its end)")
      ->check(CLI::Range(0.001, 0.9))
      ->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the weights and the batches")->capture_default_str();
  app.add_option("--dtype", o.dtype, "scalar type")
      ->check(CLI::IsMember({"float", "double"}))
      ->capture_default_str();
  o.attention.method = "poly";
  o.attention.add(app);
  app.add_option("--out-dir", o.out_dir, "where the curves and checkpoints go")
      ->capture_default_str();
  app.add_flag("--resume", o.resume,
               "continue from the training state in --out-dir (train_state.safetensors)");
  app.add_option("--threads", o.threads, "threads (0: OMP_NUM_THREADS or every core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--quiet,-q", o.quiet, "no progress line on stderr");

  const int parsed = examples::parse_command_line(app, argc, argv, [&] {
    if (o.attention.method == "exact")
      throw CLI::ValidationError("--attention",
                                 "the second run must approximate: use poly or auto");
    if (o.config.d_model % o.config.heads != 0)
      throw CLI::ValidationError(
          "--heads", "must divide --d-model (" + std::to_string(o.config.d_model) + ")");
  });
  if (parsed >= 0) return parsed;
  // The audit needs whole windows, which no rank of a split one holds.
  if (world != nullptr && world->size() > 1 && o.attention.audit < 0) o.attention.audit = 0;

  return examples::run_program(
      program_name, [&] { examples::with_dtype(o.dtype, [&](auto t) { train<decltype(t)>(o); }); });
}
