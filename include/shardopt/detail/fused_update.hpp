// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// The fused update kernel: every element of every segment in one Kokkos launch.

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <utility>
#include <vector>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/lanes.hpp>

namespace shardopt::detail {

// A contiguous run of elements stepped together: parameter, gradient and state pointers (memory of
// the optimizer's memory space), and which of the step's scalar sets applies (see ScalarSets).
// A 16-bit parameter (`storage` bfloat16 or float16) steps its float32 master weights (`param`),
// reads its gradient from `grad` (float32: a bucket, or grad32) or else `grad16` (its own 16-bit
// memory), and writes the updated masters rounded to `out16` (its 16-bit memory).
template <class T, std::size_t N>
struct Segment {
  T* param;
  const T* grad;
  T* slot[N > 0 ? N : 1];
  T* mirror;  // where the updated parameter is also written (the packed buffer), or null
  std::size_t size;
  unsigned scalars;  // index of the parameter's (group, step) scalars
  T grad_divisor;    // 1, or the world size for averaged gradients
  T grad_scale;      // 1, or the clipping coefficient the (averaged) gradient is multiplied by
  T factor;          // algorithms with per-tensor sums: the tensor's factor (tensor_factor); else 1
  const void* grad16 = nullptr;
  void* out16 = nullptr;
  Storage storage = Storage::lane;
  bool operator==(const Segment&) const = default;
};

struct Block {
  std::size_t segment, begin, end;
  bool operator==(const Block&) const = default;
};

// Elements per block: large enough to amortize the dispatch, small enough to balance threads and SMs.
inline constexpr std::size_t block_elements = std::size_t(1) << 15;

// The blocks of `count` items whose sizes `size_of(i)` gives: each item split every block_elements.
template <class SizeOf>
std::vector<Block> blocks_of(std::size_t count, SizeOf&& size_of) {
  std::vector<Block> blocks;
  for (std::size_t s = 0; s < count; ++s) {
    const std::size_t n = size_of(s);
    for (std::size_t b = 0; b < n; b += block_elements) blocks.push_back({s, b, b + block_elements < n ? b + block_elements : n});
  }
  return blocks;
}

// Tests set this for a memory space of theirs to run the device path on the host (see host_path).
template <class MemorySpace>
inline constexpr bool emulate_device = false;

// Whether the step runs on the host path: kernels of ExecSpace run on the host and read host memory,
// so the tables stay in host vectors and each block is a plain vectorizable loop. Otherwise (the
// device path) the tables are uploaded to MemorySpace and each block is a team of threads.
template <class ExecSpace, class MemorySpace>
inline constexpr bool host_path =
    Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible && !emulate_device<MemorySpace>;

// A host table and, on the device path, its copy in `MemorySpace`. sync() uploads only when the
// contents changed since the last upload, so a step whose parameters, gradient presence and group
// pattern are those of the previous step copies nothing to the device.
template <class Item, class ExecSpace, class MemorySpace>
class DeviceTable {
 public:
  static constexpr bool on_host = host_path<ExecSpace, MemorySpace>;

  // Makes the table hold `items`; returns a pointer to them that kernels in MemorySpace can read.
  // An upload is ordered on `exec` and fenced, since the host copy is reused by the next sync().
  const Item* sync(const ExecSpace& exec, std::vector<Item>&& items) {
    if (uploaded_ && items == host_) return data();
    return upload(exec, std::move(items));
  }
  // Like sync(), without comparing first (for tables that change every time).
  const Item* upload(const ExecSpace& exec, std::vector<Item>&& items) {
    host_ = std::move(items);
    uploaded_ = true;
    if constexpr (!on_host) {
      if (device_.extent(0) < host_.size())
        device_ = Kokkos::View<Item*, MemorySpace>(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::table"),
                                                  host_.size() + host_.size() / 2);
      Kokkos::deep_copy(exec, Kokkos::subview(device_, std::make_pair(std::size_t(0), host_.size())),
                        Kokkos::View<Item*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(host_.data(), host_.size()));
      exec.fence();
    }
    return data();
  }
  const Item* data() const noexcept {
    if constexpr (on_host) return host_.data();
    else return device_.data();
  }
  std::size_t size() const noexcept { return host_.size(); }

