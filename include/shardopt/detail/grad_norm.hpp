// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The pieces of gradient norms, computed where the gradients are: one launch per batch of
/// runs computes every run's leaves (detail/reproducible_sum.hpp: loose terms and block sums of
/// |g|^p, or block maxima of |g| for the infinity norm), which are copied to the host and become
/// the rank's pieces of each parameter's sum (or its maximum). The optimizer completes them over
/// the ranks (ShardedOptimizer::clip_phase, detail/optimizer/step.hpp).

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include <shardopt/algorithm.hpp>
#include <shardopt/detail/fused_update.hpp>
#include <shardopt/detail/reproducible_sum.hpp>

namespace shardopt::detail {

/// Indices [begin, end) of sum `sum` (a parameter's flat indices; `length` in all), whose
/// gradients are data[0, end - begin) in the optimizer's memory space; its leaves go to `leaf_at`.
template <class T>
struct NormRun {
  const T* data;
  std::int64_t begin, end, length;
  std::size_t sum;
  std::int64_t leaf_at;
  bool operator==(const NormRun&) const = default;
};

/// x * x, never contracted with the addition that follows into an FMA (GPU compilers contract by
/// default; a block summed whole must give the bits of its terms summed after a cut).
KOKKOS_INLINE_FUNCTION double square(double x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __dmul_rn(x, x);
#else
  return x * x;
#endif
}

/// The norm's order: a finite p > 0 (2 and 1 without pow) or infinity (the maximum of |g|).
struct NormOrder {
  double p;
  KOKKOS_INLINE_FUNCTION bool is_max() const { return p > 1.7976931348623157e308; }  // +inf (above DBL_MAX; numeric_limits is host-only)
  // The term of one gradient element: |g|^p (|g| for the maximum).
  template <class T>
  KOKKOS_INLINE_FUNCTION double term(T g) const {
    const double x = static_cast<double>(g);
    if (p == 2.0) return square(x);
    const double a = math::abs(x);
    if (p == 1.0 || is_max()) return a;
    return math::pow(a, p);
  }
};

// Leaf j of run r: a leaf_value of the sum's terms, or the NaN-propagating maximum of a block.
// The order is dispatched once per leaf, so that each block's loop is a plain one (it vectorizes).
template <class T>
KOKKOS_INLINE_FUNCTION double norm_leaf(const NormRun<T>& r, NormOrder order, std::int64_t j) {
  const LeafSpan s = leaf_span(r.begin, r.end, r.length);
  const T* data = r.data;
  const std::int64_t begin = r.begin;
  if (order.p == 2.0) return leaf_value(s, begin, r.end, j, [&](std::int64_t i) { return square(static_cast<double>(data[i - begin])); });
  if (order.p == 1.0 || (order.is_max() && (j < s.head || j >= s.head + s.blocks)))
    return leaf_value(s, begin, r.end, j, [&](std::int64_t i) { return math::abs(static_cast<double>(data[i - begin])); });
  if (!order.is_max()) return leaf_value(s, begin, r.end, j, [&](std::int64_t i) { return order.term(data[i - begin]); });
  const std::int64_t base = (s.first_block + (j - s.head)) * sum_block;
  double m = 0.0;
  for (std::int64_t i = base; i < base + sum_block && i < r.end; ++i) m = math::maximum(m, math::abs(static_cast<double>(data[i - begin])));
  return m;
}

/// Leaves per launch item (a team on a device).
inline constexpr std::int64_t leaves_per_item = 256;

/// The tables and leaves of norm_pieces, kept between steps in the optimizer's memory space.
template <class T, class ExecSpace, class MemorySpace>
struct NormWorkspace {
  DeviceTable<NormRun<T>, ExecSpace, MemorySpace> runs;
  DeviceTable<Block, ExecSpace, MemorySpace> items;  // (run, first leaf, end leaf)
  Kokkos::View<double*, MemorySpace> leaves;
  std::vector<double> host;  // the leaves on the host (device path)
};

/// What a rank holds of the gradient norms of its parameters: the pieces of each parameter's sum
/// of |g|^p, or (infinity norm) its local maximum of |g| (NaN if any element is NaN; 0 if none).
struct NormPieces {
  NormOrder order;
  SumPieces sums;
  std::vector<double> maxima;  // per parameter
};

/// Adds the pieces of `runs` (built with leaf_at 0) to `out`, in batches of at most `max_leaves`
/// leaves (runs longer than that are cut at block boundaries: any cut gives the same bits), one
/// launch and one copy to the host each.
template <class T, class ExecSpace, class MemorySpace>
void norm_pieces(const ExecSpace& exec, std::vector<NormRun<T>> runs, NormWorkspace<T, ExecSpace, MemorySpace>& ws, NormPieces& out,
                 std::int64_t max_leaves) {
  max_leaves = std::max<std::int64_t>(max_leaves, 4 * leaves_per_item);
  // Cut long runs (at multiples of a block past their first whole block).
  std::vector<NormRun<T>> cut;
  const std::int64_t span = (max_leaves / 2) * sum_block;  // elements per cut run: at most max_leaves / 2 + 2 * sum_block leaves
  for (const auto& r : runs) {
    if (r.end <= r.begin) continue;
    std::int64_t at = r.begin;
    while (at < r.end) {
      std::int64_t next = r.end;
      if (r.end - at > span) next = ((at + span) / sum_block) * sum_block;
      cut.push_back({r.data + (at - r.begin), at, next, r.length, r.sum, 0});
      at = next;
    }
  }
  constexpr bool on_host = host_path<ExecSpace, MemorySpace>;
  for (std::size_t first = 0; first < cut.size();) {
    // A batch: runs while their leaves fit (at least one run).
    std::vector<NormRun<T>> batch;
    std::vector<Block> items;
    std::int64_t leaves = 0;
    std::size_t k = first;
    for (; k < cut.size(); ++k) {
      const std::int64_t n = leaf_span(cut[k].begin, cut[k].end, cut[k].length).count();
      if (!batch.empty() && leaves + n > max_leaves) break;
      NormRun<T> r = cut[k];
      r.leaf_at = leaves;
      for (std::int64_t j = 0; j < n; j += leaves_per_item)
        items.push_back({batch.size(), static_cast<std::size_t>(j), static_cast<std::size_t>(std::min(n, j + leaves_per_item))});
      batch.push_back(r);
      leaves += n;
    }
    first = k;
    if (ws.leaves.extent(0) < static_cast<std::size_t>(leaves))
      ws.leaves = Kokkos::View<double*, MemorySpace>(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::norm_leaves"),
                                                    static_cast<std::size_t>(leaves));
    const NormRun<T>* rs = ws.runs.sync(exec, std::vector<NormRun<T>>(batch));
    const Block* its = ws.items.sync(exec, std::move(items));
    double* out_leaves = ws.leaves.data();
    const NormOrder order = out.order;
    if constexpr (on_host) {
      Kokkos::parallel_for(
          "shardopt::norm_leaves", Kokkos::RangePolicy<ExecSpace>(exec, 0, ws.items.size()), [=](const std::size_t i) {
            const Block b = its[i];
            const NormRun<T> r = rs[b.segment];
            for (std::size_t j = b.begin; j < b.end; ++j)
              out_leaves[r.leaf_at + static_cast<std::int64_t>(j)] = norm_leaf(r, order, static_cast<std::int64_t>(j));
          });
      exec.fence();
    } else {
      using Policy = Kokkos::TeamPolicy<ExecSpace>;
      Kokkos::parallel_for(
          "shardopt::norm_leaves", Policy(exec, static_cast<int>(ws.items.size()), Kokkos::AUTO),
          KOKKOS_LAMBDA(const typename Policy::member_type& team) {
            const Block b = its[team.league_rank()];
            const NormRun<T> r = rs[b.segment];
            Kokkos::parallel_for(Kokkos::TeamThreadRange(team, b.begin, b.end), [&](const std::size_t j) {
              out_leaves[r.leaf_at + static_cast<std::int64_t>(j)] = norm_leaf(r, order, static_cast<std::int64_t>(j));
            });
          });
      exec.fence();
    }
    const double* host = out_leaves;
    if constexpr (!on_host) {
      ws.host.resize(static_cast<std::size_t>(leaves));
      copy_n<Kokkos::HostSpace, MemorySpace>(ws.host.data(), out_leaves, ws.host.size());
      host = ws.host.data();
    }
    for (const auto& r : batch) {
      const double* l = host + r.leaf_at;
      if (!order.is_max()) {
        out.sums.add_leaves(r.sum, r.begin, r.end, r.length, l);
        continue;
      }
      double& m = out.maxima.at(r.sum);
      const std::int64_t n = leaf_span(r.begin, r.end, r.length).count();
      for (std::int64_t j = 0; j < n; ++j) m = math::maximum(m, l[j]);
    }
  }
}

}  // namespace shardopt::detail
