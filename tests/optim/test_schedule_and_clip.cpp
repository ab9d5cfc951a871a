#include <catch2/catch.hpp>

#include <limits>

#include "polygrad/optim/clip.hpp"
#include "polygrad/optim/schedule.hpp"

using namespace polygrad;

TEST_CASE("warm-up rises linearly to the peak, then a half cosine falls to the floor",
          "[optim][schedule]") {
  WarmupCosine s;
  s.peak = 1.0;
  s.floor = 0.1;
  s.warmup = 4;
  s.total = 14;
  CHECK(s(1) == Approx(0.25));
  CHECK(s(2) == Approx(0.5));
  CHECK(s(4) == Approx(1.0));
  CHECK(s(9) == Approx(0.55));  // half way through the cosine: the mean of peak and floor
  CHECK(s(14) == Approx(0.1));
  CHECK(s(1000) == Approx(0.1));
  for (std::int64_t t = 5; t < 14; ++t) CHECK(s(t + 1) < s(t));  // strictly falling
}

TEST_CASE("a schedule without warm-up starts at the peak", "[optim][schedule]") {
  WarmupCosine s;
  s.peak = 2e-3;
  s.total = 10;
  CHECK(s(1) < 2e-3);
  CHECK(s(1) > 1.9e-3);
  CHECK(s(10) == 0.0);
}

TEST_CASE("bad schedules are errors that name the field", "[optim][schedule]") {
  WarmupCosine s;
  s.peak = 1;
  s.total = 5;
  s.warmup = 6;
  CHECK_THROWS_WITH(s(1), Catch::Contains("at least warmup"));
  s.warmup = 0;
  s.floor = 2;
  CHECK_THROWS_WITH(s(1), Catch::Contains("floor"));
  s.floor = 0;
  CHECK_THROWS_WITH(s(0), Catch::Contains("counted from 1"));
}

TEST_CASE("clipping scales every gradient by one factor when the global norm is too large",
          "[optim][clip]") {
  Matrix<double> w = Matrix<double>::Zero(2, 2), gw(2, 2);
  Vector<double> b = Vector<double>::Zero(2), gb(2);
  gw << 3, 0, 0, 0;
  gb << 0, 4;  // global norm 5
  const ParameterList<double> params = {detail::view_of<double>("w", w, gw),
                                        detail::view_of<double>("b", b, gb)};
  CHECK(gradient_norm(params) == Approx(5.0));
  CHECK(clip_gradient_norm(params, 10.0) == Approx(5.0));  // under the limit: unchanged
  CHECK(gw(0, 0) == 3.0);
  CHECK(clip_gradient_norm(params, 1.0) == Approx(5.0));  // returns the norm before clipping
  CHECK(gradient_norm(params) == Approx(1.0).epsilon(1e-5));
  CHECK(gw(0, 0) / gb(1) == Approx(0.75));  // the direction is kept
}

TEST_CASE("clipping refuses non-finite gradients and scales nothing", "[optim][clip]") {
  Vector<float> b = Vector<float>::Zero(3), gb(3);
  gb << 10, std::numeric_limits<float>::quiet_NaN(), 10;
  const ParameterList<float> params = {detail::view_of<float>("blocks.0.mlp.fc1.bias", b, gb)};
  CHECK_THROWS_WITH(clip_gradient_norm(params, 1.0),
                    Catch::Contains("blocks.0.mlp.fc1.bias") && Catch::Contains("NaN at index 1"));
  CHECK(gb(0) == 10.0f);
  CHECK_THROWS_AS(clip_gradient_norm(params, 0.0), Error);
}