 private:
  std::vector<Item> host_;
  Kokkos::View<Item*, MemorySpace> device_;
  bool uploaded_ = false;
};

// The distinct scalars of one step, passed to the kernel by value (no upload, no synchronization)
// when there are at most `inline_sets` of them, the usual case (one per param group); otherwise
// from a table in device memory.
template <class Scalars>
struct ScalarSets {
  static constexpr std::size_t inline_sets =
      sizeof(Scalars) * 16 <= 2048 ? 16 : (2048 / sizeof(Scalars) > 0 ? 2048 / sizeof(Scalars) : 1);
  Scalars set[inline_sets];
  const Scalars* table = nullptr;
  KOKKOS_INLINE_FUNCTION const Scalars& operator[](unsigned i) const { return table ? table[i] : set[i]; }
};

#if defined(__GNUC__) || defined(__clang__)
#define SHARDOPT_RESTRICT __restrict__
#else
#define SHARDOPT_RESTRICT
#endif

// Steps elements [begin, end) of one segment. The segment is copied to locals first, so that the
// compiler sees the scalars as loop invariants (and hoists the algorithm's option branches out of
// the loop) and the parameter, gradient and state as independent streams: the loop vectorizes.
// With `Mirror`, the updated parameter is also stored to `mirror` (one pass instead of a copy after).
template <class Algo, bool Mirror, class T, std::size_t N, class Sc, class GradOf>
KOKKOS_INLINE_FUNCTION void step_loop(const Sc& s, T* SHARDOPT_RESTRICT p, const T* SHARDOPT_RESTRICT g, T* SHARDOPT_RESTRICT mirror,
                                      StateSlots<T, N> st, std::size_t begin, std::size_t end, T factor, GradOf grad_of) {
  for (std::size_t j = begin; j < end; ++j) {
    st.index = j;
    update_element<Algo>(s, p[j], grad_of(g[j]), st, factor);
    if constexpr (Mirror) mirror[j] = p[j];
  }
}

// One loop per case, so that each stays a plain vectorizable loop: torch's order (the average,
// then the clipping coefficient), a division or multiplication by 1 left out (exact anyway).
template <class Algo, bool Mirror, class T, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void step_range(const Sc& scalars, T* SHARDOPT_RESTRICT p, const T* SHARDOPT_RESTRICT g,
                                       T* SHARDOPT_RESTRICT mirror, T divisor, T scale, T factor, StateSlots<T, N> st,
                                       std::size_t begin, std::size_t end) {
  const Sc s = scalars;  // a local copy: stores to p cannot alias it, so its values stay in registers
  if (scale == T(1)) {
    if (divisor == T(1)) step_loop<Algo, Mirror>(s, p, g, mirror, st, begin, end, factor, [](T x) { return x; });
    else step_loop<Algo, Mirror>(s, p, g, mirror, st, begin, end, factor, [divisor](T x) { return x / divisor; });
  } else {
    if (divisor == T(1)) step_loop<Algo, Mirror>(s, p, g, mirror, st, begin, end, factor, [scale](T x) { return x * scale; });
    else step_loop<Algo, Mirror>(s, p, g, mirror, st, begin, end, factor, [divisor, scale](T x) { return x / divisor * scale; });
  }
}

// Element j of a segment of a 16-bit parameter (the device path): its gradient widened (from its
// bucket or its own memory), averaged and scaled in torch's order, its master stepped, and the
// result stored into the bucket (mirror) and rounded into the parameter.
template <class Algo, class T, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void step_element16(const Sc& s, const Segment<T, N>& seg, StateSlots<T, N> st, std::size_t j) {
  T g = seg.grad16 ? load_element<T>(seg.grad16, seg.storage, j) : seg.grad[j];
  if (seg.grad_divisor != T(1)) g = g / seg.grad_divisor;
  if (seg.grad_scale != T(1)) g = g * seg.grad_scale;
  st.index = j;
  update_element<Algo>(s, seg.param[j], g, st, seg.factor);
  if (seg.mirror) seg.mirror[j] = seg.param[j];
  store_element<T>(seg.out16, seg.storage, j, seg.param[j]);
}

// The host path's loops for 16-bit parameters, one per case so that each is a plain loop: the
// gradient from the parameter's own 16-bit memory (stepped in place: never averaged or scaled) or
// from float32 (a bucket or grad32: averaged and scaled in torch's order; a division or product by
// 1 is exact, so it is not left out), the result also into the bucket (Mirror) and always rounded
// into the parameter.
// Forced inline: in a translation unit of many instantiations (bench_step) GCC made them calls,
// and a call in the loop keeps it from vectorizing (float16 Adam: 0.1 G el/s instead of 0.5).
template <Storage Kind>
KOKKOS_FORCEINLINE_FUNCTION float widen16(std::uint16_t b) {
  if constexpr (Kind == Storage::bfloat16) return float_from_bfloat16_bits(b);
  else return float_from_float16_bits(b);
}
template <Storage Kind>
KOKKOS_FORCEINLINE_FUNCTION std::uint16_t narrow16(float f) {
  if constexpr (Kind == Storage::bfloat16) return bfloat16_bits(f);
  else return float16_bits(f);
}
template <class Algo, bool Mirror, Storage Kind, bool Grad16, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void step_loop16(const Sc& s, const Segment<float, N>& seg, StateSlots<float, N> st, std::size_t begin,
                                        std::size_t end) {
  float* SHARDOPT_RESTRICT p = seg.param;
  const float* SHARDOPT_RESTRICT g = seg.grad;
  const std::uint16_t* SHARDOPT_RESTRICT g16 = static_cast<const std::uint16_t*>(seg.grad16);
  std::uint16_t* SHARDOPT_RESTRICT out = static_cast<std::uint16_t*>(seg.out16);
  float* SHARDOPT_RESTRICT mirror = seg.mirror;
  const float divisor = seg.grad_divisor, scale = seg.grad_scale, factor = seg.factor;
  for (std::size_t j = begin; j < end; ++j) {
    float x;
    if constexpr (Grad16) x = widen16<Kind>(g16[j]);
    else x = g[j] / divisor * scale;
    st.index = j;
    update_element<Algo>(s, p[j], x, st, factor);
    if constexpr (Mirror) mirror[j] = p[j];
    out[j] = narrow16<Kind>(p[j]);
  }
}
template <class Algo, Storage Kind, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void step_range16(const Sc& scalars, const Segment<float, N>& seg, StateSlots<float, N> st, std::size_t begin,
                                         std::size_t end) {
  const Sc s = scalars;
  if (seg.grad16) step_loop16<Algo, false, Kind, true>(s, seg, st, begin, end);  // stepped in place: no bucket
  else if (seg.mirror) step_loop16<Algo, true, Kind, false>(s, seg, st, begin, end);
  else step_loop16<Algo, false, Kind, false>(s, seg, st, begin, end);
}

template <class Algo, class T, std::size_t N, class Scalars>
KOKKOS_INLINE_FUNCTION void step_block(const Segment<T, N>& seg, const Scalars& scalars, std::size_t begin, std::size_t end) {
  const Scalars sc = scalars;
  StateSlots<T, N> st;
  for (std::size_t k = 0; k < N; ++k) st.base[k] = seg.slot[k];
  st.index = 0;
  // An algorithm may fix its option flags at compile time for the loop (see algo::Adam).
  auto run = [&](const auto& s) {
    if constexpr (std::is_same_v<T, float>) {
      if (seg.storage != Storage::lane) {
        if (seg.storage == Storage::bfloat16) step_range16<Algo, Storage::bfloat16>(s, seg, st, begin, end);
        else step_range16<Algo, Storage::float16>(s, seg, st, begin, end);
        return;
      }
    }
    if (seg.mirror)
      step_range<Algo, true, T, N>(s, seg.param, seg.grad, seg.mirror, seg.grad_divisor, seg.grad_scale, seg.factor, st, begin, end);
    else
      step_range<Algo, false, T, N>(s, seg.param, seg.grad, nullptr, seg.grad_divisor, seg.grad_scale, seg.factor, st, begin, end);
  };
  if constexpr (requires { Algo::template with_fixed_flags<T>(sc, [](const auto&) {}); })
    Algo::template with_fixed_flags<T>(sc, run);
  else
    run(sc);
}

// The update's tables, kept between steps in the optimizer's memory space.
template <class T, std::size_t N, class Scalars, class ExecSpace, class MemorySpace>
struct FusedWorkspace {
  DeviceTable<Segment<T, N>, ExecSpace, MemorySpace> segments;
  DeviceTable<Block, ExecSpace, MemorySpace> blocks;
  DeviceTable<Scalars, ExecSpace, MemorySpace> scalars;  // only when a step has more than ScalarSets::inline_sets
};

// The workspace W of an optimizer whose Algo is valid (and needs it); nothing otherwise (no error cascade).
struct NoWorkspace {};
template <bool Valid, template <class, std::size_t, class, class, class> class W, class Algo, class T, std::size_t N, class ExecSpace,
          class MemorySpace>
struct workspace_for {
  using type = NoWorkspace;
};
template <template <class, std::size_t, class, class, class> class W, class Algo, class T, std::size_t N, class ExecSpace, class MemorySpace>
struct workspace_for<true, W, Algo, T, N, ExecSpace, MemorySpace> {
  using type = W<T, N, typename scalars_of<Algo, T>::type, ExecSpace, MemorySpace>;
};
template <bool Valid, class Algo, class T, std::size_t N, class ExecSpace, class MemorySpace>
using fused_workspace_for = workspace_for<Valid, FusedWorkspace, Algo, T, N, ExecSpace, MemorySpace>;

// One launch over every element of every segment, stream-ordered on `exec`: on a device nothing
// waits for it (unless the step has more distinct scalar sets than fit in the launch). On host
// execution spaces each block is a plain vectorizable loop; on devices each block is a team whose
// threads take consecutive elements.
template <class Algo, class T, std::size_t N, class Scalars, class ExecSpace, class MemorySpace>
void fused_update(const ExecSpace& exec, std::vector<Segment<T, N>>&& segments, std::vector<Scalars>&& scalars,
                  FusedWorkspace<T, N, Scalars, ExecSpace, MemorySpace>& ws) {
  if (segments.empty()) return;
  std::vector<Block> blocks = blocks_of(segments.size(), [&](std::size_t s) { return segments[s].size; });
  if (blocks.empty()) return;
  using Seg = Segment<T, N>;
  ScalarSets<Scalars> sets{};
  const bool inline_scalars = scalars.size() <= ScalarSets<Scalars>::inline_sets;
  if (inline_scalars)
    for (std::size_t i = 0; i < scalars.size(); ++i) sets.set[i] = scalars[i];
  else
    sets.table = ws.scalars.upload(exec, std::move(scalars));
  const Seg* segs = ws.segments.sync(exec, std::move(segments));
  const Block* blks = ws.blocks.sync(exec, std::move(blocks));
  const std::size_t nblocks = ws.blocks.size();
  if constexpr (host_path<ExecSpace, MemorySpace>) {
    Kokkos::parallel_for(
        "shardopt::fused_update", Kokkos::RangePolicy<ExecSpace>(exec, 0, nblocks), [=](const std::size_t i) {
          const Block b = blks[i];
          step_block<Algo>(segs[b.segment], sets[segs[b.segment].scalars], b.begin, b.end);
        });
    exec.fence();  // host backends run synchronously: free
  } else {
    using Policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        "shardopt::fused_update", Policy(exec, static_cast<int>(nblocks), Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename Policy::member_type& team) {
          const Block b = blks[team.league_rank()];
          const Seg s = segs[b.segment];
          const Scalars sc = sets[s.scalars];
          StateSlots<T, N> st;
          for (std::size_t k = 0; k < N; ++k) st.base[k] = s.slot[k];
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
            if constexpr (std::is_same_v<T, float>) {
              if (s.storage != Storage::lane) {
                step_element16<Algo>(sc, s, st, j);
                return;
              }
            }
            StateSlots<T, N> mine = st;
            mine.index = j;
            T g = s.grad_divisor != T(1) ? s.grad[j] / s.grad_divisor : s.grad[j];
            if (s.grad_scale != T(1)) g *= s.grad_scale;
            update_element<Algo>(sc, s.param[j], g, mine, s.factor);
            if (s.mirror) s.mirror[j] = s.param[j];
          });
        });
    if (!inline_scalars) exec.fence();  // the scalar table's host copy is rewritten by the next step
  }
}

