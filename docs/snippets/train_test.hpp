// train() instantiated for the combinations it is meant for, and tested with Boost.Test and the kit:
// every layout and communicator must reach the same bits, on every rank.
#pragma once
#include <shardopt/testing.hpp>

#include "greedy_layout.hpp"
#include "ordered_mpi.hpp"
#include "train.hpp"

#include <tuple>

template <class L, class C>
struct Combination {
  using layout = L;
  using comm = C;
};
using Combinations = std::tuple<Combination<shardopt::layout::DataParallel, shardopt::comm::Mpi>,
                                Combination<shardopt::layout::FlatPartition, shardopt::comm::Mpi>,
                                Combination<shardopt::layout::ChunkRows, shardopt::comm::Mpi>,
                                Combination<shardopt::layout::FlatPartition, OrderedMpi>,
                                Combination<Greedy, OrderedMpi>>;

BOOST_AUTO_TEST_CASE_TEMPLATE(train_gives_the_same_bits_with_every_layout_and_comm, C, Combinations) {
  using Comm = typename C::comm;
  const TrainResult got = train<typename C::layout>(Comm(MPI_COMM_WORLD), 60, {.lr = 0.05});
  const TrainResult data_parallel = train<shardopt::layout::DataParallel>(shardopt::comm::Mpi(MPI_COMM_WORLD), 60, {.lr = 0.05});
  BOOST_TEST(got.loss < 0.05);
  BOOST_TEST(shardopt::testing::same_bits("linear.weight", got.weight, data_parallel.weight));
  shardopt::comm::Mpi world(MPI_COMM_WORLD);
  BOOST_TEST(shardopt::testing::same_on_all_ranks(world, "linear.weight", got.weight));
}

// One process, no MPI in the optimizer: Serial with Replicated (each rank steps its own gradients).
BOOST_AUTO_TEST_CASE(train_on_one_process_with_another_algorithm) {
  const TrainResult adam = train<shardopt::layout::Replicated, shardopt::comm::Serial, shardopt::algo::Adam>(
      shardopt::comm::Serial{}, 60, {.lr = 0.05, .amsgrad = true});
  BOOST_TEST(adam.loss < 0.05);
}
