// polygrad_sequence_parallel: the demo model's whole gradient with its sequence split across MPI
// ranks (design.md section 8; docs/sequence_parallel.md): every rank holds its shard of the rows;
// polynomial attention hands its feature states along the ranks, exact attention passes blocks
// of keys and values round a ring; the parameter gradients are summed at the end. Prints, from
// rank 0, the wall time, the slowest rank's attention time, and the bytes each rank sent per
// layer.
//
//   mpirun -np 2 polygrad_sequence_parallel -n 262144           (2 ranks of 1 thread, poly)
//   mpirun -np 1 polygrad_sequence_parallel -n 262144 --threads 2
//   mpirun -np 2 polygrad_sequence_parallel -n 32768 --attention exact   (ring attention)
//
// Open MPI as root needs --allow-run-as-root, and more ranks than cores --oversubscribe.
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>

#include "polygrad/attention/poly.hpp"
#include "polygrad/layers/transformer.hpp"
#include "polygrad/loss/mse.hpp"
#include "polygrad/parallel/mpi.hpp"
#include "polygrad/parallel/reduce.hpp"
#include "support/attention_cli.hpp"
#include "support/demo_model.hpp"
#include "support/program.hpp"
#include "support/resources.hpp"

namespace {

using namespace polygrad;

struct Options {
  Index tokens = Index(1) << 18;
  bool recompute = true;
  std::string dtype = "float";
  int threads = 1;
  examples::DemoSetup setup;
  examples::AttentionCli
      attention;  // --attention, --route, --family, --degree | --epsilon, --bound
};

/// The largest of value over the ranks.
double max_over_ranks(double value, SequenceGroup& group) {
  group.max(&value, 1);
  return value;
}

template <class T>
void run(const Options& o, mpi::Communicator& world) {
  const TransformerConfig config = TransformerConfig::demo();
  Transformer<T> model(config);
  examples::init_demo_model(model, o.setup);
  model.set_recompute(o.recompute);
  model.set_threading(Threading{o.threads});
  model.set_attention(o.attention.make<T>());
  const SequenceShard shard = shard_of(world, o.tokens);
  model.set_shard(shard);

  Matrix<T> input, target;  // the whole sequence's rows are drawn, this rank keeps its own
  examples::make_demo_data(o.tokens, config.d_model, o.setup, input, target);
  const RowRange rows = balanced_shard(o.tokens, world.rank(), world.size());
  Matrix<T> x = input.middleRows(rows.begin, rows.rows),
            t = target.middleRows(rows.begin, rows.rows);
  input.resize(0, 0);
  target.resize(0, 0);
  if (world.rank() == 0) {
    std::cout << "Model: demo (4 layers, d_model 64, 8 heads of d_h 8, MLP 256, causal, QK "
              << "normalisation tau = 2), " << o.dtype << ", n = " << o.tokens << ", "
              << o.attention.summary() << "; " << world.size() << " ranks of " << o.threads
              << " thread(s); recomputation " << (o.recompute ? "on" : "off") << std::endl;
  }

  examples::reset_peak_memory();
  double together = 0;
  world.sum(&together, 1);  // start together
  const std::uint64_t sent_before = world.bytes_sent(), reduced_before = world.bytes_reduced();
  const double cpu_start = examples::cpu_seconds();
  examples::Stopwatch clock;
  const Matrix<T> y = model.forward(x);
  const LossResult<T> loss = mse_loss(y, t, model.threading());
  model.backward(loss.grad);
  const std::uint64_t sent = world.bytes_sent() - sent_before;
  const std::uint64_t reduced_in_passes = world.bytes_reduced() - reduced_before;
  sum_gradients(model.parameters(), world);
  const double total_loss = sum_over_ranks(loss.value, world);
  const double seconds = clock.seconds();
  const double cpu = examples::cpu_seconds() - cpu_start;
  const auto [forward_attention, backward_attention] = model.attention_seconds();

  const double slowest = max_over_ranks(seconds, world);
  const double attention = max_over_ranks(forward_attention + backward_attention, world);
  const double most_sent = max_over_ranks(double(sent), world);
  const double most_reduced = max_over_ranks(double(reduced_in_passes), world);
  const double peak = max_over_ranks(examples::peak_memory_mib(), world);
  const double cpu_ratio = sum_over_ranks(cpu, world) / slowest;
  if (world.rank() == 0) {
    const double layers = double(config.layers);
    std::cout << std::fixed << std::setprecision(2) << "wall " << slowest << " s, attention "
              << attention << " s (slowest rank), cores busy " << cpu_ratio << ", loss "
              << std::setprecision(6) << total_loss << "\n"
              << std::setprecision(0) << "sent per rank per layer (most): " << most_sent / layers
              << (o.attention.method == "exact" ? " bytes of keys, values and their gradients, "
                                                : " bytes of states, ")
              << most_reduced / layers << " bytes in sums and maxima during the passes\n"
              << "peak resident memory per rank (most): " << peak << " MiB" << std::endl;
  }
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Environment environment(argc, argv);
  CLI::App app{"The demo model's gradient with its sequence split across MPI ranks.",
               "polygrad_sequence_parallel"};
  Options o;
  app.add_option("--tokens,-n", o.tokens, "sequence length")
      ->check(CLI::Range(Index(1), Index(1) << 26))
      ->capture_default_str();
  app.add_flag("--recompute,!--no-recompute", o.recompute,
               "recompute the row-wise layers in backward (default on)");
  app.add_option("--dtype", o.dtype, "scalar type")
      ->check(CLI::IsMember({"float", "double"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads per rank")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  o.setup.add(app);
  o.attention.method = "poly";
  o.attention.audit = 0;  // the audit needs the whole sequence: asking for one is an error
  o.attention.add(app);
  const int parsed = examples::parse_command_line(app, argc, argv, [&] { o.attention.check(); });
  if (parsed >= 0) return parsed;
  mpi::Communicator world;
  return examples::run_program("polygrad_sequence_parallel", [&] {
    if (o.dtype == "float") {
      run<float>(o, world);
    } else {
      run<double>(o, world);
    }
  });
}
