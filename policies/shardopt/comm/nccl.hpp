#pragma once
/// @file
/// @brief comm::Nccl: collectives on GPU buffers through NCCL, ordered on a CUDA stream.
///
/// Only available when built with NCCL (`SHARDOPT_ENABLE_NCCL`, which defines
/// `SHARDOPT_HAS_NCCL=1`); include it explicitly, it is not part of `shardopt.hpp`.

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#if SHARDOPT_HAS_MPI
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#endif

#include <shardopt/comm_stats.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>

namespace shardopt::comm {

namespace detail_nccl {
inline void check(ncclResult_t r, const char* call) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw CommError(std::string("comm::Nccl: ") + call + " failed: " + ncclGetErrorString(r));
}
inline void check(cudaError_t r, const char* call) {
  if (r != cudaSuccess) throw CommError(std::string("comm::Nccl: ") + call + " failed: " + cudaGetErrorString(r));
}
template <class T>
ncclDataType_t datatype() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<U, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<U, char> || (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 1)) return ncclInt8;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 1) return ncclUint8;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 4) return ncclInt32;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 4) return ncclUint32;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 8) return ncclInt64;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 8) return ncclUint64;
  else static_assert(sizeof(U) == 0, "comm::Nccl: unsupported element type");
}
inline ncclRedOp_t op(ReduceOp o) {
  switch (o) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::min: return ncclMin;
    case ReduceOp::max: return ncclMax;
  }
  return ncclSum;
}
// Whether `p` is memory NCCL can use directly (device or managed); host memory is staged.
inline bool on_device(const void* p) {
  if (p == nullptr) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error of an unregistered host pointer
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
}  // namespace detail_nccl

/// @brief A communicator over NCCL: collectives on device buffers, enqueued on a CUDA stream.
///
/// Give it the stream of the optimizer's execution space instance (`Kokkos::Cuda::cuda_stream()`)
/// so that collectives and the step's kernels are ordered without host synchronization. Buffers in
/// host memory (the optimizer's small agreement messages) are staged through a device buffer and
/// synchronized, since their result is needed on the host.
///
/// Reductions are NCCL's: deterministic from run to run for a fixed world size and topology, but,
/// unlike comm::Mpi, not independent of the world size (not bitwise equal to one process).
///
/// Errors: every NCCL and CUDA error becomes a CommError naming the call and NCCL's error string.
/// Before each collective, an asynchronous error (ncclCommGetAsyncError) aborts the communicator
/// and throws, instead of leaving the ranks hanging.
class Nccl {
 public:
  using communicator_category = communicator_tag;        ///< declares this type a communicator
  static constexpr std::string_view name = "Nccl";       ///< shown in messages
  static constexpr bool stream_ordered = true;           ///< collectives are ordered on stream()

  /// Uses `comm` (not owned: the caller destroys it) with collectives enqueued on `stream`.
  explicit Nccl(ncclComm_t comm, cudaStream_t stream = nullptr) : state_(std::make_shared<State>()) {
    state_->comm = comm;
    state_->stream = stream;
    detail_nccl::check(ncclCommCount(comm, &state_->size), "ncclCommCount");
    detail_nccl::check(ncclCommUserRank(comm, &state_->rank), "ncclCommUserRank");
  }

#if SHARDOPT_HAS_MPI
  /// @brief Creates (and owns) a NCCL communicator over the ranks of `mpi` (collective over `mpi`):
  /// rank 0 creates the unique id and broadcasts it over MPI. Each rank must have selected its
  /// CUDA device before.
  static Nccl from_mpi(MPI_Comm mpi, cudaStream_t stream = nullptr) {
    int rank = 0, size = 1;
    MPI_Comm_rank(mpi, &rank);
    MPI_Comm_size(mpi, &size);
    ncclUniqueId id{};
    if (rank == 0) detail_nccl::check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi) != MPI_SUCCESS) throw CommError("comm::Nccl::from_mpi: MPI_Bcast of the unique id failed");
    ncclComm_t comm = nullptr;
    detail_nccl::check(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank");
    Nccl n(comm, stream);
    n.state_->owned = true;
    return n;
  }
