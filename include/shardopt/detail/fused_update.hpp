#pragma once
// The fused update kernel: every element of every segment in one Kokkos launch.

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <utility>
#include <vector>

#include <shardopt/concepts.hpp>

namespace shardopt::detail {

// A contiguous run of elements stepped together: parameter, gradient and state pointers (device
// memory of the optimizer's memory space) and the per-step scalars of its parameter.
template <class T, std::size_t N, class Scalars>
struct Segment {
  T* param;
  const T* grad;
  T* slot[N > 0 ? N : 1];
  std::size_t size;
  Scalars scalars;
  T grad_divisor;  // 1, or the world size for averaged gradients
};

struct Block {
  std::size_t segment, begin, end;
};

// Elements per block: large enough to amortize the dispatch, small enough to balance threads and SMs.
inline constexpr std::size_t block_elements = std::size_t(1) << 15;

#if defined(__GNUC__) || defined(__clang__)
#define SHARDOPT_RESTRICT __restrict__
#else
#define SHARDOPT_RESTRICT
#endif

// Steps elements [begin, end) of one segment. The segment is copied to locals first, so that the
// compiler sees the scalars as loop invariants (and hoists the algorithm's option branches out of
// the loop) and the parameter, gradient and state as independent streams: the loop vectorizes.
template <class Algo, class T, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void step_range(const Sc& scalars, T* SHARDOPT_RESTRICT p, const T* SHARDOPT_RESTRICT g, T divisor,
                                       StateSlots<T, N> st, std::size_t begin, std::size_t end) {
  const Sc s = scalars;  // a local copy: stores to p cannot alias it, so its values stay in registers
  if (divisor == T(1)) {
    for (std::size_t j = begin; j < end; ++j) {
      st.index = j;
      Algo::template update<T>(s, p[j], g[j], st);
    }
  } else {
    for (std::size_t j = begin; j < end; ++j) {
      st.index = j;
      Algo::template update<T>(s, p[j], g[j] / divisor, st);
    }
  }
}

template <class Algo, class T, std::size_t N, class Scalars>
KOKKOS_INLINE_FUNCTION void step_block(const Segment<T, N, Scalars>& seg, std::size_t begin, std::size_t end) {
  const Scalars sc = seg.scalars;
  StateSlots<T, N> st;
  for (std::size_t k = 0; k < N; ++k) st.base[k] = seg.slot[k];
  st.index = 0;
  // An algorithm may fix its option flags at compile time for the loop (see algo::Adam).
  if constexpr (requires { Algo::template with_fixed_flags<T>(sc, [](const auto&) {}); })
    Algo::template with_fixed_flags<T>(
        sc, [&](const auto& fixed) { step_range<Algo, T, N>(fixed, seg.param, seg.grad, seg.grad_divisor, st, begin, end); });
  else
    step_range<Algo, T, N>(sc, seg.param, seg.grad, seg.grad_divisor, st, begin, end);
}

// Device copies of the segment and block tables, kept between steps (reallocated when they grow).
template <class MemorySpace>
struct FusedWorkspace {
  Kokkos::View<unsigned char*, MemorySpace> segments, blocks;
};

// Copies `host` into `bytes` (grown as needed) and returns the device copy.
template <class E, class V, class Item>
Item* upload(const E& exec, V& bytes, const char* label, const std::vector<Item>& host) {
  const std::size_t n = host.size() * sizeof(Item);
  if (bytes.extent(0) < n) bytes = V(Kokkos::view_alloc(Kokkos::WithoutInitializing, label), n + n / 2);
  Kokkos::deep_copy(exec, Kokkos::subview(bytes, std::make_pair(std::size_t(0), n)),
                    Kokkos::View<const unsigned char*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                        reinterpret_cast<const unsigned char*>(host.data()), n));
  return reinterpret_cast<Item*>(bytes.data());
}

