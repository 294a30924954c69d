// SPDX-License-Identifier: BSD-3-Clause
// What the optimizer adds to each rank's peak resident memory, next to its state, and how long a
// step takes; run under mpirun, one layout per process (the peak of a process only grows):
//
//   mpirun -np 4 bench_memory --layout flat|dp|chunk [--elements N] [--tensors T] [--steps S]
//                             [--bucket-mib B] [--blocking] [--clip] [--dtype float32|bfloat16] [--json]
//
// Parameters and gradients (float32, or bfloat16 with float32 master weights; Adam) are allocated
// and touched first; the peak resident
// memory (VmHWM of /proc/self/status) is read then, and again after registration, the first step
// (which allocates the state) and S more steps. "Added" is the difference, per rank, the largest
// over the ranks. Registration and the first step are also timed: with many small tensors
// (--tensors 100000 --elements 10000000) they show how planning scales in the number of tensors.
// --blocking hides comm::Mpi's started collectives behind a Comm that has only the blocking ones,
// so the step runs one bucket at a time instead of pipelined. --clip then turns clip_grad_norm on
// (max_norm below the norm: every step scales) and times S more steps in the same run, and reads
// the peak again: the clipped step's time next to the unclipped one's, and what clipping adds.
#include <shardopt/shardopt.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Peak resident memory of this process in bytes (VmHWM), 0 where /proc is not there.
double peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return 1024.0 * std::strtod(line.c_str() + 6, nullptr);
  return 0;
}

// A Comm with comm::Mpi's blocking collectives only (no start_*): the optimizer's blocking loop.
struct Blocking {
  using communicator_category = shardopt::communicator_tag;
  static constexpr std::string_view name = "Blocking";
  shardopt::comm::Mpi inner;
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  template <class T>
  void all_reduce(std::span<T> b, shardopt::ReduceOp op) { inner.all_reduce(b, op); }
  template <class T>
  void reduce_scatter(std::span<const T> s, std::span<T> r, shardopt::ReduceOp op) { inner.reduce_scatter(s, r, op); }
  template <class T>
  void all_gather(std::span<const T> s, std::span<T> r) { inner.all_gather(s, r); }
  template <class T>
  void broadcast(std::span<T> b, int root) { inner.broadcast(b, root); }
  void barrier() { inner.barrier(); }
  const shardopt::CommStats& stats() const { return inner.stats(); }
};

struct Result {
  double added, state, register_s, first_step_s, step_s;
  double clip_step_s = 0, clip_added = 0;  // with --clip: the clipped step, and the peak it adds
};

double max_over_ranks(double v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return v;
}

