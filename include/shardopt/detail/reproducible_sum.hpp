// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Sums whose bits do not depend on how their terms are cut over runs and ranks: the
/// primitive of reductions over whole tensors (norms, means) under every layout and world size.
///
/// A sum has `length` terms at indices 0 .. length - 1 (a tensor's row-major flat index, say).
/// Its value is fixed by one tree: the terms are grouped in blocks of `sum_block` consecutive
/// indices, each block added up in a fixed order (block_sum), and the blocks added pairwise over
/// an aligned binary tree (node (l, k) covers blocks k 2^l .. (k + 1) 2^l - 1 and is node (l - 1, 2k)
/// plus node (l - 1, 2k + 1); blocks past the end are +0). A rank holding the terms of a run of
/// indices computes the nodes that lie wholly inside the run (streaming, one pass, a stack of at
/// most 2 log2(blocks) nodes) and keeps the terms of the blocks it holds only part of; every rank
/// then completes every sum from all ranks' pieces with the same formulas (complete_sums(): one
/// all-gather of the pieces of all sums together). Any cut of the terms into runs, over any number
/// of ranks, gives the same bits; where two ranks give the same piece (copies), the lowest rank's
/// counts. A run that reaches the end of its sum sends its last, partial block as a node (its terms
/// past the end are +0), so a sum held whole sends only tree nodes. The leaves (loose terms and
/// block sums) can be computed where the terms are, a device kernel say (leaf_span, leaf_value),
/// and turned into pieces on the host (SumPieces::add_leaves).

#include <Kokkos_Macros.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include <shardopt/detail/redistribute.hpp>