// One launch over every element of every segment. On host execution spaces each block is a plain
// vectorizable loop; on devices each block is a team whose threads take consecutive elements.
template <class Algo, class T, std::size_t N, class Scalars, class ExecSpace, class Workspace>
void fused_update(const ExecSpace& exec, const std::vector<Segment<T, N, Scalars>>& segments, Workspace& ws) {
  using Seg = Segment<T, N, Scalars>;
  std::vector<Block> blocks;
  for (std::size_t s = 0; s < segments.size(); ++s)
    for (std::size_t b = 0; b < segments[s].size; b += block_elements)
      blocks.push_back({s, b, b + block_elements < segments[s].size ? b + block_elements : segments[s].size});
  if (blocks.empty()) return;
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename ExecSpace::memory_space>::accessible;
  if constexpr (host) {
    const Seg* segs = segments.data();
    const Block* blks = blocks.data();
    Kokkos::parallel_for(
        "shardopt::fused_update", Kokkos::RangePolicy<ExecSpace>(exec, 0, blocks.size()), [=](const std::size_t i) {
          const Block b = blks[i];
          step_block<Algo>(segs[b.segment], b.begin, b.end);
        });
  } else {
    const Seg* dseg = upload(exec, ws.segments, "shardopt::segments", segments);
    const Block* dblk = upload(exec, ws.blocks, "shardopt::blocks", blocks);
    using Policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        "shardopt::fused_update", Policy(exec, static_cast<int>(blocks.size()), Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename Policy::member_type& team) {
          const Block b = dblk[team.league_rank()];
          const Seg s = dseg[b.segment];
          StateSlots<T, N> st;
          for (std::size_t k = 0; k < N; ++k) st.base[k] = s.slot[k];
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
            StateSlots<T, N> mine = st;
            mine.index = j;
            const T g = s.grad_divisor != T(1) ? s.grad[j] / s.grad_divisor : s.grad[j];
            Algo::template update<T>(s.scalars, s.param[j], g, mine);
          });
        });
  }
  exec.fence();
}

// dst[i] = src[i] for every run, one fused launch.
template <class Run, class ExecSpace>
void copy_runs(const ExecSpace& exec, const std::vector<Run>& runs) {
  using memory_space = typename ExecSpace::memory_space;
  std::vector<Block> blocks;
  for (std::size_t s = 0; s < runs.size(); ++s)
    for (std::size_t b = 0; b < runs[s].length; b += block_elements)
      blocks.push_back({s, b, b + block_elements < runs[s].length ? b + block_elements : runs[s].length});
  if (blocks.empty()) return;
  Kokkos::View<Run*, memory_space> drun(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::runs"), runs.size());
  Kokkos::View<Block*, memory_space> dblk(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::blocks"), blocks.size());
  Kokkos::deep_copy(exec, drun, Kokkos::View<const Run*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(runs.data(), runs.size()));
  Kokkos::deep_copy(exec, dblk, Kokkos::View<const Block*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(blocks.data(), blocks.size()));
  using Policy = Kokkos::TeamPolicy<ExecSpace>;
  Kokkos::parallel_for(
      "shardopt::copy_runs", Policy(exec, static_cast<int>(blocks.size()), Kokkos::AUTO),
      KOKKOS_LAMBDA(const typename Policy::member_type& team) {
        const Block b = dblk(team.league_rank());
        const Run& r = drun(b.segment);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) { r.dst[j] = r.src[j]; });
      });
  exec.fence();
}

// Whether any element of grad[0, n) is non-zero (or NaN).
template <class T, class ExecSpace>
bool any_nonzero(const ExecSpace& exec, const T* grad, std::size_t n) {
  if (n == 0) return false;
  std::size_t found = 0;
  Kokkos::parallel_reduce(
      "shardopt::any_nonzero", Kokkos::RangePolicy<ExecSpace>(exec, 0, n),
      KOKKOS_LAMBDA(const std::size_t i, std::size_t& acc) {
        acc += grad[i] != T(0) ? 1 : 0;
      },
      found);
  exec.fence();
  return found != 0;
}

template <class T, class ExecSpace>
void fill(const ExecSpace& exec, T* data, std::size_t n, T value) {
  if (n == 0) return;
  Kokkos::parallel_for(
      "shardopt::fill", Kokkos::RangePolicy<ExecSpace>(exec, 0, n), KOKKOS_LAMBDA(const std::size_t i) { data[i] = value; });
}

}  // namespace shardopt::detail