// Copies of contiguous runs (dst[i] = src[i]; dst[i] = 0 for a run without src), fixed when the
// plan is built and uploaded once. Either side may hold 16-bit elements (a 16-bit parameter's
// gradient packed into a float32 bucket, its gathered value unpacked into it): widened exactly,
// narrowed to nearest even.
template <class T, class ExecSpace, class MemorySpace>
struct CopyTable {
  struct Run {
    void* dst;
    const void* src;
    std::size_t length;
    Storage dst_kind = Storage::lane, src_kind = Storage::lane;
    bool operator==(const Run&) const = default;
  };
  DeviceTable<Run, ExecSpace, MemorySpace> runs;
  DeviceTable<Block, ExecSpace, MemorySpace> blocks;

  void assign(const ExecSpace& exec, std::vector<Run>&& r) {
    std::vector<Block> b = blocks_of(r.size(), [&](std::size_t i) { return r[i].length; });
    runs.sync(exec, std::move(r));
    blocks.sync(exec, std::move(b));
  }
  bool empty() const noexcept { return blocks.size() == 0; }
};

// Element j of a copy run's result: its source (0 without one) divided by `divisor` and multiplied by
// `multiplier` where they are not 1.
template <class Run, class T>
KOKKOS_INLINE_FUNCTION T copied_element(const Run& r, std::size_t j, T divisor, T multiplier) {
  T v = r.src ? load_element<T>(r.src, r.src_kind, j) : T(0);
  if (divisor != T(1)) v = v / divisor;
  if (multiplier != T(1)) v = v * multiplier;
  return v;
}

