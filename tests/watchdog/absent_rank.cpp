// SPDX-License-Identifier: BSD-3-Clause
// A rank that never arrives at a collective call (it calls a local function, then waits in the
// user's own MPI call): with SHARDOPT_COLLECTIVE_TIMEOUT set, the waiting ranks report which call
// they are in and which ranks are missing, and abort the job instead of hanging. ctest expects this
// program to fail with that message (tests/CMakeLists.txt, watchdog.*).
//
//   absent_rank <rank that does not arrive>
#include <shardopt/shardopt.hpp>

#include <cstdlib>

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  shardopt::comm::Mpi comm(MPI_COMM_WORLD);
  const int absent = argc > 1 ? std::atoi(argv[1]) : 0;
  {
    Kokkos::View<float*> w("w", 8), g("g", 8);
    shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::FlatPartition, shardopt::comm::Mpi> opt(comm);
    opt.add_param("w", w, g);
    opt.step();  // collective call #1, on every rank
    if (comm.rank() == absent) {
      (void)opt.state_dict();        // local: not a collective call
      MPI_Barrier(MPI_COMM_WORLD);   // the others never come here
    } else {
      opt.step();  // collective call #2: waits for the absent rank
    }
  }
  return 0;
}
