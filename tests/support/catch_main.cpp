// The main() of every test executable. polygrad parallelises over heads and rows itself, so
// Eigen's own threading of products stays off: with ctest -j it would only oversubscribe the
// cores. (Set at run time rather than with EIGEN_DONT_PARALLELIZE, so that the tests and the
// compiled instances they link are built with the same definitions.)
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <Eigen/Core>

int main(int argc, char* argv[]) {
  Eigen::setNbThreads(1);
  return Catch::Session().run(argc, argv);
}
