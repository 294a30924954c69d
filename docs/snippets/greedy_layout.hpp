// A layout policy: whole tensors handed out to the ranks, the largest first, each to the rank that
// holds the fewest elements so far, as torch.distributed.optim.ZeroRedundancyOptimizer partitions
// its parameters. Rank r keeps the optimizer state of its tensors only.
#pragma once
#include <shardopt/concepts.hpp>        // layout_policy_tag
#include <shardopt/layout_support.hpp>  // Strategy, Reduction, TensorInfo, Packing

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

struct Greedy {
  using layout_category = shardopt::layout_policy_tag;
  static constexpr std::string_view name = "Greedy";
  // Gradients are reduce-scattered over the packing, each rank steps its part, the updated
  // parameters are all-gathered; gradients are averaged over the ranks.
  static constexpr shardopt::Strategy strategy = shardopt::Strategy::partitioned;
  static constexpr shardopt::Reduction reduction = shardopt::Reduction::mean;

  // Where every element of every whole tensor goes in a buffer of world_size equal parts; rank r
  // owns part r. Here part r holds rank r's tensors one after the other, padded to the largest part.
  static shardopt::Packing pack(std::span<const shardopt::TensorInfo> tensors, int world_size) {
    std::vector<std::size_t> order(tensors.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return tensors[a].numel() > tensors[b].numel(); });
    std::vector<std::int64_t> load(static_cast<std::size_t>(world_size), 0);
    std::vector<std::size_t> owner(tensors.size());
    for (std::size_t t : order) {
      owner[t] = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
      load[owner[t]] += tensors[t].numel();
    }
    shardopt::Packing p;
    p.part_size = *std::max_element(load.begin(), load.end());
    std::fill(load.begin(), load.end(), 0);
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      const std::int64_t n = tensors[t].numel(), r = static_cast<std::int64_t>(owner[t]);
      if (n > 0) p.runs.push_back({t, /*src=*/0, /*dst=*/r * p.part_size + load[owner[t]], /*length=*/n});
      load[owner[t]] += n;
    }
    return p;
  }
};
