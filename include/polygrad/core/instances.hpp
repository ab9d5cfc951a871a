#pragma once
// Compiled instances of the heaviest templates (docs/architecture.md, "Compiled instances").
//
// polygrad is header-only: a program that includes its headers compiles every template it uses,
// and needs nothing else. The attention kernels and routes are the costly part of that (tens of
// seconds of compile time per translation unit that uses them). A build that compiles many
// such units may instead compile the float and double instances of those templates once, in the
// static library polygrad_instances, and link them:
//
//   - a header lists its heavy templates once, at its end, as POLYGRAD_INSTANCES(LIST), where
//     LIST(how, T) writes `how <declaration of the instance for T>;`;
//   - in a unit compiled with POLYGRAD_EXTERN_TEMPLATES=1 (what linking polygrad_instances
//     adds), each becomes `extern template ...;` for float and double: the unit uses the
//     compiled instance and does not instantiate it;
//   - in a unit of the instances library (src/instances/), which defines
//     POLYGRAD_INSTANTIATE_TYPE to float or double before any polygrad header, each becomes the
//     explicit instantiation `template ...;` for that type;
//   - otherwise the list expands to nothing, and every template is instantiated where it is used,
//     as in any header-only library.
//
// An instance that some unit needs and the list does not name is instantiated in that unit as
// usual, so the list can only change build times, never behaviour.

#if defined(POLYGRAD_INSTANTIATE_TYPE)
#define POLYGRAD_INSTANCES(LIST) LIST(template, POLYGRAD_INSTANTIATE_TYPE)
#elif defined(POLYGRAD_EXTERN_TEMPLATES) && POLYGRAD_EXTERN_TEMPLATES
#define POLYGRAD_INSTANCES(LIST) LIST(extern template, float) LIST(extern template, double)
#else
#define POLYGRAD_INSTANCES(LIST)
#endif
