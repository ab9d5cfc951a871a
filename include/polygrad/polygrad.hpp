#pragma once
// polygrad: transformer gradients, exact and through the polynomial method of Liang, Sha, Shi,
// Song and Zhou (arXiv 2408.13233). This umbrella header includes every public header.

/// \mainpage API reference
/// Transformer gradients in almost linear time: this reference is generated from the comments
/// of include/polygrad/. Start with the namespace polygrad. polygrad/polygrad.hpp includes
/// every header but polygrad/parallel/mpi.hpp (namespace polygrad::mpi, which needs MPI) and
/// the dense test references polygrad/attention/naive.hpp and poly_naive.hpp. The repository's
/// README.md says how to build and run it; docs/architecture.md maps the headers, and
/// docs/design.md holds the mathematics that the comments cite as "design.md section N".

#include "polygrad/core/error.hpp"
#include "polygrad/core/parameter.hpp"
#include "polygrad/core/threading.hpp"
#include "polygrad/core/types.hpp"

#include "polygrad/approx/entry_bound.hpp"
#include "polygrad/approx/features.hpp"
#include "polygrad/approx/polynomial.hpp"

#include "polygrad/attention/auto.hpp"
#include "polygrad/attention/exact.hpp"
#include "polygrad/attention/factory.hpp"
#include "polygrad/attention/method.hpp"
#include "polygrad/attention/packed.hpp"
#include "polygrad/attention/plan.hpp"
#include "polygrad/attention/poly.hpp"

#include "polygrad/layers/block.hpp"
#include "polygrad/layers/config.hpp"
#include "polygrad/layers/embedding.hpp"
#include "polygrad/layers/gelu.hpp"
#include "polygrad/layers/language_model.hpp"
#include "polygrad/layers/layer_norm.hpp"
#include "polygrad/layers/linear.hpp"
#include "polygrad/layers/lm_head.hpp"
#include "polygrad/layers/mlp.hpp"
#include "polygrad/layers/multihead_attention.hpp"
#include "polygrad/layers/rms_norm.hpp"
#include "polygrad/layers/rotary.hpp"
#include "polygrad/layers/swiglu.hpp"
#include "polygrad/layers/transformer.hpp"

#include "polygrad/loss/cross_entropy.hpp"
#include "polygrad/loss/loss.hpp"
#include "polygrad/loss/mse.hpp"

#include "polygrad/optim/adamw.hpp"
#include "polygrad/optim/clip.hpp"
#include "polygrad/optim/optimizer.hpp"
#include "polygrad/optim/schedule.hpp"
#include "polygrad/optim/sgd.hpp"

#include "polygrad/parallel/group.hpp"  // MPI itself: polygrad/parallel/mpi.hpp, not included here
#include "polygrad/parallel/reduce.hpp"
#include "polygrad/parallel/sharded_writer.hpp"

#include "polygrad/inference/decoder.hpp"
#include "polygrad/inference/forward.hpp"

#include "polygrad/io/checkpoint.hpp"
#include "polygrad/io/language_model_file.hpp"
#include "polygrad/io/safetensors.hpp"
#include "polygrad/io/safetensors_format.hpp"
#include "polygrad/io/safetensors_reader.hpp"
#include "polygrad/io/safetensors_writer.hpp"
