// SPDX-License-Identifier: BSD-3-Clause
// A deliberately wrong user algorithm: SGD whose learning rate depends on the rank. Its conformance
// suite must fail, and say why. The ctest test kit.wrong_algorithm_fails runs this executable at two
// ranks and requires a non-zero exit and the messages (tests/kit/expect_failure.cmake); on one rank
// there is no other rank to differ from, and the suite passes.
#define BOOST_TEST_MODULE wrong_algorithm
#include <shardopt/testing.hpp>

#include <cstdint>
#include <string_view>
#include <type_traits>

SHARDOPT_TESTING_GLOBAL_FIXTURE();

struct RankDependentSGD : shardopt::algo::SGD {
  static constexpr std::string_view name = "RankDependentSGD";
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    Options mine = o;
    mine.lr = o.lr / (1 + rank);  // WRONG: a per-rank learning rate
    return SGD::prepare<T>(mine, step);
  }
};

// What the algorithm claims to be: SGD with momentum.
const auto sgd_reference = [](const RankDependentSGD::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  if (o.momentum != 0) {
    state[0] = step == 1 ? g : state[0] * T(o.momentum) + T(1 - o.dampening) * g;
    g = o.nesterov ? g + T(o.momentum) * state[0] : state[0];
  }
  p = p + T(-o.lr) * g;
};

SHARDOPT_ALGORITHM_CONFORMANCE(rank_dependent_conformance, RankDependentSGD, sgd_reference, {.lr = 0.5, .momentum = 0.9});