template <class Layout, class Comm, class T>
Result run(std::size_t elements, int tensors, int steps, double bucket_mib, bool clip) {
  using Opt = shardopt::ShardedOptimizer<shardopt::algo::Adam, Layout, Comm>;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::vector<Kokkos::View<T*>> p, g;
  const std::size_t per = elements / static_cast<std::size_t>(tensors), rest = elements % static_cast<std::size_t>(tensors);
  for (int t = 0; t < tensors; ++t) {
    const std::size_t n = per + (static_cast<std::size_t>(t) < rest ? 1 : 0);
    p.emplace_back("p", n);
    g.emplace_back("g", n);
    Kokkos::deep_copy(p.back(), T(0.5f));
    Kokkos::deep_copy(g.back(), T(0.01f * float(rank + 1)));
  }
  Kokkos::fence();
  Comm comm{shardopt::comm::Mpi(MPI_COMM_WORLD)};
  MPI_Barrier(MPI_COMM_WORLD);
  const double base = peak_resident_bytes();
  double t0 = now();
  Opt opt(comm, {.lr = 1e-3});
  if (bucket_mib > 0) opt.set_bucket_bytes(static_cast<std::size_t>(bucket_mib * 1048576.0));
  for (int t = 0; t < tensors; ++t) opt.add_param("p" + std::to_string(t), p[t], g[t]);
  const double registered = now() - t0;
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = now();
  opt.step();  // plans and allocates the state
  Kokkos::fence();
  const double first = now() - t0;
  double best = 1e30;
  for (int s = 0; s < steps; ++s) {
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    opt.step();
    Kokkos::fence();
    best = std::min(best, max_over_ranks(now() - t0));  // the slowest rank's step counts
  }
  const double added = peak_resident_bytes() - base;
  Result r{max_over_ranks(added), max_over_ranks(static_cast<double>(opt.state_bytes())), max_over_ranks(registered),
           max_over_ranks(first), steps > 0 ? best : 0.0};
  if (!clip) return r;
  opt.clip_grad_norm(1e-3);
  opt.step();  // the norm's workspace
  double clipped = 1e30;
  for (int s = 0; s < steps; ++s) {
    for (int t = 0; t < tensors; ++t) Kokkos::deep_copy(g[t], T(0.01f * float(rank + 1)));  // clipping overwrote them
    Kokkos::fence();
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    opt.step();
    Kokkos::fence();
    clipped = std::min(clipped, max_over_ranks(now() - t0));
  }
  r.clip_step_s = steps > 0 ? clipped : 0.0;
  r.clip_added = max_over_ranks(peak_resident_bytes() - base - added);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  std::size_t elements = 128u << 20;
  int tensors = 16, steps = 3;
  double bucket_mib = 0;  // 0: the optimizer's default
  std::string layout = "flat";
  bool json = false, blocking = false, clip = false;
  std::string dtype = "float32";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--elements") && i + 1 < argc) elements = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--tensors") && i + 1 < argc) tensors = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--bucket-mib") && i + 1 < argc) bucket_mib = std::strtod(argv[++i], nullptr);
    else if (!std::strcmp(argv[i], "--layout") && i + 1 < argc) layout = argv[++i];
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--blocking")) blocking = true;
    else if (!std::strcmp(argv[i], "--clip")) clip = true;
    else if (!std::strcmp(argv[i], "--dtype") && i + 1 < argc && (!std::strcmp(argv[i + 1], "float32") || !std::strcmp(argv[i + 1], "bfloat16")))
      dtype = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s --layout flat|dp|chunk [--elements N] [--tensors T] [--steps S] [--bucket-mib B] [--blocking] [--clip] "
                   "[--dtype float32|bfloat16] [--json]\n",
                   argv[0]);
      return 2;
    }
  }
  if (tensors < 1 || elements < static_cast<std::size_t>(tensors)) {
    std::fprintf(stderr, "bench_memory: need at least one element per tensor\n");
    return 2;
  }
  Result r{};
  const char* name = nullptr;
  auto typed = [&]<class Layout, class T>() {
    return blocking ? run<Layout, Blocking, T>(elements, tensors, steps, bucket_mib, clip)
                    : run<Layout, shardopt::comm::Mpi, T>(elements, tensors, steps, bucket_mib, clip);
  };
  auto with = [&]<class Layout>(const char* n) {
    r = dtype == "bfloat16" ? typed.template operator()<Layout, shardopt::bfloat16>() : typed.template operator()<Layout, float>();
    name = n;
  };
  const double param_bytes = dtype == "bfloat16" ? 2.0 : 4.0;
  if (layout == "flat") with.template operator()<shardopt::layout::FlatPartition>("FlatPartition");
  else if (layout == "dp") with.template operator()<shardopt::layout::DataParallel>("DataParallel");
  else if (layout == "chunk") with.template operator()<shardopt::layout::ChunkRows>("ChunkRows");
  else {
    std::fprintf(stderr, "bench_memory: unknown layout %s (flat, dp or chunk)\n", layout.c_str());
    return 2;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const double mib = 1048576.0;
  if (rank == 0) {
    if (json)
      std::printf("{\"layout\": \"%s\", \"dtype\": \"%s\", \"pipelined\": %s, \"ranks\": %d, \"elements\": %zu, \"tensors\": %d, \"added_bytes\": %.0f, "
                  "\"state_bytes\": %.0f, \"register_s\": %.6g, \"first_step_s\": %.6g, \"step_s\": %.6g}\n",
                  name, dtype.c_str(), blocking ? "false" : "true", size, elements, tensors, r.added, r.state, r.register_s, r.first_step_s, r.step_s);
    else
      std::printf("%-13s %-8s %-9s P=%d  %zu elements in %d tensors: the optimizer adds %8.1f MiB/rank (%.2f bytes/element x P) = state %8.1f MiB + %7.1f MiB "
                  "(%.2fx the parameters); register %.3f s, first step %.3f s, step %.2f ms\n",
                  name, dtype.c_str(), blocking ? "blocking" : "pipelined", size, elements, tensors, r.added / mib,
                  r.added * size / static_cast<double>(elements), r.state / mib, (r.added - r.state) / mib,
                  (r.added - r.state) / (param_bytes * static_cast<double>(elements)), r.register_s, r.first_step_s, 1e3 * r.step_s);
    if (clip && !json)
      std::printf("  clip_grad_norm: step %.2f ms (%.2fx the unclipped step), adds %.1f MiB/rank more\n", 1e3 * r.clip_step_s,
                  r.clip_step_s / r.step_s, r.clip_added / mib);
  }
  return 0;
}