namespace shardopt::detail {

/// Terms per block of a reproducible sum.
inline constexpr std::int64_t sum_block = 64;

// block_sum and leaf_value run on the host and on devices, with the caller's `term`: nvcc is told
// not to require a device-callable term where they are called from the host.
#if defined(__CUDACC__) && !defined(__clang__)
#define SHARDOPT_HOST_DEVICE_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define SHARDOPT_HOST_DEVICE_TEMPLATE
#endif

/// a + b, never contracted with a product before it into an FMA: GPU compilers contract by default,
/// and a block summed whole must give the bits of its terms summed after a cut, whatever the terms'
/// code (on the host, build with -ffp-contract=off).
KOKKOS_INLINE_FUNCTION double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

/// One block's terms `term(j)`, j = 0 .. sum_block - 1, added up in a fixed order: eight
/// interleaved partial sums (vectorizable), then a fixed tree over the eight.
SHARDOPT_HOST_DEVICE_TEMPLATE
template <class Term>
KOKKOS_INLINE_FUNCTION double block_sum(const Term& term) {
  double acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = term(j);
  for (int r = 1; r < static_cast<int>(sum_block / 8); ++r)
    for (int j = 0; j < 8; ++j) acc[j] = add_rn(acc[j], term(8 * r + j));
  return add_rn(add_rn(add_rn(acc[0], acc[1]), add_rn(acc[2], acc[3])), add_rn(add_rn(acc[4], acc[5]), add_rn(acc[6], acc[7])));
}

/// The block sums of K sums at once: `term(j, t)` writes element j's K terms to t[0, K); out[k] is
/// block_sum of the terms t[k] (the same additions in the same order, one element read once).
SHARDOPT_HOST_DEVICE_TEMPLATE
template <std::size_t K, class Term>
KOKKOS_INLINE_FUNCTION void block_sums(const Term& term, double* out) {
  double acc[8][K], t[K];
  for (int j = 0; j < 8; ++j) {
    term(j, t);
    for (std::size_t k = 0; k < K; ++k) acc[j][k] = t[k];
  }
  for (int r = 1; r < static_cast<int>(sum_block / 8); ++r)
    for (int j = 0; j < 8; ++j) {
      term(8 * r + j, t);
      for (std::size_t k = 0; k < K; ++k) acc[j][k] = add_rn(acc[j][k], t[k]);
    }
  for (std::size_t k = 0; k < K; ++k)
    out[k] = add_rn(add_rn(add_rn(acc[0][k], acc[1][k]), add_rn(acc[2][k], acc[3][k])),
                    add_rn(add_rn(acc[4][k], acc[5][k]), add_rn(acc[6][k], acc[7][k])));
}

/// @brief The leaves of a run [begin, end) of a sum of `length` terms: `head` loose terms, then
/// `blocks` whole blocks from block `first_block`, then `tail` loose terms. A run that reaches the
/// end of its sum takes its last block whole (the terms past the end are +0), so a sum held whole
/// by one rank sends no loose terms.
struct LeafSpan {
  std::int64_t head, blocks, tail, first_block;
  KOKKOS_INLINE_FUNCTION std::int64_t count() const { return head + blocks + tail; }
};
/// The LeafSpan of indices [begin, end) of a sum of `length` terms.
KOKKOS_INLINE_FUNCTION LeafSpan leaf_span(std::int64_t begin, std::int64_t end, std::int64_t length) {
  const std::int64_t first = (begin + sum_block - 1) / sum_block;
  const std::int64_t last = end >= length ? (end + sum_block - 1) / sum_block : end / sum_block;  // whole blocks [first, last)
  if (first >= last) return {end - begin, 0, 0, first};
  return {first * sum_block - begin, last - first, end >= length ? 0 : end - last * sum_block, first};
}
/// Leaf `j` of a run: a loose term `term(i)` or a whole block's block_sum (terms at end and past
/// it are +0), `term(i)` being the term of index i of the sum.
SHARDOPT_HOST_DEVICE_TEMPLATE
template <class Term>
KOKKOS_INLINE_FUNCTION double leaf_value(const LeafSpan& s, std::int64_t begin, std::int64_t end, std::int64_t j, const Term& term) {
  if (j < s.head) return term(begin + j);
  if (j < s.head + s.blocks) {
    const std::int64_t base = (s.first_block + (j - s.head)) * sum_block;
    if (base + sum_block <= end) return block_sum([&](int k) { return static_cast<double>(term(base + k)); });  // vectorizes
    return block_sum([&](int k) { return base + k < end ? static_cast<double>(term(base + k)) : 0.0; });  // the padded last block
  }
  return term((s.first_block + s.blocks) * sum_block + (j - s.head - s.blocks));
}

/// A term of the same value at every index, callable where leaf_value is (a host lambda is not,
/// under nvcc).
struct ConstantTerm {
  double value;
  KOKKOS_INLINE_FUNCTION double operator()(std::int64_t) const { return value; }
};

/// The pieces of sums one rank holds: tree nodes and loose terms, four int64 each
/// (sum, level or -1 for a term, block or term index, the value's bits).
class SumPieces {
 public:
  /// Adds the pieces of sum `sum` over its indices [begin, end), whose terms are `term(i)`; `length`
  /// is the sum's number of terms where known (a run that reaches it sends its last block whole).
  template <class Term>
  void add_run(std::size_t sum, std::int64_t begin, std::int64_t end, const Term& term,
               std::int64_t length = std::numeric_limits<std::int64_t>::max()) {
    if (end <= begin) return;
    const LeafSpan s = leaf_span(begin, end, length);
    std::vector<double> leaves(static_cast<std::size_t>(s.count()));
    for (std::int64_t j = 0; j < s.count(); ++j) leaves[static_cast<std::size_t>(j)] = leaf_value(s, begin, end, j, term);
    add_leaves(sum, begin, end, length, leaves.data());
  }
  /// Adds the pieces of sum `sum` over [begin, end) from its leaves (leaf_value of each leaf of
  /// leaf_span(begin, end, length), computed where the terms are, e.g. on a device).
  void add_leaves(std::size_t sum, std::int64_t begin, std::int64_t end, std::int64_t length, const double* leaves) {
    if (end <= begin) return;
    const LeafSpan s = leaf_span(begin, end, length);
    for (std::int64_t j = 0; j < s.head; ++j) add_term(sum, begin + j, leaves[j]);
    // Blocks left to right; two siblings on top of the stack become their parent.
    struct Node {
      std::int64_t level, index;
      double value;
    };
    std::vector<Node> stack;
    for (std::int64_t k = 0; k < s.blocks; ++k) {
      Node n{0, s.first_block + k, leaves[s.head + k]};
      while (!stack.empty() && stack.back().level == n.level && stack.back().index + 1 == n.index && stack.back().index % 2 == 0) {
        n = Node{n.level + 1, n.index / 2, stack.back().value + n.value};
        stack.pop_back();
      }
      stack.push_back(n);
    }
    for (const auto& n : stack) add(sum, n.level, n.index, n.value);
    const std::int64_t tail_begin = (s.first_block + s.blocks) * sum_block;
    for (std::int64_t j = 0; j < s.tail; ++j) add_term(sum, tail_begin + j, leaves[s.head + s.blocks + j]);
  }
  /// The pieces, four int64 each.
  const std::vector<std::int64_t>& data() const noexcept { return data_; }

