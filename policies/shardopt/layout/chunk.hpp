// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief layout::Chunk<Dim>: each tensor cut along one dimension, like torch's ChunkShardingSpec.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>

#include <shardopt/concepts.hpp>
#include <shardopt/layout_support.hpp>

namespace shardopt::layout {

/// @brief Each whole tensor is cut along dimension `Dim` into P chunks of ceil(n / P) slices (the
/// last chunks smaller or empty), as torch's ChunkShardingSpec(dim=Dim) does; rank r owns chunk r
/// of every tensor and keeps only its state. A tensor with no dimension `Dim` is cut along its
/// last dimension.
///
/// One step, bucket by bucket (at most the optimizer's bucket_bytes() per collective): the chunks
/// travel in a reduce-scatter, each rank steps its chunks, and an all-gather brings every rank the
/// updated tensors.
/// @tparam Dim the dimension to cut.
/// @tparam R the gradient reduction: Reduction::mean (default) or Reduction::sum.
template <int Dim, Reduction R = Reduction::mean>
struct Chunk {
  static_assert(Dim >= 0, "layout::Chunk<Dim>: Dim must be a dimension index (0 or more).");
  using layout_category = layout_policy_tag;                   ///< declares this type a layout
  /// shown in messages: ChunkRows, ChunkCols, or Chunk<2> and so on; with `<sum>` for summed gradients
  static constexpr std::string_view name =
      R == Reduction::mean
          ? (Dim == 0 ? "ChunkRows" : Dim == 1 ? "ChunkCols" : Dim == 2 ? "Chunk<2>" : Dim == 3 ? "Chunk<3>" : "Chunk")
          : (Dim == 0 ? "ChunkRows<sum>" : Dim == 1 ? "ChunkCols<sum>" : Dim == 2 ? "Chunk<2, sum>" : Dim == 3 ? "Chunk<3, sum>" : "Chunk<sum>");
  static constexpr Strategy strategy = Strategy::partitioned;  ///< reduce-scatter, update chunks, all-gather
  static constexpr Reduction reduction = R;                    ///< mean or sum
  static constexpr int dim = Dim;                              ///< the dimension cut

  /// Part r holds chunk r of every tensor, one after the other, each padded to the largest chunk.
  static Packing pack(std::span<const TensorInfo> tensors, int world_size) {
    Packing p;
    std::int64_t base = 0;  // offset of tensor t's chunk within every part
    std::vector<std::int64_t> bases;
    for (const auto& t : tensors) {
      const auto [outer, n, inner] = split(t);
      bases.push_back(base);
      base += outer * ((n + world_size - 1) / world_size) * inner;
    }
    p.part_size = base;
    for (std::size_t ti = 0; ti < tensors.size(); ++ti) {
      const auto [outer, n, inner] = split(tensors[ti]);
      const std::int64_t c = (n + world_size - 1) / world_size;
      for (int r = 0; r < world_size; ++r) {
        const std::int64_t first = std::min(n, c * r), rows = std::min(n, c * (r + 1)) - first;
        if (rows <= 0 || inner == 0) continue;
        for (std::int64_t o = 0; o < outer; ++o)
          p.runs.push_back({ti, (o * n + first) * inner, r * p.part_size + bases[ti] + o * rows * inner, rows * inner});
      }
    }
    return p;
  }

 private:
  struct Split {
    std::int64_t outer, n, inner;
  };
  static Split split(const TensorInfo& t) {
    const int d = std::min<int>(Dim, static_cast<int>(t.shape.size()) - 1);
    Split s{1, t.shape.empty() ? 1 : t.shape[d], 1};
    for (int i = 0; i < d; ++i) s.outer *= t.shape[i];
    for (int i = d + 1; i < static_cast<int>(t.shape.size()); ++i) s.inner *= t.shape[i];
    return s;
  }
};

/// @brief Chunks of rows (ChunkShardingSpec dim 0).
using ChunkRows = Chunk<0>;
/// @brief Chunks of columns (ChunkShardingSpec dim 1).
using ChunkCols = Chunk<1>;

}  // namespace shardopt::layout
