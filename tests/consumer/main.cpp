// Consumer-project smoke test: compiled against an *installed* shardopt through
// find_package(shardopt).  One Adam step on a replicated parameter; prints
// "consumer OK" on rank 0 and exits non-zero on any mismatch.
#include <shardopt/shardopt.hpp>

#include <cmath>
#include <cstdio>

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);  // MPI + Kokkos lifetime

  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);

  int bad = 0;
  {  // all Kokkos views die before the guard finalizes Kokkos
    shardopt::comm::Mpi comm(MPI_COMM_WORLD);
    Kokkos::View<float**> w("w", 8, 4), gw("gw", 8, 4);
    Kokkos::deep_copy(w, 1.0f);
    Kokkos::deep_copy(gw, 0.5f);

    using Opt = shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::Replicated,
                                           shardopt::comm::Mpi>;
    Opt opt(comm, {.lr = 1e-3});
    opt.add_param("fc.weight", w, gw);
    opt.step();

    // First Adam step: m_hat = g, v_hat = g^2, so every weight moves by lr.
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, w);
    const double expected = 1.0 - 1e-3;
    for (std::size_t i = 0; i < h.extent(0); ++i) {
      for (std::size_t j = 0; j < h.extent(1); ++j) {
        if (!(std::abs(static_cast<double>(h(i, j)) - expected) <= 1e-6)) {
          if (bad == 0) {
            std::fprintf(stderr, "rank %d: w(%zu,%zu) = %.9g, expected %.9g\n", rank, i, j,
                         static_cast<double>(h(i, j)), expected);
          }
          ++bad;
        }
      }
    }
  }

  int total_bad = 0;
  MPI_Allreduce(&bad, &total_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (total_bad != 0) {
    if (rank == 0) std::fprintf(stderr, "consumer FAILED: %d mismatching elements\n", total_bad);
    return 1;
  }
  if (rank == 0) std::printf("consumer OK\n");
  return 0;
}
