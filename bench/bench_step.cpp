// SPDX-License-Identifier: BSD-3-Clause
// Single-process step throughput: shardopt's fused step against a bandwidth ceiling measured in the
// same run by a STREAM-like kernel that moves the same bytes per element.
//
//   bench_step [--json] [--quick] [--sizes large,many,packed,cache,threads]
//
// For SGD (momentum), Adagrad, Adam, AdamW and LAMB in float and double, and four shapes of work:
//   large: one tensor of 32M elements; many: 10k tensors of 1k elements, each its own allocation;
//   packed: the same 10k tensors as views into one allocation; cache: one tensor of 16k elements,
//   stepped repeatedly (in L1/L2).
// Prints elements/s, bytes/s, the ratio to the ceiling (contiguous buffers), and the ratio to the
// same ceiling kernel run over the optimizer's own arrays. --json prints one JSON object per line.
// threads: where the default execution space is a parallel host space (OpenMP, Threads), the large
// tensor stepped by SGD and Adam on Kokkos::Serial and on that space in the same run: the speed-up
// of the step next to the speed-up of the ceiling, and the step against the N-thread ceiling. (The
// same-arrays ceiling spreads tensors, not blocks, over threads: for one tensor it is one thread's.)
#include <shardopt/shardopt.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Work {
  const char* name;
  std::size_t tensors, elements;  // per tensor
  bool packed = false;            // tensors are views into one allocation
};

