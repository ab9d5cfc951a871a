// The float instances of polygrad's heaviest templates, compiled once for polygrad::instances
// (include/polygrad/core/instances.hpp says how the headers list them).
#define POLYGRAD_INSTANTIATE_TYPE float
#include "polygrad/polygrad.hpp"
