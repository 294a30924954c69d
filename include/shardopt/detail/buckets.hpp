// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The buckets of a step: how the packed buffer of one element type is cut so that every
/// collective moves at most one bucket (a pure function of the packing, the world size, the rank
/// and the bucket size; see docs/internals.md).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <shardopt/layout_support.hpp>

namespace shardopt::detail {

/// One run of the packing as the buckets see it: elements [src, src + length) of parameter
/// `param`, at `dst` of the packed buffer (P parts of `part_size`, a run inside one part), and
/// its state at `state_offset` of this rank's state buffers, or -1 if this rank keeps none of it.
struct BucketRun {
  std::size_t param;
  std::int64_t src, dst, length, state_offset;
};

/// `length` elements of parameter `param` from its flat offset `src`, at offset `at` of a bucket.
struct BucketCopy {
  std::size_t param;
  std::int64_t src, at, length;
  bool operator==(const BucketCopy&) const = default;
};

/// Elements this rank steps: a BucketCopy whose gradient is at `at` of the reduced bucket, and
/// whose state is at `state_offset`.
struct BucketUpdate {
  std::size_t param;
  std::int64_t src, at, length, state_offset;
  bool operator==(const BucketUpdate&) const = default;
};

/// @brief One bucket of a step.
///
/// Partitioned strategy: the bucket holds the same window [lo, lo + width) of every rank's part,
/// rank q's at q * width of a buffer of P * width elements; the reduce-scatter leaves this rank's
/// window reduced in `width` elements, the update steps it (writing the parameters also into this
/// rank's window of the buffer), the all-gather brings the other ranks' windows back, and `unpack`
/// copies them to the parameters. All-reduce strategy: the bucket is [lo, lo + width) of the
/// packed buffer, reduced in place, and every rank steps all of it.
struct Bucket {
  std::int64_t lo = 0, width = 0;
  std::vector<BucketCopy> pack;        ///< gradients into the bucket buffer
  std::vector<BucketUpdate> update;    ///< what this rank steps (`at` in the reduced window)
  std::vector<BucketCopy> unpack;      ///< other ranks' updated parameters out of the buffer
  bool operator==(const Bucket&) const = default;
};

/// @brief Elements per window of a bucket. Partitioned: `bucket_elements` in all, split over the
/// P parts (at least one element per part, so a bucket smaller than P elements still moves every
/// part). All-reduce: `bucket_elements`, rounded down to a multiple of P where it is at least P (a
/// rank-ordered all-reduce then needs no padded copy).
inline std::int64_t window_of(Strategy s, std::int64_t bucket_elements, int world_size) {
  if (s == Strategy::partitioned) return std::max<std::int64_t>(1, bucket_elements / world_size);
  const std::int64_t w = std::max<std::int64_t>(1, world_size);
  return bucket_elements >= w ? bucket_elements - bucket_elements % w : std::max<std::int64_t>(1, bucket_elements);
}

/// @brief The buckets of a packing for rank `rank` of `world_size` under strategy `s` (all_reduce
/// or partitioned), each moving at most max(`bucket_elements`, P) elements. `runs` are sorted by
/// `dst`, each inside one part. Windows that hold no element of any tensor are left out (the same
/// on every rank: the packing is). O(runs + buckets).
inline std::vector<Bucket> make_buckets(Strategy s, std::int64_t part_size, int world_size, int rank,
                                        const std::vector<BucketRun>& runs, std::int64_t bucket_elements) {
  std::vector<Bucket> out;
  if (runs.empty() || part_size <= 0) return out;
  const std::int64_t c = window_of(s, bucket_elements, world_size);
  const bool parted = s == Strategy::partitioned;
  // The span the windows cut: one part (the same window of every part), or the used buffer.
  std::int64_t span = part_size;
  if (!parted) {
    span = 0;
    for (const auto& r : runs) span = std::max(span, r.dst + r.length);
  }
  const std::int64_t count = (span + c - 1) / c;
  std::vector<Bucket> all(static_cast<std::size_t>(count));
  for (std::int64_t b = 0; b < count; ++b) {
    all[b].lo = b * c;
    all[b].width = std::min(c, span - b * c);
  }
  for (const auto& r : runs) {
    if (r.length <= 0) continue;
    const std::int64_t q = parted ? r.dst / part_size : 0;
    const std::int64_t o = parted ? r.dst - q * part_size : r.dst;  // offset within the span
    for (std::int64_t b = o / c; b * c < o + r.length; ++b) {
      Bucket& bk = all[b];
      const std::int64_t a = std::max(o, bk.lo), e = std::min(o + r.length, bk.lo + bk.width);
      const std::int64_t src = r.src + (a - o), len = e - a;
      const std::int64_t at = parted ? q * bk.width + (a - bk.lo) : a - bk.lo;
      bk.pack.push_back({r.param, src, at, len});
      const bool mine = !parted || q == rank;
      if (mine && r.state_offset >= 0) bk.update.push_back({r.param, src, a - bk.lo, len, r.state_offset + (a - o)});
      if (parted && q != rank) bk.unpack.push_back({r.param, src, at, len});
    }
  }
  for (auto& b : all)
    if (!b.pack.empty()) out.push_back(std::move(b));
  return out;
}

}  // namespace shardopt::detail