// Runs every copy (or zero-fill) of `table` in one launch, stream-ordered on `exec`; with a
// `divisor` other than 1, each copied element is divided by it (dst[i] = src[i] / divisor), and
// with a `multiplier` other than 1 then multiplied by it (a gradient averaged, then unscaled).
template <class T, class ExecSpace, class MemorySpace>
void copy_runs(const ExecSpace& exec, const CopyTable<T, ExecSpace, MemorySpace>& table, T divisor = T(1), T multiplier = T(1)) {
  if (table.empty()) return;
  using Run = typename CopyTable<T, ExecSpace, MemorySpace>::Run;
  const Run* runs = table.runs.data();
  const Block* blks = table.blocks.data();
  if constexpr (host_path<ExecSpace, MemorySpace>) {
    Kokkos::parallel_for(
        "shardopt::copy_runs", Kokkos::RangePolicy<ExecSpace>(exec, 0, table.blocks.size()), [=](const std::size_t i) {
          const Block b = blks[i];
          const Run r = runs[b.segment];
          if (r.dst_kind != Storage::lane || r.src_kind != Storage::lane) {
            for (std::size_t j = b.begin; j < b.end; ++j) store_element<T>(r.dst, r.dst_kind, j, copied_element(r, j, divisor, multiplier));
            return;
          }
          T* SHARDOPT_RESTRICT dst = static_cast<T*>(r.dst);
          const T* SHARDOPT_RESTRICT src = static_cast<const T*>(r.src);
          if (src == nullptr)
            for (std::size_t j = b.begin; j < b.end; ++j) dst[j] = T(0);
          else if (multiplier != T(1))
            for (std::size_t j = b.begin; j < b.end; ++j) dst[j] = (divisor == T(1) ? src[j] : src[j] / divisor) * multiplier;
          else if (divisor == T(1))
            for (std::size_t j = b.begin; j < b.end; ++j) dst[j] = src[j];
          else
            for (std::size_t j = b.begin; j < b.end; ++j) dst[j] = src[j] / divisor;
        });
    exec.fence();  // host backends run synchronously: free
  } else {
    using Policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        "shardopt::copy_runs", Policy(exec, static_cast<int>(table.blocks.size()), Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename Policy::member_type& team) {
          const Block b = blks[team.league_rank()];
          const Run r = runs[b.segment];
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
            store_element<T>(r.dst, r.dst_kind, j, copied_element(r, j, divisor, multiplier));
          });
        });
  }
}

