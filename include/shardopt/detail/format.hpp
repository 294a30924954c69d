// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// Small string helpers for error messages.

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shardopt::detail {

// Shortest representation that reads back to the same double: 0.001, -1, nan, inf.
inline std::string fmt(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

inline std::string fmt_shape(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace shardopt::detail
