// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The plan of one element type: which elements of which parameter this rank keeps state
/// for, where they sit in its state buffers, and the buckets a step moves them through. A pure
/// function of the parameters' shapes, the layout, the world size, the rank and the bucket size
/// (make_plan), so it is unit-tested for any world size in one process (tests/test_plan.cpp).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include <shardopt/detail/buckets.hpp>
#include <shardopt/detail/shape.hpp>
#include <shardopt/error.hpp>
#include <shardopt/layout_support.hpp>

namespace shardopt::detail {

/// @brief Elements of one parameter whose state this rank keeps, `length` of them from
/// `state_offset` in the state buffers. A packed run covers the tensor's flat range
/// [src, src + length) and sits at `dst` of the packed buffer; a local run is local piece `piece`
/// (a whole tensor or a shard), stepped in place with its own gradient.
struct StateRun {
  std::size_t param;
  bool packed;
  std::size_t piece;  // local runs
  std::int64_t src, dst, length, state_offset;
  bool operator==(const StateRun&) const = default;
};

/// One parameter of the element type being planned.
struct PlanTensor {
  std::size_t param;                  ///< its index among the optimizer's parameters
  std::vector<std::int64_t> shape;    ///< its global shape
  bool packed;                        ///< a whole tensor through the packed buffer (else stepped in place)
  std::vector<std::int64_t> pieces;   ///< elements of each local piece (for tensors stepped in place)
};

/// @brief The plan of one element type on one rank.
struct PlanLayout {
  std::int64_t part_size = 0;          ///< elements per part of the packing
  std::vector<StateRun> state_runs;    ///< what this rank keeps: packed runs by `dst`, then local runs
  std::int64_t state_size = 0;         ///< elements of each state slot on this rank
  std::vector<Bucket> buckets;         ///< the step's buckets, in order
  std::int64_t bucket_elements = 0;    ///< the bucket size they were cut for
  /// The state runs of parameter i are state_runs[run_order[k]] for k in [run_begin[i], run_begin[i + 1]).
  std::vector<std::size_t> run_begin, run_order;

  /// Indices into state_runs of parameter `param`'s runs, in state order.
  std::span<const std::size_t> runs_of(std::size_t param) const {
    if (param + 1 >= run_begin.size()) return {};
    return std::span<const std::size_t>(run_order).subspan(run_begin[param], run_begin[param + 1] - run_begin[param]);
  }
};

/// A user's layout gets a clear error rather than memory corruption.
inline void validate_packing(std::string_view layout, const Packing& packing, std::span<const TensorInfo> infos, int p) {
  const std::string where = "layout " + std::string(layout) + ": pack() ";
  if (packing.part_size < 0) throw Error(where + "returned a negative part size");
  if (p > 0 && packing.part_size > std::numeric_limits<std::int64_t>::max() / p) throw Error(where + "returned a part size that overflows");
  const std::int64_t buffer = packing.part_size * p;
  std::vector<std::int64_t> covered(infos.size(), 0);
  std::vector<std::pair<std::int64_t, std::int64_t>> spans;
  std::vector<std::tuple<std::size_t, std::int64_t, std::int64_t>> sources;  // tensor, src, end
  for (const auto& r : packing.runs) {
    // (Compared as differences, so that no sum overflows.)
    if (r.tensor >= infos.size() || r.length < 0 || r.src < 0 || r.src > infos[r.tensor].numel() ||
        r.length > infos[r.tensor].numel() - r.src || r.dst < 0 || r.dst > buffer || r.length > buffer - r.dst)
      throw Error(where + "returned a run outside its tensor or the packed buffer");
    covered[r.tensor] += r.length;
    spans.emplace_back(r.dst, r.dst + r.length);
    if (r.length > 0) sources.emplace_back(r.tensor, r.src, r.src + r.length);
  }
  std::sort(sources.begin(), sources.end());
  for (std::size_t i = 1; i < sources.size(); ++i)
    if (std::get<0>(sources[i]) == std::get<0>(sources[i - 1]) && std::get<1>(sources[i]) < std::get<2>(sources[i - 1]))
      throw Error(where + "returned two runs of tensor " + std::to_string(std::get<0>(sources[i])) + " that overlap in the tensor");
  for (std::size_t t = 0; t < infos.size(); ++t)
    if (covered[t] != infos[t].numel())
      throw Error(where + "covers " + std::to_string(covered[t]) + " of the " + std::to_string(infos[t].numel()) +
                  " elements of tensor " + std::to_string(t));
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) throw Error(where + "returned overlapping runs");
}

