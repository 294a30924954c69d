// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief layout::DataParallel: Replicated's data-parallel variant (DDP + a local optimizer).

#include <span>
#include <string_view>

#include <shardopt/concepts.hpp>
#include <shardopt/layout_support.hpp>

namespace shardopt::layout {

/// @brief Every rank holds every whole tensor and its full optimizer state; gradients are averaged
/// (or summed) across ranks with all-reduces of at most the optimizer's bucket_bytes() each, then every rank steps
/// everything. The baseline that FlatPartition is measured against. Sharded tensors are stepped
/// in their local shards with their own gradients.
/// @tparam R the gradient reduction: Reduction::mean (default, like DDP) or Reduction::sum.
template <Reduction R = Reduction::mean>
struct BasicDataParallel {
  using layout_category = layout_policy_tag;                  ///< declares this type a layout
  /// shown in messages: DataParallel, or DataParallel<sum> for summed gradients
  static constexpr std::string_view name = R == Reduction::mean ? "DataParallel" : "DataParallel<sum>";
  static constexpr Strategy strategy = Strategy::all_reduce;  ///< reduce gradients, update everything
  static constexpr Reduction reduction = R;                   ///< mean or sum
  /// The gradients of all tensors travel as one concatenated buffer.
  static Packing pack(std::span<const TensorInfo> tensors, int world_size) { return concatenated(tensors, world_size); }
};

/// @brief Data parallelism with averaged gradients.
using DataParallel = BasicDataParallel<>;

}  // namespace shardopt::layout
