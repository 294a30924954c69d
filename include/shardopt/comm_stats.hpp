// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What a communicator counts.

#include <cstddef>
#include <cstdint>

namespace shardopt {

/// @brief Bytes and calls a communicator has moved, for checking communication volume.
///
/// `bytes_sent` is the number of bytes this rank sends under the bandwidth-optimal algorithm of
/// each collective (ring or pipelined tree), whatever the library does internally:
/// all-reduce of n bytes: 2 (P-1) n / P; reduce-scatter receiving n bytes: (P-1) n;
/// all-gather sending n bytes: (P-1) n; broadcast of n bytes: n. With P = 1 nothing is sent.
struct CommStats {
  std::uint64_t bytes_sent = 0;   ///< modelled bytes sent by this rank, all collectives together
  std::uint64_t collectives = 0;  ///< collective calls that communicated (P > 1)
};

namespace detail {
inline std::uint64_t all_reduce_bytes(std::size_t bytes, int p) { return p > 1 ? 2ull * (p - 1) * bytes / p : 0; }
inline std::uint64_t reduce_scatter_bytes(std::size_t recv_bytes, int p) { return p > 1 ? 1ull * (p - 1) * recv_bytes : 0; }
inline std::uint64_t all_gather_bytes(std::size_t send_bytes, int p) { return p > 1 ? 1ull * (p - 1) * send_bytes : 0; }
inline std::uint64_t broadcast_bytes(std::size_t bytes, int p) { return p > 1 ? bytes : 0; }
}  // namespace detail

}  // namespace shardopt