// Best-of-`reps` seconds per call of f (after one warm-up call).
template <class F>
double best_time(F&& f, int reps) {
  f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Bytes each algorithm moves per element: reads of p, g and its state, writes of p and its state.
template <class Algo>
constexpr int streams_read() {
  return 2 + static_cast<int>(Algo::slot_names.size() == 3 ? 2 : Algo::slot_names.size());  // Adam without amsgrad: m, v
}

// The ceiling: per element, a multiply-add that reads the parameter, the gradient and `reads` - 2
// state streams and writes the parameter and the state, nothing an optimizer could do with less
// traffic. It runs over the tensors `p` and `g` where they are, with the state in one buffer as the
// optimizer keeps it.
template <class T, class Exec>
double device_ceiling(const std::vector<Kokkos::View<T*>>& p, const std::vector<Kokkos::View<T*>>& g, int reads, int reps);

template <class T, class Exec = Kokkos::DefaultExecutionSpace>
double ceiling(const std::vector<Kokkos::View<T*>>& p, const std::vector<Kokkos::View<T*>>& g, int reads, int reps) {
  if constexpr (!shardopt::detail::host_path<Exec, typename Exec::memory_space>) {
    return device_ceiling<T, Exec>(p, g, reads, reps);
  } else {
    const std::size_t tensors = p.size();
    std::vector<T*> pp, gg;
    std::vector<std::size_t> offset{0};  // of each tensor's state
    for (std::size_t t = 0; t < tensors; ++t) {
      pp.push_back(p[t].data());
      gg.push_back(g[t].data());
      offset.push_back(offset.back() + p[t].extent(0));
    }
    Kokkos::View<T*> s1("s1", offset.back()), s2("s2", reads > 3 ? offset.back() : 0);
    Kokkos::deep_copy(s1, T(0.25));
    Kokkos::deep_copy(s2, T(0.25));
    const T c = T(0.999);
    T* m = s1.data();
    T* v = s2.data();
    T* const* pd = pp.data();
    T* const* gd = gg.data();
    const std::size_t* od = offset.data();
    const bool four = reads > 3;
    return best_time(
        [&] {
          Kokkos::parallel_for("ceiling", Kokkos::RangePolicy<Exec>(0, tensors), [=](std::size_t t) {
            const std::size_t n = od[t + 1] - od[t];
            T* __restrict__ a0 = pd[t];
            const T* __restrict__ a1 = gd[t];
            T* __restrict__ a2 = m + od[t];
            if (!four) {
              for (std::size_t i = 0; i < n; ++i) {
                const T x = a1[i];
                a2[i] = a2[i] * c + x;
                a0[i] = a0[i] * c + x;
              }
            } else {
              T* __restrict__ a3 = v + od[t];
              for (std::size_t i = 0; i < n; ++i) {
                const T x = a1[i];
                a2[i] = a2[i] * c + x;
                a3[i] = a3[i] * c + x;
                a0[i] = a0[i] * c + x;
              }
            }
          });
          Kokkos::fence();
        },
        reps);
  }
}

// A piece of a tensor for the GPU's ceiling (at namespace scope: nvcc's device lambdas cannot
// capture a type local to a function).
template <class T>
struct CeilingPiece {
  T* p;
  const T* g;
  std::size_t state, n;  // offset of its state, elements
};

// The same ceiling on a GPU: the tensors cut into pieces of the optimizer's block size, one team per
// piece, whose threads take consecutive elements (coalesced), as the optimizer's device path does.
template <class T, class Exec>
double device_ceiling(const std::vector<Kokkos::View<T*>>& p, const std::vector<Kokkos::View<T*>>& g, int reads, int reps) {
  using Mem = typename Exec::memory_space;
  using Piece = CeilingPiece<T>;
  std::vector<Piece> pieces;
  std::size_t total = 0;
  for (std::size_t t = 0; t < p.size(); ++t)
    for (std::size_t b = 0; b < p[t].extent(0); b += shardopt::detail::block_elements) {
      const std::size_t n = std::min(p[t].extent(0) - b, shardopt::detail::block_elements);
      pieces.push_back({p[t].data() + b, g[t].data() + b, total, n});
      total += n;
    }
  Kokkos::View<Piece*, Mem> table("pieces", pieces.size());
  Kokkos::deep_copy(table, Kokkos::View<Piece*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(pieces.data(), pieces.size()));
  Kokkos::View<T*, Mem> s1("s1", total), s2("s2", reads > 3 ? total : 0);
  Kokkos::deep_copy(s1, T(0.25));
  Kokkos::deep_copy(s2, T(0.25));
  const T c = T(0.999);
  const bool four = reads > 3;
  using Team = typename Kokkos::TeamPolicy<Exec>::member_type;
  return best_time(
      [&] {
        Kokkos::parallel_for(
            "ceiling", Kokkos::TeamPolicy<Exec>(int(pieces.size()), Kokkos::AUTO), KOKKOS_LAMBDA(const Team& team) {
              const Piece piece = table(team.league_rank());
              T* m = s1.data() + piece.state;
              T* v = s2.data() + piece.state;
              Kokkos::parallel_for(Kokkos::TeamThreadRange(team, piece.n), [&](std::size_t i) {
                const T x = piece.g[i];
                m[i] = m[i] * c + x;
                if (four) v[i] = v[i] * c + x;
                piece.p[i] = piece.p[i] * c + x;
              });
            });
        Kokkos::fence();
      },
      reps);
}

// The ceiling over contiguous buffers of `n` elements, in blocks of the optimizer's block size.
template <class T, class Exec = Kokkos::DefaultExecutionSpace>
double contiguous_ceiling(std::size_t n, int reads, int reps) {
  Kokkos::View<T*> p_all("c", n), g_all("c", n);
  Kokkos::deep_copy(p_all, T(0.25));
  Kokkos::deep_copy(g_all, T(0.25));
  std::vector<Kokkos::View<T*>> p, g;
  for (std::size_t b = 0; b < n; b += shardopt::detail::block_elements) {
    const auto range = std::make_pair(b, std::min(n, b + shardopt::detail::block_elements));
    p.emplace_back(Kokkos::subview(p_all, range));
    g.emplace_back(Kokkos::subview(g_all, range));
  }
  return ceiling<T, Exec>(p, g, reads, reps);
}

struct Rates {
  double ours, ceiling;  // elements per second
};

template <class Algo, class T, class Exec = Kokkos::DefaultExecutionSpace>
Rates run(const Work& w, typename Algo::Options options, bool json, int reps) {
  using Opt = shardopt::ShardedOptimizer<Algo, shardopt::layout::Replicated, shardopt::comm::Serial, Exec>;
  Opt opt(shardopt::comm::Serial{}, options);
  std::vector<Kokkos::View<T*>> p, g;
  // "packed": the tensors are views into one allocation each for parameters and gradients, as in a
  // model that allocates its parameters in one buffer; otherwise every tensor is its own allocation.
  Kokkos::View<T*> p_all("p_all", w.packed ? w.tensors * w.elements : 0), g_all("g_all", w.packed ? w.tensors * w.elements : 0);
  for (std::size_t t = 0; t < w.tensors; ++t) {
    if (w.packed) {
      const auto range = std::make_pair(t * w.elements, (t + 1) * w.elements);
      p.emplace_back(Kokkos::subview(p_all, range));
      g.emplace_back(Kokkos::subview(g_all, range));
    } else {
      p.emplace_back(Kokkos::View<T*>("p", w.elements));
      g.emplace_back(Kokkos::View<T*>("g", w.elements));
    }
    Kokkos::deep_copy(p.back(), T(0.5));
    Kokkos::deep_copy(g.back(), T(0.01));
    opt.add_param("p" + std::to_string(t), p.back(), g.back());
  }
  const std::size_t n = w.tensors * w.elements;
  const int reads = streams_read<Algo>(), writes = reads - 1;
  // 16-bit parameters: the parameter and the gradient of 2 bytes, the state and the master weights
  // (one more read and write) of 4. Their ceiling is the float32 kernel with the master's stream
  // added, compared in bytes per second (it moves 4 bytes where the step moves 2 for p and g).
  using L = shardopt::detail::compute_t<T>;
  constexpr bool half = !std::is_same_v<T, L>;
  const double bytes_per_element = half ? 2.0 * 3 + (reads - 2 + writes - 1) * 4.0 + 8.0 : double(reads + writes) * sizeof(T);
  const int ceiling_reads = half ? reads + 1 : reads;
  const double ceiling_bytes = double(2 * ceiling_reads - 1) * sizeof(L);
  const double t_ours = best_time([&] { opt.step(); Kokkos::fence(); }, reps);  // a GPU's step returns in flight
  const double t_ceiling = contiguous_ceiling<L, Exec>(n, ceiling_reads, reps);
  double t_same = 0;  // over the optimizer's own arrays (not for 16-bit ones: the kernel computes in T)
  if constexpr (!half) t_same = ceiling<T, Exec>(p, g, reads, reps);
  const double eps = double(n) / t_ours, ceiling_eps = double(n) / t_ceiling, same_eps = half ? 0.0 : double(n) / t_same;
  const double fraction = eps * bytes_per_element / (ceiling_eps * ceiling_bytes);  // of the ceiling's bytes per second
  const char* dtype = shardopt::detail::ElementType<T>::name.data();
  if (json)
    std::printf("{\"algo\": \"%s\", \"dtype\": \"%s\", \"work\": \"%s\", \"space\": \"%s\", \"threads\": %d, \"tensors\": %zu, \"elements\": %zu, \"bytes_per_element\": %.0f, "
                "\"seconds\": %.6g, \"elements_per_s\": %.6g, \"ceiling_elements_per_s\": %.6g, \"ceiling_bytes_per_element\": %.0f, "
                "\"fraction_of_ceiling\": %.4g, \"same_arrays_ceiling_elements_per_s\": %.6g}\n",
                std::string(Algo::name).c_str(), dtype, w.name, Exec::name(), int(Exec().concurrency()), w.tensors, n, bytes_per_element, t_ours, eps,
                ceiling_eps, ceiling_bytes, fraction, same_eps);
  else
    std::printf("%-8s %-8s %-6s %6zu x %-9zu %7.3f G el/s %7.2f GB/s   ceiling %7.3f G el/s %7.2f GB/s   %5.1f%%   "
                "same-arrays ceiling %7.3f G el/s %5.1f%%\n",
                std::string(Algo::name).c_str(), dtype, w.name, w.tensors, w.elements, eps / 1e9, eps * bytes_per_element / 1e9,
                ceiling_eps / 1e9, ceiling_eps * ceiling_bytes / 1e9, 100.0 * fraction, same_eps / 1e9,
                half ? 0.0 : 100.0 * eps / same_eps);
  std::fflush(stdout);
  return {eps, ceiling_eps};
}

#if defined(KOKKOS_ENABLE_SERIAL)
// The step on one thread (Kokkos::Serial) and on the host execution space Par's threads, in one run.
template <class Algo, class T, class Par>
void thread_speedup(const Work& w, typename Algo::Options options, bool json, int reps) {
  const Rates one = run<Algo, T, Kokkos::Serial>(w, options, json, reps);
  const Rates many = run<Algo, T, Par>(w, options, json, reps);
  const int threads = Par().concurrency();
  const char* dtype = sizeof(T) == 4 ? "float32" : "float64";
  if (json)
    std::printf("{\"algo\": \"%s\", \"dtype\": \"%s\", \"work\": \"threads\", \"space\": \"%s\", \"threads\": %d, "
                "\"speedup\": %.4g, \"ceiling_speedup\": %.4g, \"fraction_of_ceiling\": %.4g}\n",
                std::string(Algo::name).c_str(), dtype, Par::name(), threads, many.ours / one.ours,
                many.ceiling / one.ceiling, many.ours / many.ceiling);
  else
    std::printf("%-8s %-8s %s x %d threads against Serial: step speed-up %.2fx, ceiling speed-up %.2fx, "
                "step at %.1f%% of the %d-thread ceiling\n",
                std::string(Algo::name).c_str(), dtype, Par::name(), threads, many.ours / one.ours,
                many.ceiling / one.ceiling, 100.0 * many.ours / many.ceiling, threads);
  std::fflush(stdout);
}
#endif

// --sizes threads: where the default execution space is a parallel host space.
template <class Par = Kokkos::DefaultExecutionSpace>
void thread_speedups(const Work& large, bool json) {
#if defined(KOKKOS_ENABLE_SERIAL)
  constexpr bool parallel_host = !std::is_same_v<Par, Kokkos::Serial> &&
                                 Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename Par::memory_space>::accessible;
#else
  constexpr bool parallel_host = false;
#endif
  if constexpr (!parallel_host) {
    (void)large, (void)json;
    std::printf("threads: skipped, needs Kokkos::Serial and a parallel host default execution space (here %s)\n", Par::name());
  } else {
#if defined(KOKKOS_ENABLE_SERIAL)
    thread_speedup<shardopt::algo::SGD, float, Par>(large, {.lr = 0.01, .momentum = 0.9}, json, 5);
    thread_speedup<shardopt::algo::Adam, float, Par>(large, {.lr = 0.001}, json, 5);
    thread_speedup<shardopt::algo::Adam, double, Par>(large, {.lr = 0.001}, json, 5);
#endif
  }
}

template <class T>
void run_all(const Work& w, bool json, int reps) {
  run<shardopt::algo::SGD, T>(w, {.lr = 0.01, .momentum = 0.9}, json, reps);
  run<shardopt::algo::Adagrad, T>(w, {.lr = 0.01}, json, reps);
  run<shardopt::algo::Adam, T>(w, {.lr = 0.001}, json, reps);
  run<shardopt::algo::AdamW, T>(w, {.lr = 0.001}, json, reps);
  // Two passes (the norms over the whole tensor first): against Adam's single-pass ceiling, the
  // least it can move is 10 streams of Adam's 7 (70%).
  run<shardopt::algo::LAMB, T>(w, {.lr = 0.001}, json, reps);
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  bool json = false, quick = false;
  std::string sizes = "large,many,cache";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) sizes = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--json] [--quick] [--sizes large,many,packed,cache,threads]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<Work> all = {{"large", 1, quick ? (1u << 20) : (32u << 20)},
                                 {"many", quick ? 100u : 10000u, 1000},
                                 {"packed", quick ? 100u : 10000u, 1000, true},
                                 {"cache", 1, 16u << 10}};
  using Exec = Kokkos::DefaultExecutionSpace;
  if (!json) std::printf("execution space: %s, concurrency %d\n", Exec::name(), Exec().concurrency());
  if (sizes.find("threads") != std::string::npos) thread_speedups(all.front(), json);
  for (const auto& w : all) {
    if (sizes.find(w.name) == std::string::npos) continue;
    const int reps = w.elements * w.tensors < (1u << 20) ? 200 : 5;
    run_all<float>(w, json, reps);
    run_all<double>(w, json, reps);
    // 16-bit parameters with float32 master weights and state.
    run<shardopt::algo::SGD, shardopt::bfloat16>(w, {.lr = 0.01, .momentum = 0.9}, json, reps);
    run<shardopt::algo::Adam, shardopt::bfloat16>(w, {.lr = 0.001}, json, reps);
    run<shardopt::algo::Adam, shardopt::float16>(w, {.lr = 0.001}, json, reps);
  }
  return 0;
}
