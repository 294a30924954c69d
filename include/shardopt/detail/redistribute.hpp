// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Moving elements between ranks a window at a time: when adding parameters moves the
/// partition, each rank's state goes to its new owners through windows of a bounded size, so that
/// no rank ever holds a whole tensor it does not own (see docs/internals.md).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace shardopt::detail {

/// Every rank's `mine` (collective; sizes may differ), in rank order.
template <class V, class Comm>
std::vector<std::vector<V>> all_gather_varying(Comm& comm, const std::vector<V>& mine) {
  const int p = comm.size();
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(p));
  const std::int64_t n = static_cast<std::int64_t>(mine.size());
  comm.all_gather(std::span<const std::int64_t>(&n, 1), std::span<std::int64_t>(sizes));
  const std::size_t width = static_cast<std::size_t>(*std::max_element(sizes.begin(), sizes.end()));
  std::vector<V> padded(mine);
  padded.resize(width);
  std::vector<V> all(width * static_cast<std::size_t>(p));
  comm.all_gather(std::span<const V>(padded), std::span<V>(all));
  std::vector<std::vector<V>> out(static_cast<std::size_t>(p));
  for (int q = 0; q < p; ++q) out[q].assign(all.begin() + q * width, all.begin() + q * width + sizes[q]);
  return out;
}

/// Elements [at, at + length) of a logical buffer that one rank holds or needs; `id` is the
/// caller's (where they are or go).
struct Span {
  std::int64_t at, length;
  std::size_t id;
};

/// @brief Every rank gets the elements it `need`s of a logical buffer of `total` elements from the
/// ranks that `have` them (where several have one, the lowest rank's), in windows of `window`
/// elements (collective: every rank passes the same `total` and `window`). A rank holds one
/// window's contributions at a time: at most P * window elements.
///
/// `read(id, offset, out, n)` copies n held elements from offset `offset` of span `id` to the host
/// buffer `out`; `write(id, offset, in, filled, n)` stores n elements there, where filled[j] is 0
/// for an element no rank has (in[j] is then T{}). Within a rank, spans that overlap count in the
/// order of their `at` (then as passed). Returns the number of needed elements no rank has.
template <class T, class Comm, class Read, class Write>
std::int64_t redistribute(Comm& comm, std::int64_t total, std::int64_t window, std::vector<Span> have, std::vector<Span> need,
                          Read&& read, Write&& write) {
  auto by_at = [](const Span& a, const Span& b) { return a.at < b.at; };
  std::stable_sort(have.begin(), have.end(), by_at);
  std::stable_sort(need.begin(), need.end(), by_at);
  window = std::max<std::int64_t>(1, window);
  std::int64_t missing = 0;
  std::size_t h0 = 0, n0 = 0;  // first spans that may reach into the window
  std::vector<std::int64_t> heads;
  std::vector<T> values, buffer;
  std::vector<char> filled;
  for (std::int64_t a = 0; a < total; a += window) {
    const std::int64_t e = std::min(total, a + window);
    heads.clear();
    values.clear();
    while (h0 < have.size() && have[h0].at + have[h0].length <= a) ++h0;
    for (std::size_t h = h0; h < have.size() && have[h].at < e; ++h) {
      const std::int64_t b = std::max(a, have[h].at), f = std::min(e, have[h].at + have[h].length);
      if (f <= b) continue;
      heads.insert(heads.end(), {b, f - b});
      const std::size_t at = values.size();
      values.resize(at + static_cast<std::size_t>(f - b));
      read(have[h].id, b - have[h].at, values.data() + at, static_cast<std::size_t>(f - b));
    }
    const auto all_heads = all_gather_varying(comm, heads);
    const auto all_values = all_gather_varying(comm, values);
    buffer.assign(static_cast<std::size_t>(e - a), T{});
    filled.assign(buffer.size(), 0);
    for (std::size_t q = 0; q < all_heads.size(); ++q) {
      std::size_t at = 0;
      for (std::size_t h = 0; h + 1 < all_heads[q].size(); h += 2)
        for (std::int64_t j = 0; j < all_heads[q][h + 1]; ++j, ++at) {
          const auto g = static_cast<std::size_t>(all_heads[q][h] + j - a);
          if (!filled[g]) buffer[g] = all_values[q][at], filled[g] = 1;
        }
    }
    while (n0 < need.size() && need[n0].at + need[n0].length <= a) ++n0;
    for (std::size_t n = n0; n < need.size() && need[n].at < e; ++n) {
      const std::int64_t b = std::max(a, need[n].at), f = std::min(e, need[n].at + need[n].length);
      if (f <= b) continue;
      missing += std::count(filled.begin() + (b - a), filled.begin() + (f - a), 0);
      write(need[n].id, b - need[n].at, buffer.data() + (b - a), filled.data() + (b - a), static_cast<std::size_t>(f - b));
    }
  }
  return missing;
}

}  // namespace shardopt::detail