#endif

  int rank() const noexcept { return state_->rank; }  ///< this rank
  int size() const noexcept { return state_->size; }  ///< number of ranks
  ncclComm_t native() const noexcept { return state_->comm; }     ///< the NCCL communicator
  cudaStream_t stream() const noexcept { return state_->stream; }  ///< the stream collectives use

  /// In-place all-reduce of `buffer`.
  template <class T>
  void all_reduce(std::span<T> buffer, ReduceOp op) {
    if (size() == 1 || buffer.empty()) return;
    run(buffer.data(), buffer.size(), buffer.data(), buffer.size(), [&](const void* s, void* r) {
      return ncclAllReduce(s, r, buffer.size(), detail_nccl::datatype<T>(), detail_nccl::op(op), state_->comm, state_->stream);
    });
    count(detail::all_reduce_bytes(buffer.size_bytes(), size()));
  }
  /// Reduce-scatter: `recv` gets this rank's part (`send.size() == size() * recv.size()`).
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, ReduceOp op) {
    if (send.size() != recv.size() * static_cast<std::size_t>(size()))
      throw InvalidArgument("comm::Nccl::reduce_scatter: send has " + std::to_string(send.size()) +
                            " elements, expected size() * recv.size() = " + std::to_string(recv.size() * size()));
    if (recv.empty()) return;
    if (size() == 1) {
      if (send.data() != recv.data()) copy(recv.data(), send.data(), recv.size_bytes());
      return;
    }
    run(send.data(), send.size(), recv.data(), recv.size(), [&](const void* s, void* r) {
      return ncclReduceScatter(s, r, recv.size(), detail_nccl::datatype<T>(), detail_nccl::op(op), state_->comm, state_->stream);
    });
    count(detail::reduce_scatter_bytes(recv.size_bytes(), size()));
  }
  /// All-gather: `recv` gets every rank's `send` in rank order; `send` may be this rank's part of `recv`.
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    if (recv.size() != send.size() * static_cast<std::size_t>(size()))
      throw InvalidArgument("comm::Nccl::all_gather: recv has " + std::to_string(recv.size()) +
                            " elements, expected size() * send.size() = " + std::to_string(send.size() * size()));
    if (send.empty()) return;
    if (size() == 1) {
      if (send.data() != recv.data()) copy(recv.data(), send.data(), send.size_bytes());
      return;
    }
    run(send.data(), send.size(), recv.data(), recv.size(), [&](const void* s, void* r) {
      return ncclAllGather(s, r, send.size(), detail_nccl::datatype<T>(), state_->comm, state_->stream);
    });
    count(detail::all_gather_bytes(send.size_bytes(), size()));
  }
  /// Broadcast of `buffer` from `root`.
  template <class T>
  void broadcast(std::span<T> buffer, int root) {
    if (root < 0 || root >= size())
      throw InvalidArgument("comm::Nccl::broadcast: root " + std::to_string(root) + " is not a rank (size " + std::to_string(size()) + ")");
    if (size() == 1 || buffer.empty()) return;
    run(buffer.data(), buffer.size(), buffer.data(), buffer.size(), [&](const void* s, void* r) {
      return ncclBroadcast(s, r, buffer.size(), detail_nccl::datatype<T>(), root, state_->comm, state_->stream);
    });
    count(detail::broadcast_bytes(buffer.size_bytes(), size()));
  }
  /// Waits for every rank (and for this stream).
  void barrier() {
    if (size() == 1) return;
    int token = 0;
    all_reduce(std::span<int>(&token, 1), ReduceOp::sum);  // host memory: staged and synchronized
  }
  /// Bytes and calls so far (shared by copies).
  const CommStats& stats() const noexcept { return state_->stats; }

 private:
  struct State {
    ncclComm_t comm = nullptr;
    cudaStream_t stream = nullptr;
    int rank = 0, size = 1;
    bool owned = false;
    CommStats stats;
    void* staging = nullptr;
    std::size_t staging_bytes = 0;
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    ~State() {
      if (staging) (void)cudaFree(staging);
      if (owned && comm) (void)ncclCommDestroy(comm);
    }
  };

  // Runs one collective on device memory. Host buffers (send, recv) are staged through a device
  // buffer and the stream synchronized; device buffers are used in place, without synchronization.
  template <class T, class F>
  void run(const T* send, std::size_t send_n, T* recv, std::size_t recv_n, F&& collective) {
    check_async();
    const bool host = !detail_nccl::on_device(send) || !detail_nccl::on_device(recv);
    if (!host) {
      detail_nccl::check(collective(send, recv), "collective");
      return;
    }
    const std::size_t sb = send_n * sizeof(T), rb = recv_n * sizeof(T);
    char* stage = static_cast<char*>(staging(sb + rb));
    const bool in_place = static_cast<const void*>(send) == static_cast<const void*>(recv);
    detail_nccl::check(cudaMemcpyAsync(stage, send, sb, cudaMemcpyDefault, state_->stream), "cudaMemcpyAsync");
    T* dsend = reinterpret_cast<T*>(stage);
    T* drecv = in_place ? dsend : reinterpret_cast<T*>(stage + sb);
    detail_nccl::check(collective(dsend, drecv), "collective");
    detail_nccl::check(cudaMemcpyAsync(recv, drecv, rb, cudaMemcpyDefault, state_->stream), "cudaMemcpyAsync");
    detail_nccl::check(cudaStreamSynchronize(state_->stream), "cudaStreamSynchronize");
    check_async();
  }
  void* staging(std::size_t bytes) {
    if (state_->staging_bytes < bytes) {
      if (state_->staging) detail_nccl::check(cudaFree(state_->staging), "cudaFree");
      state_->staging = nullptr;
      state_->staging_bytes = 0;
      detail_nccl::check(cudaMalloc(&state_->staging, bytes), "cudaMalloc");
      state_->staging_bytes = bytes;
    }
    return state_->staging;
  }
  void copy(void* dst, const void* src, std::size_t bytes) {
    detail_nccl::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, state_->stream), "cudaMemcpyAsync");
  }
  // An asynchronous NCCL error (a peer died, a network failure) aborts the communicator.
  void check_async() {
    if (state_->comm == nullptr) throw CommError("comm::Nccl: the communicator was aborted after an asynchronous error");
    ncclResult_t async = ncclSuccess;
    detail_nccl::check(ncclCommGetAsyncError(state_->comm, &async), "ncclCommGetAsyncError");
    if (async != ncclSuccess && async != ncclInProgress) {
      (void)ncclCommAbort(state_->comm);
      state_->comm = nullptr;
      state_->owned = false;
      throw CommError(std::string("comm::Nccl: asynchronous NCCL error, communicator aborted: ") + ncclGetErrorString(async));
    }
  }
  void count(std::uint64_t bytes) {
    state_->stats.bytes_sent += bytes;
    state_->stats.collectives += 1;
  }
  std::shared_ptr<State> state_;
};

}  // namespace shardopt::comm
