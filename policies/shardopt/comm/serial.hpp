// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief comm::Serial: one process, no communication.

#include <algorithm>
#include <span>
#include <string_view>

#include <shardopt/comm_stats.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>

namespace shardopt::comm {

/// @brief The communicator of a single process: every collective is a local copy or nothing.
///
/// The embedded default. Use it as a template for your own communicator: every member below is
/// what ShardedOptimizer requires of a Comm (see shardopt::Communicator).
/// Buffers are spans over memory the communicator can read (host memory for Serial and Mpi).
class Serial {
 public:
  using communicator_category = communicator_tag;  ///< declares this type a communicator
  static constexpr std::string_view name = "Serial";  ///< shown in messages

  /// This process's rank: 0.
  int rank() const noexcept { return 0; }
  /// The number of processes: 1.
  int size() const noexcept { return 1; }

  /// In-place all-reduce of `buffer` (nothing to do on one process).
  template <class T>
  void all_reduce(std::span<T> buffer, ReduceOp op) {
    (void)buffer;
    (void)op;
  }
  /// Reduce-scatter: `recv` gets this rank's part of the reduction of `send` (`send.size() == size() * recv.size()`).
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, ReduceOp op) {
    (void)op;
    if (send.size() != recv.size())
      throw InvalidArgument("comm::Serial::reduce_scatter: send has " + std::to_string(send.size()) +
                            " elements, expected recv.size() = " + std::to_string(recv.size()));
    if (send.data() != recv.data()) std::copy(send.begin(), send.end(), recv.begin());
  }
  /// All-gather: `recv` gets every rank's `send`, in rank order (`recv.size() == size() * send.size()`).
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    if (send.size() != recv.size())
      throw InvalidArgument("comm::Serial::all_gather: recv has " + std::to_string(recv.size()) +
                            " elements, expected send.size() = " + std::to_string(send.size()));
    if (send.data() != recv.data()) std::copy(send.begin(), send.end(), recv.begin());
  }
  /// Broadcast `buffer` from `root` (must be 0).
  template <class T>
  void broadcast(std::span<T> buffer, int root) {
    (void)buffer;
    if (root != 0) throw InvalidArgument("comm::Serial::broadcast: root " + std::to_string(root) + " is not a rank of a 1-process communicator");
  }
  /// Waits for every rank (nothing to wait for).
  void barrier() {}
  /// Bytes and calls so far: always zero.
  const CommStats& stats() const noexcept { return stats_; }

 private:
  CommStats stats_{};
};

}  // namespace shardopt::comm
