// A communicator policy over MPI: every collective shardopt calls, with floating-point sums taken
// in rank order, ((x0 + x1) + x2) + ..., so that results do not depend on how MPI reduces.
#pragma once
#include <shardopt/comm_stats.hpp>  // CommStats
#include <shardopt/concepts.hpp>    // communicator_tag, ReduceOp
#include <shardopt/error.hpp>       // InvalidArgument, CommError

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

class OrderedMpi {
 public:
  using communicator_category = shardopt::communicator_tag;
  static constexpr std::string_view name = "OrderedMpi";

  // Talks over a duplicate of `comm`, so its messages never match yours; copies share it.
  explicit OrderedMpi(MPI_Comm comm) : s_(std::make_shared<State>()) {
    check(MPI_Comm_dup(comm, &s_->comm), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(s_->comm, MPI_ERRORS_RETURN);  // errors become CommError, not an abort
    MPI_Comm_rank(s_->comm, &s_->rank);
    MPI_Comm_size(s_->comm, &s_->size);
  }
  int rank() const { return s_->rank; }
  int size() const { return s_->size; }

  template <class T>
  void all_reduce(std::span<T> buffer, shardopt::ReduceOp op) {
    reduce_in_rank_order(buffer, op);
    count(2 * (size() - 1) * buffer.size_bytes() / size());
  }
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, shardopt::ReduceOp op) {
    if (send.size() != recv.size() * size())
      throw shardopt::InvalidArgument("OrderedMpi::reduce_scatter: send has " + std::to_string(send.size()) +
                                      " elements, expected size() * recv.size() = " + std::to_string(recv.size() * size()));
    std::vector<T> all(send.begin(), send.end());
    reduce_in_rank_order(std::span<T>(all), op);
    std::copy_n(all.begin() + static_cast<std::ptrdiff_t>(rank() * recv.size()), recv.size(), recv.begin());
    count((size() - 1) * recv.size_bytes());
  }
  // recv gets every rank's send, in rank order; send may be this rank's own part of recv.
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    if (recv.size() != send.size() * size())
      throw shardopt::InvalidArgument("OrderedMpi::all_gather: recv has " + std::to_string(recv.size()) +
                                      " elements, expected size() * send.size() = " + std::to_string(send.size() * size()));
    const bool in_place = send.data() == recv.data() + rank() * send.size();
    const int n = static_cast<int>(send.size());
    check(MPI_Allgather(in_place ? MPI_IN_PLACE : send.data(), n, type<T>(), recv.data(), n, type<T>(), s_->comm),
          "MPI_Allgather");
    count((size() - 1) * send.size_bytes());
  }
  template <class T>
  void broadcast(std::span<T> buffer, int root) {
    if (root < 0 || root >= size())
      throw shardopt::InvalidArgument("OrderedMpi::broadcast: root " + std::to_string(root) + " is not a rank");
    check(MPI_Bcast(buffer.data(), static_cast<int>(buffer.size()), type<T>(), root, s_->comm), "MPI_Bcast");
    count(size() > 1 ? buffer.size_bytes() : 0);
  }
  void barrier() { check(MPI_Barrier(s_->comm), "MPI_Barrier"); }
  // What this rank sent, counted as shardopt::CommStats says (a bandwidth-optimal algorithm's bytes).
  const shardopt::CommStats& stats() const { return s_->stats; }

 private:
  struct State {
    MPI_Comm comm = MPI_COMM_NULL;
    int rank = 0, size = 1;
    shardopt::CommStats stats;
    ~State() {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
    }
  };
  template <class T>
  static MPI_Datatype type() {
    if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
    else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
    else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
    else static_assert(sizeof(T) == 0, "OrderedMpi: shardopt sends float, double, char and std::int64_t only");
  }
  // Gathers every rank's buffer, then combines element by element from rank 0 to rank P-1.
  template <class T>
  void reduce_in_rank_order(std::span<T> buffer, shardopt::ReduceOp op) {
    const std::size_t n = buffer.size(), p = static_cast<std::size_t>(size());
    std::vector<T> all(n * p);
    check(MPI_Allgather(buffer.data(), static_cast<int>(n), type<T>(), all.data(), static_cast<int>(n), type<T>(), s_->comm),
          "MPI_Allgather");
    for (std::size_t i = 0; i < n; ++i) {
      T acc = all[i];
      for (std::size_t q = 1; q < p; ++q) {
        const T x = all[q * n + i];
        acc = op == shardopt::ReduceOp::sum ? acc + x : op == shardopt::ReduceOp::min ? (x < acc ? x : acc) : (x > acc ? x : acc);
      }
      buffer[i] = acc;
    }
  }
  static void check(int rc, const char* call) {
    if (rc != MPI_SUCCESS) throw shardopt::CommError(std::string("OrderedMpi: ") + call + " failed");
  }
  void count(std::size_t bytes) {
    s_->stats.bytes_sent += bytes;
    s_->stats.collectives += 1;
  }
  std::shared_ptr<State> s_;
};
