// SPDX-License-Identifier: BSD-3-Clause
// The distributed step: FlatPartition (reduce-scatter, update 1/P, all-gather) against the
// data-parallel baseline (all-reduce, update everything), Adam, float32, run under mpirun:
//
//   mpirun -np 4 bench_dist [--elements N] [--tensors T] [--steps S] [--json]
//
// The communicator is wrapped in a timing policy (a user-written Comm around comm::Mpi), so the step
// time splits into communication and the rest (packing and the update).
#include <shardopt/shardopt.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// A Comm policy that forwards to another and adds up the seconds spent in collectives.
template <class Inner>
struct Timed {
  using communicator_category = shardopt::communicator_tag;
  static constexpr std::string_view name = "Timed";
  Inner inner;
  double* seconds;  // shared by copies
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  template <class T>
  void all_reduce(std::span<T> b, shardopt::ReduceOp op) { timed([&] { inner.all_reduce(b, op); }); }
  template <class T>
  void reduce_scatter(std::span<const T> s, std::span<T> r, shardopt::ReduceOp op) { timed([&] { inner.reduce_scatter(s, r, op); }); }
  template <class T>
  void all_gather(std::span<const T> s, std::span<T> r) { timed([&] { inner.all_gather(s, r); }); }
  template <class T>
  void broadcast(std::span<T> b, int root) { timed([&] { inner.broadcast(b, root); }); }
  void barrier() { inner.barrier(); }
  // The collective watchdog's arrival check (comm::Mpi::arrive), forwarded so that its cost counts.
  void arrive(std::int64_t seq, double timeout, const std::string& call) { timed([&] { inner.arrive(seq, timeout, call); }); }
  const shardopt::CommStats& stats() const { return inner.stats(); }
  template <class F>
  void timed(F&& f) {
    const double t0 = now();
    f();
    *seconds += now() - t0;
  }
};

struct Result {
  double step, comm;
  std::size_t state_bytes;
  std::uint64_t bytes_sent;
};

template <class Layout>
Result run(MPI_Comm world, std::size_t elements, int tensors, int steps) {
  double comm_seconds = 0;
  Timed<shardopt::comm::Mpi> comm{shardopt::comm::Mpi(world), &comm_seconds};
  shardopt::ShardedOptimizer<shardopt::algo::Adam, Layout, Timed<shardopt::comm::Mpi>> opt(comm, {.lr = 1e-3});
  std::vector<Kokkos::View<float*>> p, g;
  const std::size_t per = elements / static_cast<std::size_t>(tensors);
  for (int t = 0; t < tensors; ++t) {
    p.emplace_back("p", per);
    g.emplace_back("g", per);
    Kokkos::deep_copy(p.back(), 0.5f);
    Kokkos::deep_copy(g.back(), 0.01f * float(comm.rank() + 1));
    opt.add_param("p" + std::to_string(t), p.back(), g.back());
  }
  opt.step();  // warm-up: plans and state
  double best = 1e30, best_comm = 0;
  for (int s = 0; s < steps; ++s) {
    MPI_Barrier(world);
    comm_seconds = 0;
    const double t0 = now();
    opt.step();
    double dt = now() - t0, dc = comm_seconds;
    // The step of the slowest rank counts.
    double both[2] = {dt, dc};
    MPI_Allreduce(MPI_IN_PLACE, both, 2, MPI_DOUBLE, MPI_MAX, world);
    if (both[0] < best) best = both[0], best_comm = both[1];
  }
  const auto before = opt.comm().stats().bytes_sent, control = opt.control_bytes();
  opt.step();
  return {best, best_comm, opt.state_bytes(), opt.comm().stats().bytes_sent - before - (opt.control_bytes() - control)};
}

}  // namespace

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  std::size_t elements = 8u << 20;
  int tensors = 16, steps = 10;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--elements") && i + 1 < argc) elements = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--tensors") && i + 1 < argc) tensors = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else {
      std::fprintf(stderr, "usage: %s [--elements N] [--tensors T] [--steps S] [--json]\n", argv[0]);
      return 2;
    }
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Result flat = run<shardopt::layout::FlatPartition>(MPI_COMM_WORLD, elements, tensors, steps);
  const Result dp = run<shardopt::layout::DataParallel>(MPI_COMM_WORLD, elements, tensors, steps);
  if (rank == 0) {
    for (const auto& [name, r] : {std::pair{"FlatPartition", flat}, std::pair{"DataParallel", dp}}) {
      if (json)
        std::printf("{\"layout\": \"%s\", \"ranks\": %d, \"elements\": %zu, \"tensors\": %d, \"step_s\": %.6g, \"comm_s\": %.6g, "
                    "\"state_bytes\": %zu, \"bytes_sent\": %llu}\n",
                    name, size, elements, tensors, r.step, r.comm, r.state_bytes, (unsigned long long)r.bytes_sent);
      else
        std::printf("%-13s P=%d  %zu elements in %d tensors: step %8.2f ms = comm %8.2f ms + update/pack %8.2f ms; state %7.1f MB/rank; "
                    "sent %7.1f MB/rank/step\n",
                    name, size, elements, tensors, 1e3 * r.step, 1e3 * r.comm, 1e3 * (r.step - r.comm), r.state_bytes / 1e6,
                    r.bytes_sent / 1e6);
    }
    if (!json) std::printf("FlatPartition / DataParallel step time: %.2f\n", flat.step / dp.step);
  }
  return 0;
}
