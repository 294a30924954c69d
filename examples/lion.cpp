// SPDX-License-Identifier: BSD-3-Clause
// A user-written algorithm (examples/lion.hpp, under 40 lines) composed with every bundled layout
// and communicator: each combination minimizes the same quadratic and reports its loss.
#include <shardopt/shardopt.hpp>

#include <cstdio>
#include <tuple>

#include "lion.hpp"

namespace {

// Minimizes 0.5 * ||x - target||^2 over a whole tensor and a row-sharded one; returns the final loss.
template <class Layout, class Comm>
double minimize(Comm comm, int steps) {
  Kokkos::View<double*> x("x", 16), gx("gx", 16);
  auto y = shardopt::ShardedTensor<double>::chunk(comm, {6, 4}, 0);
  shardopt::ShardedOptimizer<Lion, Layout, Comm> opt(comm, {.lr = 0.02, .weight_decay = 0.01});
  opt.add_param("x", x, gx);
  opt.add_param("y", y);
  auto target = KOKKOS_LAMBDA(std::size_t i) { return 0.1 * double(i % 7) - 0.3; };
  double loss = 0;
  for (int it = 0; it < steps; ++it) {
    loss = opt.step([&] {
      double local = 0, shard_loss = 0;
      Kokkos::parallel_reduce(
          "grad_x", x.size(), KOKKOS_LAMBDA(std::size_t i, double& l) {
            gx(i) = x(i) - target(i);
            l += 0.5 * gx(i) * gx(i);
          },
          local);
      for (auto& s : y.local_shards()) {
        auto v = s.value;
        auto g = s.grad;
        const std::size_t offset = static_cast<std::size_t>(s.metadata.offsets[0] * 4);
        double part = 0;
        Kokkos::parallel_reduce(
            "grad_y", v.size(), KOKKOS_LAMBDA(std::size_t i, double& l) {
              g(i) = v(i) - target(offset + i);
              l += 0.5 * g(i) * g(i);
            },
            part);
        shard_loss += part;
      }
      comm.all_reduce(std::span<double>(&shard_loss, 1), shardopt::ReduceOp::sum);  // the sharded part is split
      return local + shard_loss;
    });
  }
  return loss;
}

template <class Comm>
void run_all_layouts(const Comm& comm, const char* comm_name) {
  using Layouts = std::tuple<shardopt::layout::Replicated, shardopt::layout::DataParallel, shardopt::layout::FlatPartition,
                             shardopt::layout::ChunkRows, shardopt::layout::ChunkCols>;
  std::apply(
      [&](auto... layout) {
        ((void)[&] {
          using L = decltype(layout);
          const double first = minimize<L, Comm>(comm, 1), last = minimize<L, Comm>(comm, 60);
          if (comm.rank() == 0)
            std::printf("Lion with %-13s + %-6s: loss %.6f after 1 step, %.6f after 60 steps\n", std::string(L::name).c_str(),
                        comm_name, first, last);
          if (!(last < 0.1 * first)) throw std::runtime_error("Lion did not converge");
        }(), ...);
      },
      Layouts{});
}

}  // namespace

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  run_all_layouts(shardopt::comm::Mpi(MPI_COMM_WORLD), "Mpi");
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) run_all_layouts(shardopt::comm::Serial{}, "Serial");
  return 0;
}
