// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The rank-ordered reductions of comm::Mpi and comm::Nccl, written once over a transport.
///
/// Every element is combined in rank order, ((x_0 op x_1) op x_2) op ..., so a sum gives the bits
/// of one process adding the ranks' contributions in order, whatever the world size and whatever
/// the library's own algorithms. The volume is a ring all-reduce's: an all-to-all (each rank
/// receives its part of every rank's buffer), a local combine of the P parts, an all-gather.

#include <algorithm>
#include <cstddef>

#include <shardopt/concepts.hpp>

namespace shardopt::detail {

/// out[i] = parts[0][i] op parts[1][i] op ... op parts[p-1][i], in that order; parts[q] starts at
/// parts + q * n. `out` may be any of the parts.
template <class T>
void combine_in_rank_order(const T* parts, T* out, std::size_t n, std::size_t p, ReduceOp op) {
  if (out != parts) std::copy(parts, parts + n, out);
  for (std::size_t q = 1; q < p; ++q) {
    const T* part = parts + q * n;
    switch (op) {
      case ReduceOp::sum:
        for (std::size_t i = 0; i < n; ++i) out[i] = out[i] + part[i];
        break;
      case ReduceOp::min:
        for (std::size_t i = 0; i < n; ++i) out[i] = part[i] < out[i] ? part[i] : out[i];
        break;
      case ReduceOp::max:
        for (std::size_t i = 0; i < n; ++i) out[i] = part[i] > out[i] ? part[i] : out[i];
        break;
    }
  }
}

/// @brief recv = this rank's part (n elements) of the reduction of every rank's `send`
/// (p * n elements), combined in rank order. `recv` may lie inside `send`.
///
/// The transport X provides, on its own memory (host for MPI, device for NCCL):
/// - `T* scratch_parts(std::size_t count)`: memory for count elements, kept between calls;
/// - `void all_to_all(const T* send, T* parts, std::size_t n)`: parts[q * n + i] = rank q's
///   send[rank * n + i];
/// - `void combine(const T* parts, T* out, std::size_t n, ReduceOp op)`: combine_in_rank_order.
template <class T, class X>
void ordered_reduce_scatter(X& x, const T* send, T* recv, std::size_t n, ReduceOp op) {
  T* parts = x.template scratch_parts<T>(x.size() * n);
  x.all_to_all(send, parts, n);
  x.combine(parts, recv, n, op);
}

/// @brief In-place all-reduce of `buffer` (n elements) in rank order: ordered_reduce_scatter into
/// this rank's part, then an in-place all-gather. A size that P does not divide is padded with
/// zeros in scratch memory. Besides the above, X provides:
/// - `T* scratch_padded(std::size_t count)`, kept between calls and distinct from the parts;
/// - `void copy(T* dst, const T* src, std::size_t n)` and `void zero(T* dst, std::size_t n)`;
/// - `void all_gather_in_place(T* buffer, std::size_t n)`: rank q's n elements at buffer + q * n
///   go to every rank.
template <class T, class X>
void ordered_all_reduce(X& x, T* buffer, std::size_t n, ReduceOp op) {
  const std::size_t p = x.size(), part = (n + p - 1) / p, rank = x.rank();
  T* work = buffer;
  if (part * p != n) {
    work = x.template scratch_padded<T>(p * part);
    x.copy(work, buffer, n);
    x.zero(work + n, p * part - n);
  }
  ordered_reduce_scatter(x, work, work + rank * part, part, op);
  x.all_gather_in_place(work, part);
  if (work != buffer) x.copy(buffer, work, n);
}

}  // namespace shardopt::detail
