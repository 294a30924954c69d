// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What the optimizer knows of a registered parameter (Param, Piece), the memory check that
/// keeps registered tensors apart (MemoryMap), and where a state run's elements sit in the global
/// tensor (global_segments). Registration itself is ShardedOptimizer::add_param
/// (detail/optimizer/registration.hpp).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <shardopt/detail/consensus.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/detail/lanes.hpp>
#include <shardopt/detail/plan.hpp>
#include <shardopt/detail/shape.hpp>
#include <shardopt/error.hpp>
#include <shardopt/sharded_tensor.hpp>

namespace shardopt::detail {

/// What this rank holds of a parameter: the whole tensor, or one local shard.
struct Piece {
  void* value;
  void* grad;
  std::size_t numel;
  ShardMetadata meta;  ///< where the piece sits in the global tensor
};

/// One registered parameter; `NumSlots` state slots.
template <std::size_t NumSlots>
struct Param {
  std::string name;
  std::size_t group = 0;
  Dtype dtype{};
  std::vector<std::int64_t> shape;    ///< global shape
  std::vector<ShardMetadata> shards;  ///< all shards of a sharded tensor; empty for a whole tensor
  std::vector<Piece> pieces;          ///< what this rank holds
  std::shared_ptr<const void> keepalive;  ///< the user's views
  std::int64_t step = 0;
  bool grad_present = true;
  std::array<bool, NumSlots> initialized{};  ///< the same on every rank
  std::vector<double> scalar_state;          ///< the algorithm's per-tensor scalar state, the same on every rank; empty while step == 0
  std::int64_t numel() const { return detail::numel(shape); }
  /// The line the ranks agree on (registration part of the agreement).
  std::string describe() const {
    std::string d = "param " + name + " " + dtype_name(dtype) + " " + fmt_shape(shape) + " group " + std::to_string(group);
    if (!shards.empty()) {
      std::string s;
      for (const auto& m : shards) s += detail::describe(m) + ";";
      d += " sharded(" + std::to_string(shards.size()) + " shards, digest " + std::to_string(fnv1a(s)) + ")";
    }
    return d;
  }
};

/// The byte range [begin, end) of a parameter's or gradient's piece, keyed by begin in MemoryMap.
struct Extent {
  std::uintptr_t end;
  std::size_t param;  ///< the parameter's index
  bool grad;          ///< the gradient's memory, not the parameter's
};
using MemoryRange = std::pair<std::uintptr_t, Extent>;

/// The byte ranges of the elements of parameter `p` (index `index`) and its gradient on this rank,
/// sorted by begin.
template <std::size_t S>
std::vector<MemoryRange> memory_ranges(const Param<S>& p, std::size_t index) {
  const std::size_t item = dtype_size(p.dtype);
  std::vector<MemoryRange> out;
  for (const auto& pc : p.pieces) {
    if (pc.numel == 0) continue;
    for (const bool g : {false, true}) {
      const auto b = reinterpret_cast<std::uintptr_t>(g ? pc.grad : pc.value);
      out.push_back({b, Extent{b + pc.numel * item, index, g}});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  return out;
}

/// @brief Every registered range, keyed by begin. No two registered ranges may overlap: tied weights
/// (one view under two names, or a subview of another parameter) would be stepped twice and split
/// the ranks, and a gradient that is (part of) a parameter would be overwritten by the step.
class MemoryMap {
 public:
  /// Throws InvalidArgument (prefixed by `where`) if `ranges` (sorted) overlap each other or a
  /// registered range; `name_of(i)` names parameter i. O(log n) per range.
  template <class NameOf>
  void check(const std::vector<MemoryRange>& ranges, const std::string& where, NameOf&& name_of) const {
    auto what = [&](const Extent& e) {
      const std::string name = name_of(e.param);
      return std::string(e.grad ? "the gradient" : "the parameter") +
             (!name.empty() ? " of " + quote(name) : std::string(e.grad ? "" : " itself"));
    };
    auto fail = [&](const Extent& mine, const Extent& other) {
      const bool tied = !mine.grad && !other.grad;
      throw InvalidArgument(where + "the memory of " + (mine.grad ? "its gradient" : "the parameter") + " overlaps " + what(other) +
                            (tied ? ": tied (shared) weights are registered once, under one name, with one gradient that holds "
                                    "the sum of the gradients of every use (as autograd accumulates them)"
                                  : ": every parameter and every gradient must be memory of its own"));
    };
    for (std::size_t j = 1; j < ranges.size(); ++j)
      if (ranges[j].first < ranges[j - 1].second.end) fail(ranges[j].second, ranges[j - 1].second);
    for (const auto& [begin, e] : ranges) {
      auto it = map_.upper_bound(begin);
      if (it != map_.begin() && std::prev(it)->second.end > begin) fail(e, std::prev(it)->second);
      if (it != map_.end() && it->first < e.end) fail(e, it->second);
    }
  }
  /// Adds `ranges` (checked), all or none.
  void insert(const std::vector<MemoryRange>& ranges) {
    try {
      for (const auto& r : ranges) map_.insert(r);
    } catch (...) {
      for (const auto& r : ranges) map_.erase(r.first);
      throw;
    }
  }

 private:
  std::map<std::uintptr_t, Extent> map_;
};

/// Whether a view's elements lie in memory in row-major order (dimensions of extent 1 aside).
template <class View>
bool row_major(const View& v) {
  std::size_t strides[9] = {};  // stride(s) fills rank + 1 entries (Kokkos 3.4 to 5)
  v.stride(strides);
  std::size_t expect = 1;
  for (int d = static_cast<int>(View::rank) - 1; d >= 0; --d) {
    if (v.extent(d) > 1 && strides[d] != expect) return false;
    expect *= v.extent(d);
  }
  return true;
}

/// Where the elements of state run `r` of parameter `prm` sit in the global tensor: (global offset,
/// offset within the run, length) triples, in the run's order.
template <std::size_t S>
std::vector<std::array<std::int64_t, 3>> global_segments(const Param<S>& prm, const StateRun& r) {
  if (r.packed) return {{r.src, 0, r.length}};
  if (prm.shards.empty()) return {{0, 0, r.length}};
  std::vector<std::array<std::int64_t, 3>> out;  // a shard: one segment per row of its box
  const auto& m = prm.pieces[r.piece].meta;
  const std::int64_t row = m.sizes.back();
  for (std::int64_t at = 0; row > 0 && at < r.length; at += row) {
    std::int64_t g = 0, rem = at;
    std::vector<std::int64_t> idx(m.sizes.size());
    for (int d = static_cast<int>(m.sizes.size()) - 1; d >= 0; --d) {
      idx[d] = m.offsets[d] + rem % m.sizes[d];
      rem /= m.sizes[d];
    }
    for (std::size_t d = 0; d < idx.size(); ++d) g = g * prm.shape[d] + idx[d];
    out.push_back({g, at, row});
  }
  return out;
}

}  // namespace shardopt::detail