 private:
  void add_term(std::size_t sum, std::int64_t i, double v) { add(sum, -1, i, v); }
  void add(std::size_t sum, std::int64_t level, std::int64_t index, double v) {
    data_.insert(data_.end(), {static_cast<std::int64_t>(sum), level, index, std::bit_cast<std::int64_t>(v)});
  }
  std::vector<std::int64_t> data_;
};

inline std::vector<double> complete_sums_from(const std::vector<std::vector<std::int64_t>>& all, std::span<const std::int64_t> lengths);

/// Sum s of `lengths.size()` sums (lengths[s] terms) from the pieces given on every rank, the same
/// bits on every rank whatever the cut (collective: one all-gather of every sum's pieces).
template <class Comm>
std::vector<double> complete_sums(Comm& comm, const SumPieces& mine, std::span<const std::int64_t> lengths) {
  return complete_sums_from(comm.size() > 1 ? all_gather_varying(comm, mine.data()) : std::vector<std::vector<std::int64_t>>{mine.data()},
                            lengths);
}

/// Sum s of `lengths.size()` sums from the pieces of every rank, `all[q]` rank q's (local: no communication).
inline std::vector<double> complete_sums_from(const std::vector<std::vector<std::int64_t>>& all, std::span<const std::int64_t> lengths) {
  struct Pieces {
    std::map<std::pair<std::int64_t, std::int64_t>, double> nodes;  // (level, block): the first rank's
    std::map<std::int64_t, double> terms;                           // index: the first rank's
  };
  std::vector<Pieces> by_sum(lengths.size());
  for (const auto& q : all)
    for (std::size_t at = 0; at + 3 < q.size(); at += 4) {
      auto& p = by_sum.at(static_cast<std::size_t>(q[at]));
      const double v = std::bit_cast<double>(q[at + 3]);
      if (q[at + 1] < 0) p.terms.emplace(q[at + 2], v);
      else p.nodes.emplace(std::pair{q[at + 1], q[at + 2]}, v);
    }
  std::vector<double> out(lengths.size(), 0.0);
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    const auto& p = by_sum[s];
    const std::int64_t blocks = (lengths[s] + sum_block - 1) / sum_block;
    std::int64_t root = 0;
    while ((std::int64_t(1) << root) < blocks) ++root;
    auto value = [&](auto& self, std::int64_t level, std::int64_t k) -> double {
      if ((k << level) >= blocks) return 0.0;
      if (auto it = p.nodes.find({level, k}); it != p.nodes.end()) return it->second;
      if (level == 0) {
        return block_sum([&](int j) {
          auto it = p.terms.find(k * sum_block + j);
          return it == p.terms.end() ? 0.0 : it->second;
        });
      }
      return self(self, level - 1, 2 * k) + self(self, level - 1, 2 * k + 1);
    };
    if (blocks > 0) out[s] = value(value, root, 0);
  }
  return out;
}

}  // namespace shardopt::detail
