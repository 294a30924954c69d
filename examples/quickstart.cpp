// SPDX-License-Identifier: BSD-3-Clause
// Quickstart: compose an optimizer, register plain and sharded parameters, step.
// Runs on one process or under mpirun (e.g. mpirun -np 3 ./quickstart).
#include <shardopt/shardopt.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);    // MPI (if not yet initialized) and Kokkos, undone at scope exit
  shardopt::comm::Mpi comm(MPI_COMM_WORLD);  // or shardopt::comm::Serial{}
  {
    Kokkos::View<float**> w("w", 8, 4), gw("gw", 8, 4);  // a whole tensor and its gradient
    Kokkos::View<float*> b("b", 4), gb("gb", 4);
    auto e = shardopt::ShardedTensor<float>::chunk(comm, {10, 3}, /*dim=*/0);  // like ChunkShardingSpec(dim=0)
    Kokkos::deep_copy(w, 1.0f);
    Kokkos::deep_copy(b, 0.5f);
    for (auto& shard : e.local_shards()) Kokkos::deep_copy(shard.value, 2.0f);

    using Opt = shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::Replicated, shardopt::comm::Mpi>;
    Opt opt(comm, {.lr = 1e-3, .weight_decay = 0.01, .amsgrad = true});  // Adam::Options
    opt.add_param("fc.weight", w, gw);             // views of rank 1..4, float or double
    opt.add_param("emb.weight", e);                // the local shards of a sharded tensor
    int head = opt.add_param_group({.lr = 1e-2});  // options for a new group; returns its index
    opt.add_param("fc.bias", b, gb, head);         // a parameter in that group

    for (int it = 0; it < 3; ++it) {
      opt.zero_grad(/*set_to_none=*/false);  // zero-fill every gradient
      // "Backward": the gradient of 0.5 * ||x||^2 is x itself.
      Kokkos::deep_copy(gw, w);
      Kokkos::deep_copy(gb, b);
      for (auto& shard : e.local_shards()) Kokkos::deep_copy(shard.grad, shard.value);
      opt.step();
    }
    opt.param_groups()[head].options.lr = 5e-3;  // what an LR scheduler does
    const float loss = opt.step([&] {            // step(closure): calls it once, returns its loss
      opt.zero_grad(false);
      Kokkos::deep_copy(gw, w);
      return 0.0f;
    });
    (void)loss;

    auto hw = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, w);
    auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace{}, b);
    std::printf("rank %d/%d: fc.weight[0,0] = %.6f, fc.bias[0] = %.6f, emb.weight local shards = %zu, steps = %lld\n",
                comm.rank(), comm.size(), hw(0, 0), hb(0), e.local_shards().size(),
                static_cast<long long>(opt.step_count("fc.weight")));
  }
  return 0;
}