/// @brief The plan of `tensors` (one element type, `num_params` parameters in all) for rank `me`
/// of `p` under `Layout`, whose strategy here is `s` (Strategy::local on one process), with
/// buckets of `bucket_elements`. O(R log R + T) for R runs and T tensors.
template <class Layout>
PlanLayout make_plan(const std::vector<PlanTensor>& tensors, std::size_t num_params, Strategy s, int p, int me,
                     std::int64_t bucket_elements) {
  PlanLayout plan;
  plan.bucket_elements = bucket_elements;
  std::vector<std::size_t> whole;  // parameter index of each packed tensor
  std::vector<TensorInfo> infos;
  for (const auto& t : tensors) {
    if (t.packed && s != Strategy::local) {
      whole.push_back(t.param);
      infos.push_back(TensorInfo{t.shape});
      continue;
    }
    for (std::size_t j = 0; j < t.pieces.size(); ++j)
      if (t.pieces[j] > 0) plan.state_runs.push_back({t.param, false, j, 0, 0, t.pieces[j], 0});
  }
  if (Layout::strategy != Strategy::local && s == Strategy::local) {
    // One process steps in place, but a user's layout still gets its packing checked here rather
    // than first at scale.
    std::vector<TensorInfo> all;
    for (const auto& t : tensors)
      if (t.packed) all.push_back(TensorInfo{t.shape});
    if (!all.empty()) validate_packing(Layout::name, Layout::pack(std::span<const TensorInfo>(all), p), all, p);
  }
  std::vector<BucketRun> bucket_runs;
  if (!whole.empty()) {
    const Packing packing = Layout::pack(std::span<const TensorInfo>(infos), p);
    validate_packing(Layout::name, packing, infos, p);
    plan.part_size = packing.part_size;
    const std::int64_t mine_begin = me * packing.part_size, mine_end = mine_begin + packing.part_size;
    for (const auto& r : packing.runs) {
      // Split at part boundaries so each run lies in one part.
      for (std::int64_t done = 0; done < r.length;) {
        const std::int64_t at = r.dst + done, part_end = (at / packing.part_size + 1) * packing.part_size;
        const std::int64_t len = std::min(r.length - done, part_end - at);
        const bool owned = s == Strategy::all_reduce || (at >= mine_begin && at < mine_end);
        bucket_runs.push_back({whole[r.tensor], r.src + done, at, len, owned ? 0 : -1});
        if (owned) plan.state_runs.push_back({whole[r.tensor], true, 0, r.src + done, at, len, 0});
        done += len;
      }
    }
  }
  // State: owned packed runs in packed order (contiguous for a flat partition), then local runs.
  std::stable_sort(plan.state_runs.begin(), plan.state_runs.end(), [](const StateRun& a, const StateRun& b) {
    return a.packed > b.packed || (a.packed == b.packed && a.packed && a.dst < b.dst);
  });
  for (auto& r : plan.state_runs) {
    r.state_offset = plan.state_size;
    plan.state_size += r.length;
  }
  // The buckets, with the state offsets of the owned runs (found by dst: both sorted by it).
  std::sort(bucket_runs.begin(), bucket_runs.end(), [](const BucketRun& a, const BucketRun& b) { return a.dst < b.dst; });
  std::size_t next = 0;
  for (auto& r : bucket_runs) {
    if (r.state_offset < 0) continue;
    while (plan.state_runs[next].dst != r.dst || !plan.state_runs[next].packed) ++next;
    r.state_offset = plan.state_runs[next].state_offset;
  }
  if (s != Strategy::local) plan.buckets = make_buckets(s, plan.part_size, p, me, bucket_runs, bucket_elements);
  // The per-parameter index of the state runs (a counting sort: runs keep their state order).
  plan.run_begin.assign(num_params + 1, 0);
  for (const auto& r : plan.state_runs) ++plan.run_begin[r.param + 1];
  for (std::size_t i = 0; i < num_params; ++i) plan.run_begin[i + 1] += plan.run_begin[i];
  plan.run_order.resize(plan.state_runs.size());
  std::vector<std::size_t> fill(plan.run_begin.begin(), plan.run_begin.end() - 1);
  for (std::size_t k = 0; k < plan.state_runs.size(); ++k) plan.run_order[fill[plan.state_runs[k].param]++] = k;
  return plan;
}

}  // namespace shardopt::detail
