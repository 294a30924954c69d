// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief layout::FlatPartition: ZeRO-1/2 style partition of one flat buffer.

#include <span>
#include <string_view>

#include <shardopt/concepts.hpp>
#include <shardopt/layout_support.hpp>

namespace shardopt::layout {

/// @brief All whole tensors of one element type seen as one flat buffer, in registration order,
/// cut into P equal contiguous parts (padding only at the end); rank r owns part r.
///
/// One step, bucket by bucket (the same window of every part, at most the optimizer's
/// bucket_bytes() per collective): gradients are reduce-scattered (each rank receives the averaged
/// gradient of its part only), the owned part is stepped with the state only this rank keeps
/// (ceil(N/P) elements per slot), and the updated parameters are all-gathered so every rank holds
/// the same whole tensors.
/// Sharded tensors keep their own sharding and are stepped in their local shards.
/// @tparam R the gradient reduction: Reduction::mean (default, like DDP) or Reduction::sum.
template <Reduction R = Reduction::mean>
struct BasicFlatPartition {
  using layout_category = layout_policy_tag;                   ///< declares this type a layout
  /// shown in messages: FlatPartition, or FlatPartition<sum> for summed gradients
  static constexpr std::string_view name = R == Reduction::mean ? "FlatPartition" : "FlatPartition<sum>";
  static constexpr Strategy strategy = Strategy::partitioned;  ///< reduce-scatter, update part, all-gather
  static constexpr Reduction reduction = R;                    ///< mean or sum
  /// The concatenation, cut into equal parts.
  static Packing pack(std::span<const TensorInfo> tensors, int world_size) { return concatenated(tensors, world_size); }
};

/// @brief FlatPartition with averaged gradients.
using FlatPartition = BasicFlatPartition<>;

}  // namespace shardopt::layout