// Multiplies every element of the runs of `table` (their dst; src unused) by `factor` in place, in
// one launch (gradients stepped in place, unscaled).
template <class T, class ExecSpace, class MemorySpace>
void scale_runs(const ExecSpace& exec, const CopyTable<T, ExecSpace, MemorySpace>& table, T factor) {
  if (table.empty() || factor == T(1)) return;
  using Run = typename CopyTable<T, ExecSpace, MemorySpace>::Run;
  const Run* runs = table.runs.data();
  const Block* blks = table.blocks.data();
  if constexpr (host_path<ExecSpace, MemorySpace>) {
    Kokkos::parallel_for(
        "shardopt::scale_runs", Kokkos::RangePolicy<ExecSpace>(exec, 0, table.blocks.size()), [=](const std::size_t i) {
          const Block b = blks[i];
          const Run r = runs[b.segment];
          if (r.dst_kind != Storage::lane) {
            for (std::size_t j = b.begin; j < b.end; ++j) store_element<T>(r.dst, r.dst_kind, j, load_element<T>(r.dst, r.dst_kind, j) * factor);
            return;
          }
          T* SHARDOPT_RESTRICT dst = static_cast<T*>(r.dst);
          for (std::size_t j = b.begin; j < b.end; ++j) dst[j] *= factor;
        });
    exec.fence();
  } else {
    using Policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        "shardopt::scale_runs", Policy(exec, static_cast<int>(table.blocks.size()), Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename Policy::member_type& team) {
          const Block b = blks[team.league_rank()];
          const Run r = runs[b.segment];
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
            store_element<T>(r.dst, r.dst_kind, j, load_element<T>(r.dst, r.dst_kind, j) * factor);
          });
        });
  }
}

