// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What a layout policy is built from: its strategy, its gradient reduction and the packing
/// of whole tensors into one part per rank. Include this to write your own layout.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <shardopt/detail/shape.hpp>

namespace shardopt {

/// @brief What a step communicates and who updates what.
enum class Strategy {
  local,        ///< each rank updates what it holds with its own gradients; nothing is communicated
  all_reduce,   ///< gradients are reduced across ranks; every rank updates every whole tensor
  partitioned,  ///< gradients are reduce-scattered; rank r updates part r of the packing and keeps
                ///< its state only; the updated parts are all-gathered
};

/// @brief How gradients of the ranks are combined (for all_reduce and partitioned strategies).
enum class Reduction {
  mean,  ///< the average over ranks, like DistributedDataParallel (the default)
  sum,   ///< the sum over ranks
};

/// @brief The shape of one whole (not user-sharded) tensor handed to `Layout::pack`.
struct TensorInfo {
  std::vector<std::int64_t> shape;  ///< its global shape
  /// Number of elements.
  std::int64_t numel() const { return detail::numel(shape); }
};

/// @brief A run of `length` elements of tensor `tensor`, from its row-major flat offset `src`, placed
/// at offset `dst` of the packed buffer.
struct PackRun {
  std::size_t tensor;   ///< index into the tensors handed to pack()
  std::int64_t src;     ///< row-major flat offset in the tensor
  std::int64_t dst;     ///< offset in the packed buffer of `world_size * part_size` elements
  std::int64_t length;  ///< number of elements
};

/// @brief Where every element of every tensor goes in a buffer of `world_size` equal parts; rank r
/// owns part r, `[r * part_size, (r + 1) * part_size)`. Positions no run covers are padding.
struct Packing {
  std::int64_t part_size = 0;  ///< elements per part
  std::vector<PackRun> runs;   ///< every element of every tensor exactly once, no two runs overlapping
};

/// @brief The packing that concatenates the tensors in order and cuts the result into equal parts
/// (padding only at the end); a run may cross a part boundary.
inline Packing concatenated(std::span<const TensorInfo> tensors, int world_size) {
  Packing p;
  std::int64_t offset = 0;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto n = tensors[t].numel();
    if (n > 0) p.runs.push_back({t, 0, offset, n});
    offset += n;
  }
  p.part_size = (offset + world_size - 1) / world_size;
  return p;
}

}  // namespace shardopt
