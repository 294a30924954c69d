// SPDX-License-Identifier: BSD-3-Clause
// The code of docs/, compiled and run at world sizes 1 to 4. docs/writing_policies.md and
// docs/templates.md show these files verbatim; the test docs.snippets checks that they do.
#include "../docs/snippets/test_policies.hpp"
#include "../docs/snippets/train_test.hpp"

// docs/writing_policies.md, "Per-tensor sums": the user's algorithm with a sum over each whole
// tensor, under layouts that cut the tensors, has the bits of one process stepping the mean gradient.
#include "../docs/snippets/normalized_momentum.hpp"
#include "support.hpp"

#include <shardopt/shardopt.hpp>

#include <cmath>
#include <vector>

namespace {
template <class Layout>
void normalized_momentum_has_the_bits_of_one_process() {
  namespace so = shardopt;
  so::comm::Mpi comm(MPI_COMM_WORLD);
  const int p = comm.size(), r = comm.rank();
  so::ShardedOptimizer<NormalizedMomentum, Layout, so::comm::Mpi> sharded(comm, {.lr = 0.1});
  so::ShardedOptimizer<NormalizedMomentum, so::layout::Replicated, so::comm::Serial> single(so::comm::Serial{}, {.lr = 0.1});
  Kokkos::View<double**> w("w", 7, 5), gw("gw", 7, 5), rw("rw", 7, 5), rgw("rgw", 7, 5);
  Kokkos::deep_copy(w, 0.5);
  Kokkos::deep_copy(rw, 0.5);
  sharded.add_param("w", w, gw);
  single.add_param("w", rw, rgw);
  std::vector<double> m(35, 0.0), expected(35, 0.5);  // the formula, with a plain sum for the norm
  for (int k = 1; k <= 3; ++k) {
    std::vector<double> mine(35), mean(35, 0.0);
    for (int i = 0; i < 35; ++i) {
      mine[i] = test::gradient_value(7 * r, i, k);
      for (int q = 0; q < p; ++q) mean[i] += test::gradient_value(7 * q, i, k);  // in rank order, as the layouts reduce
      mean[i] /= p;
    }
    test::from_host(gw, mine);
    test::from_host(rgw, mean);
    sharded.step();
    single.step();
    double sq = 0;
    for (int i = 0; i < 35; ++i) m[i] = 0.9 * m[i] + (1.0 - 0.9) * mean[i], sq += m[i] * m[i];
    for (int i = 0; i < 35; ++i) expected[i] += -0.1 * (m[i] * (1.0 / std::sqrt(sq)));
  }
  const auto ours = test::to_host<double>(w), theirs = test::to_host<double>(rw);
  BOOST_TEST(ours == theirs, boost::test_tools::per_element());
  for (int i = 0; i < 35; ++i) BOOST_TEST(std::abs(ours[i] - expected[i]) <= 1e-14);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(docs_per_tensor_sums)
BOOST_AUTO_TEST_CASE(normalized_momentum_under_flat_partition) { normalized_momentum_has_the_bits_of_one_process<shardopt::layout::FlatPartition>(); }
BOOST_AUTO_TEST_CASE(normalized_momentum_under_chunk_cols) { normalized_momentum_has_the_bits_of_one_process<shardopt::layout::ChunkCols>(); }
BOOST_AUTO_TEST_SUITE_END()
