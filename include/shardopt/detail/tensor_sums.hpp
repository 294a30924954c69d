// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Pass 1 of an algorithm with per-tensor sums (`tensor_sum_names`): one launch per batch
/// of runs calls `Algo::accumulate` on every element (it writes nothing) and writes each run's
/// leaves of the K sums (detail/reproducible_sum.hpp), which become the rank's pieces of every
/// tensor's sums. The optimizer completes them over the ranks and runs pass 2, the fused update
/// with each tensor's factor (ShardedOptimizer::accumulate_lane, detail/optimizer/step.hpp).

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/fused_update.hpp>
#include <shardopt/detail/grad_norm.hpp>
#include <shardopt/detail/reproducible_sum.hpp>

namespace shardopt::detail {

/// Elements [begin, end) of parameter `param` (flat indices; `length` in all): `seg` holds their
/// parameter, gradient (reduced, averaged) and state; their leaves go to `leaf_at`.
template <class T, std::size_t N>
struct SumRun {
  Segment<T, N> seg;
  std::int64_t begin, end, length;
  std::size_t param;
  std::int64_t leaf_at;
  bool operator==(const SumRun&) const = default;
};

// The K values of leaf j of run r: Algo::accumulate's terms of one element, or a block's sums.
template <class Algo, std::size_t K, class T, std::size_t N, class Sc>
KOKKOS_INLINE_FUNCTION void accumulate_leaf(const SumRun<T, N>& r, const Sc& s, std::int64_t j, double* out) {
  const LeafSpan sp = leaf_span(r.begin, r.end, r.length);
  StateSlots<T, N> st;
  for (std::size_t k = 0; k < N; ++k) st.base[k] = r.seg.slot[k];
  st.index = 0;
  auto element = [&](std::int64_t i, double* t) {
    const auto o = static_cast<std::size_t>(i - r.begin);
    st.index = o;
    T g = r.seg.grad[o];
    if (r.seg.grad_scale != T(1)) g *= r.seg.grad_scale;
    Algo::template accumulate<T>(s, r.seg.param[o], g, st, t);
  };
  if (j < sp.head) return element(r.begin + j, out);
  if (j < sp.head + sp.blocks) {
    const std::int64_t base = (sp.first_block + (j - sp.head)) * sum_block;
    if (base + sum_block <= r.end) {  // a whole block: no end test in the loop (it vectorizes)
      const auto o = static_cast<std::size_t>(base - r.begin);
      const T scale = r.seg.grad_scale;
      const T* grad = r.seg.grad + o;
      const T* param = r.seg.param + o;
      for (std::size_t k = 0; k < N; ++k)
        if (st.base[k]) st.base[k] += o;
      block_sums<K>(
          [&](int e, double* t) {
            st.index = static_cast<std::size_t>(e);
            Algo::template accumulate<T>(s, param[e], grad[e] * scale, st, t);
          },
          out);
      return;
    }
    block_sums<K>(
        [&](int e, double* t) {
          if (base + e < r.end) {
            element(base + e, t);
          } else {
            for (std::size_t k = 0; k < K; ++k) t[k] = 0.0;
          }
        },
        out);
    return;
  }
  element((sp.first_block + sp.blocks) * sum_block + (j - sp.head - sp.blocks), out);
}

/// The tables and leaves of accumulate_pieces, kept between steps in the optimizer's memory space.
template <class T, std::size_t N, class Scalars, class ExecSpace, class MemorySpace>
struct AccumulateWorkspace {
  DeviceTable<SumRun<T, N>, ExecSpace, MemorySpace> runs;
  DeviceTable<Block, ExecSpace, MemorySpace> items;
  DeviceTable<Scalars, ExecSpace, MemorySpace> scalars;  // only with more than ScalarSets::inline_sets
  Kokkos::View<double*, MemorySpace> leaves;
  std::vector<double> host, one;
};

/// The workspace of an optimizer whose Algo is valid and has per-tensor sums; nothing otherwise.
template <bool Valid, class Algo, class T, std::size_t N, class ExecSpace, class MemorySpace>
using accumulate_workspace_for = workspace_for<Valid, AccumulateWorkspace, Algo, T, N, ExecSpace, MemorySpace>;

/// Pass 1 over `runs` (their segments' scalars index `scalars`): Algo::accumulate on every element,
/// and the pieces of sum K * param + k of each run's parameter added to `out`; in batches of at
/// most `max_leaves` leaves, one launch and one copy to the host each.
template <class Algo, std::size_t K, class T, std::size_t N, class Scalars, class ExecSpace, class MemorySpace>
void accumulate_pieces(const ExecSpace& exec, const std::vector<SumRun<T, N>>& runs, const std::vector<Scalars>& scalars,
                       AccumulateWorkspace<T, N, Scalars, ExecSpace, MemorySpace>& ws, SumPieces& out, std::int64_t max_leaves) {
  if (runs.empty()) return;
  ScalarSets<Scalars> sets{};
  if (scalars.size() <= ScalarSets<Scalars>::inline_sets)
    for (std::size_t i = 0; i < scalars.size(); ++i) sets.set[i] = scalars[i];
  else
    sets.table = ws.scalars.upload(exec, std::vector<Scalars>(scalars));
  auto cut = [](const SumRun<T, N>& r, std::int64_t at, std::int64_t next) {
    SumRun<T, N> c = r;
    const auto d = static_cast<std::size_t>(at - r.begin);
    c.seg.param += d;
    c.seg.grad += d;
    for (std::size_t k = 0; k < N; ++k)
      if (c.seg.slot[k]) c.seg.slot[k] += d;
    c.seg.size = static_cast<std::size_t>(next - at);
    c.begin = at;
    c.end = next;
    return c;
  };
  leaf_batches(runs, max_leaves / static_cast<std::int64_t>(K), cut,
               [&](std::vector<SumRun<T, N>>&& batch, std::vector<Block>&& items, std::int64_t leaves) {
                 const auto values = static_cast<std::size_t>(leaves) * K;
                 if (ws.leaves.extent(0) < values)
                   ws.leaves = Kokkos::View<double*, MemorySpace>(
                       Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::sum_leaves"), values);
                 const SumRun<T, N>* rs = ws.runs.sync(exec, std::vector<SumRun<T, N>>(batch));
                 const Block* its = ws.items.sync(exec, std::move(items));
                 double* out_leaves = ws.leaves.data();
                 if constexpr (host_path<ExecSpace, MemorySpace>) {
                   Kokkos::parallel_for(
                       "shardopt::accumulate", Kokkos::RangePolicy<ExecSpace>(exec, 0, ws.items.size()), [=](const std::size_t i) {
                         const Block b = its[i];
                         const SumRun<T, N> r = rs[b.segment];
                         const Scalars sc = sets[r.seg.scalars];
                         for (std::size_t j = b.begin; j < b.end; ++j)
                           accumulate_leaf<Algo, K>(r, sc, static_cast<std::int64_t>(j), out_leaves + (r.leaf_at + static_cast<std::int64_t>(j)) * K);
                       });
                   exec.fence();
                 } else {
                   using Policy = Kokkos::TeamPolicy<ExecSpace>;
                   Kokkos::parallel_for(
                       "shardopt::accumulate", Policy(exec, static_cast<int>(ws.items.size()), Kokkos::AUTO),
                       KOKKOS_LAMBDA(const typename Policy::member_type& team) {
                         const Block b = its[team.league_rank()];
                         const SumRun<T, N> r = rs[b.segment];
                         const Scalars sc = sets[r.seg.scalars];
                         Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
                           accumulate_leaf<Algo, K>(r, sc, static_cast<std::int64_t>(j), out_leaves + (r.leaf_at + static_cast<std::int64_t>(j)) * K);
                         });
                       });
                   exec.fence();
                 }
                 const double* host = leaves_on_host(out_leaves, values, ws.host, MemorySpace{}, exec);
                 for (const auto& r : batch) {
                   const std::int64_t n = leaf_span(r.begin, r.end, r.length).count();
                   ws.one.resize(static_cast<std::size_t>(n));
                   for (std::size_t k = 0; k < K; ++k) {
                     for (std::int64_t j = 0; j < n; ++j) ws.one[static_cast<std::size_t>(j)] = host[(r.leaf_at + j) * K + k];
                     out.add_leaves(r.param * K + k, r.begin, r.end, r.length, ws.one.data());
                   }
                 }
               });
}

}  // namespace shardopt::detail
