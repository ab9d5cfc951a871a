#include <catch2/catch.hpp>

#include "polygrad/layers/linear.hpp"
#include "polygrad/loss/mse.hpp"
#include "polygrad/optim/sgd.hpp"
#include "support/finite_difference.hpp"

using namespace polygrad;

namespace {

/// One parameter of 3 entries with its own gradient buffer.
template <class T>
struct Param {
  Vector<T> value = Vector<T>(3), grad = Vector<T>(3);
  ParameterList<T> list() { return {detail::view_of(std::string("w"), value, grad)}; }
};

}  // namespace

TEMPLATE_TEST_CASE("SGD matches hand-computed updates", "[optim][sgd]", float, double) {
  const double lr = 0.1, mu = 0.9, wd = 0.01;
  const double w0[3] = {1.0, -2.0, 0.5};
  const double g_step[2][3] = {{0.1, 0.2, -0.3}, {-0.4, 0.0, 0.25}};
  Param<TestType> p;
  for (int j = 0; j < 3; ++j) p.value(j) = TestType(w0[j]);
  SGD<TestType> opt(p.list(), {lr, mu, wd});

  double w[3] = {w0[0], w0[1], w0[2]}, b[3] = {0, 0, 0};
  for (int s = 0; s < 2; ++s) {
    for (int j = 0; j < 3; ++j) {
      p.grad(j) = TestType(g_step[s][j]);
      const double g = g_step[s][j] + wd * w[j];  // coupled L2 decay
      b[j] = mu * b[j] + g;
      w[j] -= lr * b[j];
    }
    opt.step();
    for (int j = 0; j < 3; ++j) CHECK(double(p.value(j)) == Approx(w[j]).epsilon(1e-6));
  }
  CHECK(opt.step_count() == 2);
  const auto state = opt.state();
  REQUIRE(state.size() == 1);
  CHECK(state[0].first == "momentum_buffer.w");
  for (int j = 0; j < 3; ++j) CHECK(double((*state[0].second)(j)) == Approx(b[j]).epsilon(1e-6));
}

TEST_CASE("SGD without momentum is w -= lr grad and keeps no state", "[optim][sgd]") {
  Param<double> p;
  p.value << 1, 2, 3;
  p.grad << 1, -1, 0.5;
  SGD<double> opt(p.list(), {0.5});
  opt.step();
  CHECK(p.value(0) == 0.5);
  CHECK(p.value(1) == 2.5);
  CHECK(p.value(2) == 2.75);
  CHECK(opt.state().empty());
  opt.zero_grad();
  CHECK(p.grad.isZero(0));
}

TEST_CASE("SGD decreases the loss of a linear regression", "[optim][sgd]") {
  std::mt19937_64 rng(111);
  Linear<double> model(4, 2), teacher(4, 2);
  std::mt19937_64 init_rng(3);
  teacher.init(init_rng, 1.0);
  ParameterList<double> params;
  model.collect_parameters("fc", params);
  SGD<double> opt(params, {0.02, 0.9, 0.0});
  const Matrix<double> x = test::random_matrix(16, 4, rng);
  const Matrix<double> target = teacher.forward(x);
  double first = 0, last = 0;
  for (int step = 0; step < 100; ++step) {
    opt.zero_grad();
    const auto loss = mse_loss(model.forward(x), target);
    model.backward(loss.grad);
    opt.step();
    if (step == 0) first = loss.value;
    last = loss.value;
  }
  CHECK(last < 1e-3 * first);
}

TEST_CASE("SGD rejects non-finite gradients and bad hyperparameters", "[optim][sgd]") {
  Param<double> p;
  p.value << 1, 2, 3;
  p.grad << 0, std::nan(""), 0;
  SGD<double> opt(p.list(), {0.1, 0.5});
  CHECK_THROWS_AS(opt.step(), NumericError);
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("parameter 'w'"));
  CHECK(p.value(0) == 1.0);  // nothing updated
  CHECK(opt.step_count() == 0);
  CHECK_THROWS_AS(SGD<double>(p.list(), {-0.1}), Error);
  CHECK_THROWS_AS(SGD<double>(p.list(), {0.1, 1.0}), Error);
  CHECK_THROWS_AS(SGD<double>(p.list(), {0.1, 0.0, -1.0}), Error);
  p.grad.setZero();
  opt.state()[0].second->resize(2);  // a bad checkpoint
  CHECK_THROWS_AS(opt.step(), ShapeError);
}
