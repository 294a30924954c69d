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

/// The norm's order: a finite p > 0 (2 and 1 without pow) or infinity (the maximum of |g|).
struct NormOrder {
  double p;
  KOKKOS_INLINE_FUNCTION bool is_max() const { return p > 1.7976931348623157e308; }  // +inf (above DBL_MAX; numeric_limits is host-only)
  // The term of one gradient element: |g|^p (|g| for the maximum).
  template <class T>
  KOKKOS_INLINE_FUNCTION double term(T g) const {
    const double x = static_cast<double>(g);
    if (p == 2.0) return x * x;
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
  if (order.p == 2.0) {
    return leaf_value(s, begin, r.end, j, [&](std::int64_t i) { return static_cast<double>(data[i - begin]) * static_cast<double>(data[i - begin]); });
  }
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

/// The `n` leaves at `leaves` (memory of MemorySpace) readable on the host: themselves on the host
/// path, else copied into `host`.
template <class MemorySpace, class ExecSpace>
const double* leaves_on_host(const double* leaves, std::size_t n, std::vector<double>& host, MemorySpace, const ExecSpace&) {
  if constexpr (host_path<ExecSpace, MemorySpace>) {
    return leaves;
  } else {
    host.resize(n);
    copy_n<Kokkos::HostSpace, MemorySpace>(host.data(), leaves, n);
    return host.data();
  }
}

/// @brief Cuts `runs` (each with begin, end, length and leaf_at) into runs of at most about
/// `max_leaves / 2` blocks, at block boundaries (`cut(r, at, next)` is the part [at, next) of r:
/// any cut gives the same bits), groups them into batches of at most `max_leaves` leaves, and calls
/// `launch(batch, items, leaves)` for each: the batch's runs with their leaf_at, the launch items
/// (run, first leaf, end leaf; at most leaves_per_item leaves each) and the batch's leaf count.
template <class Run, class Cut, class Launch>
void leaf_batches(const std::vector<Run>& runs, std::int64_t max_leaves, Cut&& cut, Launch&& launch) {
  max_leaves = std::max<std::int64_t>(max_leaves, 4 * leaves_per_item);
  std::vector<Run> parts;
  const std::int64_t span = (max_leaves / 2) * sum_block;  // at most max_leaves / 2 + 2 * sum_block leaves a part
  for (const auto& r : runs)
    for (std::int64_t at = r.begin; at < r.end;) {
      const std::int64_t next = r.end - at > span ? ((at + span) / sum_block) * sum_block : r.end;
      parts.push_back(cut(r, at, next));
      at = next;
    }
  for (std::size_t first = 0; first < parts.size();) {
    std::vector<Run> batch;
    std::vector<Block> items;
    std::int64_t leaves = 0;
    std::size_t k = first;
    for (; k < parts.size(); ++k) {
      const std::int64_t n = leaf_span(parts[k].begin, parts[k].end, parts[k].length).count();
      if (!batch.empty() && leaves + n > max_leaves) break;
      Run r = parts[k];
      r.leaf_at = leaves;
      for (std::int64_t j = 0; j < n; j += leaves_per_item)
        items.push_back({batch.size(), static_cast<std::size_t>(j), static_cast<std::size_t>(std::min(n, j + leaves_per_item))});
      batch.push_back(r);
      leaves += n;
    }
    first = k;
    launch(std::move(batch), std::move(items), leaves);
  }
}

/// Adds the pieces of `runs` (any leaf_at) to `out`, in batches of at most `max_leaves` leaves
/// (leaf_batches), one launch and one copy to the host each.
template <class T, class ExecSpace, class MemorySpace>
void norm_pieces(const ExecSpace& exec, const std::vector<NormRun<T>>& runs, NormWorkspace<T, ExecSpace, MemorySpace>& ws,
                 NormPieces& out, std::int64_t max_leaves) {
  auto cut = [](const NormRun<T>& r, std::int64_t at, std::int64_t next) {
    return NormRun<T>{r.data + (at - r.begin), at, next, r.length, r.sum, 0};
  };
  leaf_batches(runs, max_leaves, cut, [&](std::vector<NormRun<T>>&& batch, std::vector<Block>&& items, std::int64_t leaves) {
    if (ws.leaves.extent(0) < static_cast<std::size_t>(leaves))
      ws.leaves = Kokkos::View<double*, MemorySpace>(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::norm_leaves"),
                                                    static_cast<std::size_t>(leaves));
    const NormRun<T>* rs = ws.runs.sync(exec, std::vector<NormRun<T>>(batch));
    const Block* its = ws.items.sync(exec, std::move(items));
    double* out_leaves = ws.leaves.data();
    const NormOrder order = out.order;
    if constexpr (host_path<ExecSpace, MemorySpace>) {
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
    const double* host = leaves_on_host(out_leaves, static_cast<std::size_t>(leaves), ws.host, MemorySpace{}, exec);
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
  });
}

}  // namespace shardopt::detail
