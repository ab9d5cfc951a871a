// polygrad_sample: text from a character-level LanguageModel that polygrad_train wrote
// (out/model_exact.safetensors or out/model_approx.safetensors).
//
//   polygrad_sample --model FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
//                   [--seed S] [--attention exact|poly|auto ...]
//
// Each new character is drawn from softmax(logits / T) of the last position, restricted to the
// K likeliest characters when --top-k is given; --temperature 0 takes the likeliest. The prompt
// (its last `context` characters, the length of the model's position table) runs in one pass,
// then each character is one step of a Decoder (inference/decoder.hpp): with --attention poly
// from each head's polynomial state, O(k d_h) per head whatever the length so far; with exact
// attention from the cached keys and values. When the context is full, the decoder starts
// again from the last half of it. --attention auto cannot decode token by token.
// Prints the prompt and the generated text on stdout.
//
// Exit status: 0 success, 1 a run-time error, 2 a usage error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "polygrad/inference/decoder.hpp"
#include "polygrad/io/language_model_file.hpp"
#include "support/attention_cli.hpp"
#include "support/byte_vocabulary.hpp"
#include "support/program.hpp"

namespace {

using namespace polygrad;

constexpr const char* program_name = "polygrad_sample";

struct SampleOptions {
  std::string model;
  std::string prompt = "\n";
  int tokens = 200;
  double temperature = 0.8;
  int top_k = 0;  // 0: every character
  std::uint64_t seed = 1;
  examples::AttentionCli attention;
};

/// The id drawn from `logits` (one row) at `temperature` among the `top_k` likeliest ids.
int draw(const RowVector<double>& logits, const SampleOptions& o, std::mt19937_64& rng) {
  const Index V = logits.size();
  Index best = 0;
  logits.maxCoeff(&best);
  if (o.temperature == 0) return int(best);
  std::vector<Index> order(static_cast<std::size_t>(V));
  std::iota(order.begin(), order.end(), Index(0));
  const Index keep = o.top_k > 0 ? std::min<Index>(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                    [&](Index a, Index b) { return logits(a) > logits(b); });
  std::vector<double> weights(static_cast<std::size_t>(keep));
  for (Index i = 0; i < keep; ++i)
    weights[std::size_t(i)] =
        std::exp((logits(order[std::size_t(i)]) - logits(best)) / o.temperature);
  std::discrete_distribution<Index> pick(weights.begin(), weights.end());
  return int(order[std::size_t(pick(rng))]);
}

void sample(const SampleOptions& o) {
  const SafetensorsFile file = SafetensorsFile::read(o.model);
  const auto vocab_entry = file.metadata().find("vocab_hex");
  require<FormatError>(vocab_entry != file.metadata().end(), o.model, ": no vocabulary in its ",
                       "metadata (\"vocab_hex\"); sample from the model_<run>.safetensors that ",
                       "polygrad_train writes");
  const std::string vocab = examples::from_hex(vocab_entry->second, o.model);
  LanguageModel<float> model = load_language_model<float>(file, o.attention.make<float>());
  require<FormatError>(Index(vocab.size()) == model.config().vocab, o.model, ": the vocabulary ",
                       "has ", vocab.size(), " characters but the model ", model.config().vocab);

  std::vector<int> ids;
  for (std::size_t i = 0; i < o.prompt.size(); ++i) {
    const auto at = vocab.find(o.prompt[i]);
    require<Error>(at != std::string::npos, "the prompt's character ", i, " (byte ",
                   int(static_cast<unsigned char>(o.prompt[i])), ") is not in the model's ",
                   "vocabulary of ", vocab.size(), " characters; leave it out");
    ids.push_back(int(at));
  }
  Decoder<float> decoder(model);  // refuses a model it cannot decode before anything is printed
  std::cout << o.prompt << std::flush;
  std::mt19937_64 rng(o.seed);
  const Index context = model.config().context;
  // The last `keep` characters in one pass.
  const auto restart = [&](Index keep) {
    const std::size_t from = ids.size() - std::size_t(std::min<Index>(keep, Index(ids.size())));
    return decoder.prefill(std::vector<int>(ids.begin() + std::ptrdiff_t(from), ids.end()));
  };
  Vector<float> logits = restart(context);
  for (int t = 0; t < o.tokens; ++t) {
    const int next = draw(logits.transpose().cast<double>(), o, rng);
    ids.push_back(next);
    std::cout << vocab[std::size_t(next)] << std::flush;
    if (t + 1 == o.tokens) break;
    logits = decoder.position() < context ? decoder.step(next)
                                          : restart(std::max<Index>(context / 2, 1));
  }
  std::cout << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generate text from a character-level LanguageModel written by polygrad_train",
               program_name};
  SampleOptions o;
  app.add_option("--model", o.model,
                 "LanguageModel file with its vocabulary (model_<run>.safetensors)")
      ->required();
  app.add_option("--prompt", o.prompt,
                 "text the generation continues (every character in the vocabulary)")
      ->capture_default_str();
  app.add_option("--tokens", o.tokens, "characters to generate")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--temperature", o.temperature,
                 "softmax temperature; 0 takes the likeliest character")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  app.add_option("--top-k", o.top_k, "draw among the k likeliest characters (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the draws")->capture_default_str();
  o.attention.add(app, true, /*with_route=*/false);  // sampling runs no backward pass
  const int parsed = examples::parse_command_line(app, argc, argv, [&] {
    o.attention.check();
    if (o.prompt.empty())
      throw CLI::ValidationError("--prompt",
                                 "needs at least one character for the model to continue");
  });
  if (parsed >= 0) return parsed;
  return examples::run_program(program_name, [&] { sample(o); });
}
