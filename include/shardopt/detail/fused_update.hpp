#pragma once
// The fused update kernel: every element of every segment in one Kokkos launch.

#include <Kokkos_Core.hpp>

#include <cstddef>
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

// Elements per team: large enough to amortize the team, small enough to balance threads and SMs.
inline constexpr std::size_t block_elements = std::size_t(1) << 15;

template <class Algo, class T, std::size_t N, class Scalars, class ExecSpace>
void fused_update(const ExecSpace& exec, const std::vector<Segment<T, N, Scalars>>& segments) {
  using memory_space = typename ExecSpace::memory_space;
  using Seg = Segment<T, N, Scalars>;
  std::vector<Block> blocks;
  for (std::size_t s = 0; s < segments.size(); ++s)
    for (std::size_t b = 0; b < segments[s].size; b += block_elements)
      blocks.push_back({s, b, b + block_elements < segments[s].size ? b + block_elements : segments[s].size});
  if (blocks.empty()) return;
  Kokkos::View<Seg*, memory_space> dseg(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::segments"), segments.size());
  Kokkos::View<Block*, memory_space> dblk(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::blocks"), blocks.size());
  Kokkos::deep_copy(exec, dseg, Kokkos::View<const Seg*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(segments.data(), segments.size()));
  Kokkos::deep_copy(exec, dblk, Kokkos::View<const Block*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(blocks.data(), blocks.size()));
  using Policy = Kokkos::TeamPolicy<ExecSpace>;
  Kokkos::parallel_for(
      "shardopt::fused_update", Policy(exec, static_cast<int>(blocks.size()), Kokkos::AUTO),
      KOKKOS_LAMBDA(const typename Policy::member_type& team) {
        const Block b = dblk(team.league_rank());
        const Seg& s = dseg(b.segment);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
          StateSlots<T, N> st;
          for (std::size_t k = 0; k < N; ++k) st.ptr[k] = s.slot[k] ? s.slot[k] + j : nullptr;
          T g = s.grad[j];
          if (s.grad_divisor != T(1)) g = g / s.grad_divisor;
          Algo::template update<T>(s.scalars, s.param[j], g, st);
        });
      });
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