// Whether x is non-zero (or NaN); 16-bit types by their bits (any but +-0).
template <class T>
KOKKOS_INLINE_FUNCTION bool is_nonzero(T x) {
  if constexpr (sizeof(T) == 2) return (x.bits() & 0x7fffu) != 0;
  else return x != T(0);
}

// Whether any element of grad[0, n) is non-zero (or NaN).
template <class T, class ExecSpace>
bool any_nonzero(const ExecSpace& exec, const T* grad, std::size_t n) {
  if (n == 0) return false;
  std::size_t found = 0;
  Kokkos::parallel_reduce(
      "shardopt::any_nonzero", Kokkos::RangePolicy<ExecSpace>(exec, 0, n),
      KOKKOS_LAMBDA(const std::size_t i, std::size_t& acc) {
        acc += is_nonzero(grad[i]) ? 1 : 0;
      },
      found);
  exec.fence();
  return found != 0;
}

// dst[0, n) = src[0, n), dst in memory space To, src in From (through unmanaged views: Kokkos 3.4
// cannot copy from const views into or out of some memory spaces, so the source view is non-const).
template <class To, class From, class T>
void copy_n(T* dst, const T* src, std::size_t n) {
  if (n == 0) return;
  using Unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
  Kokkos::deep_copy(Kokkos::View<T*, To, Unmanaged>(dst, n), Kokkos::View<T*, From, Unmanaged>(const_cast<T*>(src), n));
}

template <class T, class ExecSpace>
void fill(const ExecSpace& exec, T* data, std::size_t n, T value) {
  if (n == 0) return;
  Kokkos::parallel_for(
      "shardopt::fill", Kokkos::RangePolicy<ExecSpace>(exec, 0, n), KOKKOS_LAMBDA(const std::size_t i) { data[i] = value; });
}

}  // namespace shardopt::detail
