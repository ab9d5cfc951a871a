// The fixed-width kernels of exact attention (attention/exact_fixed_width.hpp) and their products
// (detail/fixed_width_products.hpp): each product against the same product in Eigen, and the
// forward and backward tiles against the general kernels (exact_kernels.hpp, themselves checked
// against the dense reference in test_exact.cpp), over partial tiles, the causal diagonal, keys
// of another length, strided views and passes shared between calls.

#include <catch2/catch.hpp>

#include <random>
#include <type_traits>

#include "polygrad/attention/exact_kernels.hpp"
#include "polygrad/detail/fixed_width_products.hpp"
#include "support/compare.hpp"

using namespace polygrad;

namespace {

template <class T>
Matrix<T> random_matrix(Index rows, Index cols, std::mt19937_64& random) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = T(normal(random));
  return m;
}

/// Two orders of summation over up to 2 x 64 terms: a few hundred roundings of T at most; an
/// error of indexing or masking is of order 1.
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-13;
}

/// Calls check(std::integral_constant<int, D>) for each D in {8, 16, 32, 64} the SIMD packet
/// of T divides, as the kernels' dispatch does.
template <class T, class Check>
void for_each_fixed_width(Check&& check) {
  const auto one = [&](auto width) {
    if constexpr (decltype(width)::value % simd::width<T> == 0) check(width);
  };
  one(std::integral_constant<int, 8>{});
  one(std::integral_constant<int, 16>{});
  one(std::integral_constant<int, 32>{});
  one(std::integral_constant<int, 64>{});
}

template <class T>
void check_products() {
  std::mt19937_64 random{7};
  const Index block = fixed_width::lane_block<T>;
  for_each_fixed_width<T>([&](auto width) {
    constexpr int D = decltype(width)::value;
    for (Index rows : {1, 3, 5, 37}) {
      for (Index lanes : {block, 2 * block}) {
        CAPTURE(D, rows, lanes);
        // Operands as views into wider matrices, so that every row stride exceeds its width.
        const Matrix<T> A_wide = random_matrix<T>(rows, D + 3, random);
        const Matrix<T> B_wide = random_matrix<T>(D, lanes + 5, random);
        const auto A = A_wide.leftCols(D);
        const auto B = B_wide.leftCols(lanes);

        // lane_products, with an epilogue that doubles the sum and records where it was called.
        Matrix<T> out = Matrix<T>::Zero(rows, lanes + 2);
        Matrix<int> calls = Matrix<int>::Zero(rows, lanes / simd::width<T>);
        fixed_width::lane_products<T, D>(A.data(), A_wide.cols(), rows, B.data(), B_wide.cols(),
                                         lanes, out.data(), out.cols(),
                                         [&calls](Index c, Index p, simd::Packet<T> s) {
                                           ++calls(c, p);
                                           return simd::add(s, s);
                                         });
        const Matrix<T> expected = T(2) * (A * B);
        CHECK(test::relative_error(out.leftCols(lanes), expected) < tolerance<T>());
        CHECK(out.rightCols(2).isZero());  // nothing written past `lanes`
        CHECK((calls.array() == 1).all());

        // add_transposed_products: C (D x lanes) += A^T X, X rows x lanes.
        const Matrix<T> X = random_matrix<T>(rows, lanes, random);
        Matrix<T> C = random_matrix<T>(D, lanes, random);
        const Matrix<T> C_expected = C + A.transpose() * X;
        fixed_width::add_transposed_products<T, D>(A.data(), A_wide.cols(), rows, X.data(),
                                                   X.cols(), lanes, C.data(), C.cols());
        CHECK(test::relative_error(C, C_expected) < tolerance<T>());

        // add_row_products: R (rows x D) += Y B2, Y rows x cols, B2 cols x D.
        const Index cols = lanes - 3;
        const Matrix<T> Y = random_matrix<T>(rows, cols + 4, random);
        const Matrix<T> B2_wide = random_matrix<T>(cols, D + 2, random);
        Matrix<T> R_wide = random_matrix<T>(rows, D + 1, random);
        const Matrix<T> R_expected = R_wide.leftCols(D) + Y.leftCols(cols) * B2_wide.leftCols(D);
        const Matrix<T> R_last = R_wide.rightCols(1);
        fixed_width::add_row_products<T, D>(Y.data(), Y.cols(), rows, cols, B2_wide.data(),
                                            B2_wide.cols(), R_wide.data(), R_wide.cols());
        CHECK(test::relative_error(R_wide.leftCols(D), R_expected) < tolerance<T>());
        CHECK(R_wide.rightCols(1) == R_last);  // the column past D untouched
      }
    }
  });
}

struct Case {
  Index n, m;  // query rows, key rows (m = n when causal)
  bool causal;
  exact::Tiles tiles;
};

