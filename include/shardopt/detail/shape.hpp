// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The element count of a row-major shape, computed in one place.

#include <cstdint>
#include <vector>

namespace shardopt::detail {

/// Elements of a row-major tensor of shape `shape` (1 for a scalar's empty shape).
inline std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

}  // namespace shardopt::detail
