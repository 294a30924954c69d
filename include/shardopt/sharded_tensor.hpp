// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::ShardedTensor: a tensor split by the user into shards placed on ranks.

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <shardopt/detail/shape.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/error.hpp>

namespace shardopt {

/// @brief Where one shard sits in the global tensor and which rank holds it
/// (like torch.distributed._shard.metadata.ShardMetadata).
struct ShardMetadata {
  std::vector<std::int64_t> offsets;  ///< index of the shard's first element in each dimension
  std::vector<std::int64_t> sizes;    ///< extent of the shard in each dimension
  int rank = 0;                       ///< the rank that holds it (its placement)

  /// Number of elements of the shard.
  std::int64_t numel() const { return detail::numel(sizes); }
  /// Equal offsets, sizes and rank.
  friend bool operator==(const ShardMetadata&, const ShardMetadata&) = default;
};

namespace detail {
inline std::string describe(const ShardMetadata& m) {
  return "offsets " + fmt_shape(m.offsets) + ", sizes " + fmt_shape(m.sizes) + ", rank " + std::to_string(m.rank);
}

inline bool boxes_overlap(const ShardMetadata& a, const ShardMetadata& b) {
  for (std::size_t d = 0; d < a.offsets.size(); ++d)
    if (a.offsets[d] + a.sizes[d] <= b.offsets[d] || b.offsets[d] + b.sizes[d] <= a.offsets[d]) return false;
  return true;
}

// Throws InvalidArgument unless `shards` tile `shape` exactly (in bounds, disjoint, covering) on
// ranks [0, world_size).
inline void validate_tiling(const std::vector<std::int64_t>& shape, const std::vector<ShardMetadata>& shards,
                            int world_size) {
  const std::string where = "ShardedTensor of shape " + fmt_shape(shape) + ": ";
  std::int64_t total = 1;
  for (auto s : shape) {
    if (s < 0) throw InvalidArgument(where + "negative size in the global shape");
    total *= s;
  }
  if (shape.empty()) throw InvalidArgument(where + "a sharded tensor needs at least one dimension");
  std::int64_t covered = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const auto& m = shards[i];
    const std::string which = where + "shard " + std::to_string(i) + " (" + describe(m) + ") ";
    if (m.offsets.size() != shape.size() || m.sizes.size() != shape.size())
      throw InvalidArgument(which + "has " + std::to_string(m.offsets.size()) + " offsets and " +
                            std::to_string(m.sizes.size()) + " sizes; the tensor has " + std::to_string(shape.size()) +
                            " dimensions");
    if (m.rank < 0 || m.rank >= world_size)
      throw InvalidArgument(which + "is placed on rank " + std::to_string(m.rank) + ", not a rank of a communicator of size " +
                            std::to_string(world_size));
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (m.offsets[d] < 0 || m.sizes[d] < 0 || m.offsets[d] + m.sizes[d] > shape[d])
        throw InvalidArgument(which + "lies outside the tensor in dimension " + std::to_string(d));
    if (m.numel() == 0) continue;
    for (std::size_t j = 0; j < i; ++j)
      if (shards[j].numel() > 0 && boxes_overlap(m, shards[j]))
        throw InvalidArgument(which + "overlaps shard " + std::to_string(j) + " (" + describe(shards[j]) + ")");
    covered += m.numel();
  }
  if (covered != total)
    throw InvalidArgument(where + "the shards cover " + std::to_string(covered) + " of its " + std::to_string(total) +
                          " elements; they must tile the tensor");
}
}  // namespace detail

/// @brief A tensor split into shards, each held by one rank: this rank sees its local shards.
///
/// Each local shard has a `value` and a `grad`, flat views of the shard's elements in row-major
/// order within the shard, and its metadata. Every rank knows the metadata of all shards.
/// @tparam T the element type, `float` or `double`.
/// @tparam MemorySpace where the local shards live.
template <class T, class MemorySpace = Kokkos::DefaultExecutionSpace::memory_space>
class ShardedTensor {
 public:
  using value_type = T;                                ///< element type
  using memory_space = MemorySpace;                    ///< where shards live
  using view_type = Kokkos::View<T*, MemorySpace>;     ///< a flat shard buffer

  /// @brief One local shard: its values, its gradient and where it sits.
  struct Shard {
    view_type value;         ///< the shard's elements, row-major within the shard
    view_type grad;          ///< its gradient, same layout
    ShardMetadata metadata;  ///< offsets, sizes and rank
  };

  /// @brief Splits `shape` along `dim` into `comm.size()` chunks of `ceil(shape[dim] / P)`
  /// (the last ones smaller or empty), chunk r on rank r, like torch's `ChunkShardingSpec(dim)`.
  /// Values and gradients start at zero.
  template <class Comm>
  static ShardedTensor chunk(const Comm& comm, std::vector<std::int64_t> shape, int dim) {
    if (dim < 0 || dim >= static_cast<int>(shape.size()))
      throw InvalidArgument("ShardedTensor::chunk: dim " + std::to_string(dim) + " is not a dimension of shape " +
                            detail::fmt_shape(shape));
    const int p = comm.size();
    const std::int64_t n = shape[dim] < 0 ? 0 : shape[dim], split = (n + p - 1) / p;
    std::vector<ShardMetadata> shards;
    for (int r = 0; r < p; ++r) {
      ShardMetadata m{std::vector<std::int64_t>(shape.size(), 0), shape, r};
      m.offsets[dim] = std::min<std::int64_t>(split * r, n);
      m.sizes[dim] = std::max<std::int64_t>(std::min(n, split * (r + 1)) - split * r, 0);
      shards.push_back(std::move(m));
    }
    return enumerable(comm, std::move(shape), std::move(shards));
  }

  /// @brief Shards given explicitly, like torch's `EnumerableShardingSpec`: `shards` lists every
  /// shard of the tensor (the same list on every rank); this rank allocates those placed on it.
  /// @throws InvalidArgument if the shards do not tile `shape` exactly or name a rank out of range.
  template <class Comm>
  static ShardedTensor enumerable(const Comm& comm, std::vector<std::int64_t> shape, std::vector<ShardMetadata> shards) {
    detail::validate_tiling(shape, shards, comm.size());
    ShardedTensor t;
    t.shape_ = std::move(shape);
    t.metadata_ = std::move(shards);
    for (const auto& m : t.metadata_)
      if (m.rank == comm.rank())
        t.local_.push_back(Shard{view_type("shard.value", m.numel()), view_type("shard.grad", m.numel()), m});
    return t;
  }

  /// The global shape.
  const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  /// The metadata of every shard, on every rank.
  const std::vector<ShardMetadata>& shards_metadata() const noexcept { return metadata_; }
  /// The shards held by this rank.
  std::vector<Shard>& local_shards() noexcept { return local_; }
  /// The shards held by this rank.
  const std::vector<Shard>& local_shards() const noexcept { return local_; }

 private:
  ShardedTensor() = default;
  std::vector<std::int64_t> shape_;
  std::vector<ShardMetadata> metadata_;
  std::vector<Shard> local_;
};

}  // namespace shardopt
