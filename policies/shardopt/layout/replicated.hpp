// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief layout::Replicated: each rank steps what it holds, nothing is communicated.

#include <span>
#include <string_view>

#include <shardopt/concepts.hpp>
#include <shardopt/layout_support.hpp>

namespace shardopt::layout {

/// @brief Each rank keeps the optimizer state of everything it holds and steps it with its own
/// gradients: whole tensors entirely, sharded tensors in their local shards. Nothing is
/// communicated (the seed's semantics: torch's ShardedOptimizer around a local optimizer).
///
/// Use it as a template for your own layout: a layout declares its category, name, strategy and
/// reduction, and how whole tensors are packed into one part per rank (unused by `local`).
struct Replicated {
  using layout_category = layout_policy_tag;              ///< declares this type a layout
  static constexpr std::string_view name = "Replicated";  ///< shown in messages
  static constexpr Strategy strategy = Strategy::local;   ///< update locally, communicate nothing
  static constexpr Reduction reduction = Reduction::mean;  ///< unused by the local strategy
  /// Unused by the local strategy: the concatenation.
  static Packing pack(std::span<const TensorInfo> tensors, int world_size) { return concatenated(tensors, world_size); }
};

}  // namespace shardopt::layout