template <class T, int D>
void check_kernels(const Case& k, exact::detail::Share share, std::mt19937_64& random) {
  using namespace exact::detail;
  CAPTURE(D, k.n, k.m, k.causal, k.tiles.query, k.tiles.key, share.first, share.stride);
  REQUIRE(fixed_width_applies<T>(D, k.tiles));
  // Q, K, V, dO as D-wide views into matrices two heads wide, as ExactAttention's heads are not.
  const Matrix<T> Q2 = random_matrix<T>(k.n, 2 * D, random),
                  K2 = random_matrix<T>(k.m, 2 * D, random);
  const Matrix<T> V2 = random_matrix<T>(k.m, 2 * D, random),
                  dO2 = random_matrix<T>(k.n, 2 * D, random);
  const auto Q = Q2.rightCols(D), K = K2.rightCols(D), V = V2.rightCols(D), dO = dO2.rightCols(D);
  const Pass<T> pass{T(0.7), k.causal, k.tiles};

  Matrix<T> O_fixed = Matrix<T>::Zero(k.n, 2 * D), O_general = Matrix<T>::Zero(k.n, 2 * D);
  Vector<T> lse_fixed = Vector<T>::Zero(k.n), lse_general = Vector<T>::Zero(k.n);
  forward_blocks_fixed<T, D>(Q, K, V, pass, share, O_fixed.leftCols(D), lse_fixed);
  forward_blocks_general<T>(Q, K, V, pass, share, O_general.leftCols(D), lse_general);
  CHECK(test::relative_error(O_fixed, O_general) < tolerance<T>());
  CHECK(test::relative_error(lse_fixed, lse_general) < tolerance<T>());
  CHECK(O_fixed.rightCols(D).isZero());  // only the head's own columns written

  // The backward pass from the general forward's O and lse (every row, whatever the share).
  Matrix<T> O(k.n, D);
  Vector<T> lse(k.n);
  forward_blocks_general<T>(Q, K, V, pass, {}, O, lse);
  const Vector<T> delta = O.cwiseProduct(dO).rowwise().sum();
  Matrix<T> dQ_fixed = Matrix<T>::Zero(k.n, D), dQ_general = Matrix<T>::Zero(k.n, D);
  Matrix<T> dK_fixed = Matrix<T>::Zero(k.m, D), dK_general = Matrix<T>::Zero(k.m, D);
  Matrix<T> dV_fixed = Matrix<T>::Zero(k.m, D), dV_general = Matrix<T>::Zero(k.m, D);
  backward_blocks_fixed<T, D>(Q, K, V, dO, lse, delta, pass, share, {dQ_fixed, dK_fixed, dV_fixed});
  backward_blocks_general<T>(Q, K, V, dO, lse, delta, pass, share,
                             {dQ_general, dK_general, dV_general});
  // A one-token causal sequence has dQ = dK = 0 and rounding noise only: compared on the scale
  // of dO (as test_exact.cpp does); every other case as a plain relative error.
  const double floor = k.causal && k.n == 1 ? double(dO.norm()) : 0.0;
  CHECK(test::relative_error(dQ_fixed, dQ_general, floor) < tolerance<T>());
  CHECK(test::relative_error(dK_fixed, dK_general, floor) < tolerance<T>());
  CHECK(test::relative_error(dV_fixed, dV_general, floor) < tolerance<T>());
}

template <class T>
void check_kernels_all() {
  std::mt19937_64 random{11};
  const Index block = fixed_width::lane_block<T>;
  const exact::Tiles square{block, block}, tall{2 * block, block};
  const std::vector<Case> cases = {
      {1, 1, true, square},
      {5, 5, true, square},
      {block, block, true, square},
      {block + 1, block + 1, true, square},
      {200, 200, true, square},
      {200, 200, true, tall},
      {3 * block, 3 * block, true, exact::Tiles{block, 2 * block}},
      {70, 107, false, square},
      {70, 20, false, square},
      {130, 130, false, tall},
  };
  for_each_fixed_width<T>([&](auto width) {
    constexpr int D = decltype(width)::value;
    for (const Case& k : cases) {
      check_kernels<T, D>(k, {}, random);
      check_kernels<T, D>(k, {1, 2}, random);  // the second of two calls sharing a pass
    }
  });
}

}  // namespace

TEST_CASE("the fixed-width products equal Eigen's products", "[exact][fixed_width]") {
  check_products<float>();
  check_products<double>();
}

TEST_CASE("the fixed-width kernels equal the general kernels, float and double",
          "[exact][fixed_width]") {
  check_kernels_all<float>();
  check_kernels_all<double>();
}

TEST_CASE("the fixed-width kernels run exactly where they apply", "[exact][fixed_width]") {
  using exact::detail::fixed_width_applies;
  const Index block = fixed_width::lane_block<float>;
  const bool vectorised = simd::width<float> > 1;
  const auto divides = [](Index d) { return d % simd::width<float> == 0; };
  for (Index d : {8, 16, 32, 64}) {
    CAPTURE(d);
    CHECK(fixed_width_applies<float>(d, exact::Tiles{block, block}) == (vectorised && divides(d)));
    CHECK_FALSE(fixed_width_applies<float>(d, exact::Tiles{1, block}));  // a decoding step
    CHECK_FALSE(fixed_width_applies<float>(d, exact::Tiles{block, block + 1}));
    CHECK_FALSE(fixed_width_applies<float>(d, exact::Tiles{block - 1, block}));
  }
  for (Index d : {1, 4, 12, 24, 48, 128})
    CHECK_FALSE(fixed_width_applies<float>(d, exact::Tiles{}));
  // The default tiles take them wherever the width allows (B_q = B_k = 64 is a lane block or
  // a multiple of one for every packet up to 16 floats).
  CHECK(fixed_width_applies<float>(16, exact::Tiles{}) == (vectorised && divides(16)));
  CHECK(fixed_width_applies<double>(16, exact::Tiles{}) ==
        (simd::width<double> > 1 && 16 % simd::width<double> == 0));
}
