// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief comm::Nccl: collectives on GPU buffers through NCCL, ordered on a CUDA stream.
///
/// Only available when built with NCCL (`SHARDOPT_ENABLE_NCCL`, which defines
/// `SHARDOPT_HAS_NCCL=1`); include it explicitly, it is not part of `shardopt.hpp`.

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <shardopt/config.hpp>
#if SHARDOPT_HAS_MPI
#include <shardopt/detail/mpi_header.hpp>
#endif

#include <shardopt/comm_stats.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/detail/ordered_reduce.hpp>
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
#if defined(__CUDACC__)
// out[i] = parts[0][i] op parts[1][i] op ... in rank order (detail::combine_in_rank_order on the device).
template <class T>
__global__ void combine_in_rank_order(const T* parts, T* out, std::size_t n, std::size_t p, ReduceOp op) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    T acc = parts[i];
    for (std::size_t q = 1; q < p; ++q) {
      const T v = parts[q * n + i];
      acc = op == ReduceOp::sum ? acc + v : op == ReduceOp::min ? (v < acc ? v : acc) : (v > acc ? v : acc);
    }
    out[i] = acc;
  }
}
#endif
}  // namespace detail_nccl

/// @brief A communicator over NCCL: collectives on device buffers, enqueued on a CUDA stream.
///
/// Give it the stream of the optimizer's execution space instance (`Kokkos::Cuda::cuda_stream()`)
/// so that collectives and the step's kernels are ordered without host synchronization. Buffers in
/// host memory (the optimizer's small agreement messages) are staged through a device buffer and
/// synchronized, since their result is needed on the host.
///
/// Floating-point reductions are rank-ordered by default (Order::rank), as comm::Mpi's: each element
/// is combined in rank order, ((x_0 + x_1) + x_2) + ..., so results are the bits of one process
/// whatever the world size. This is an all-to-all of grouped ncclSend/ncclRecv, a combine kernel on
/// the stream and an ncclAllGather: a ring all-reduce's volume, plus scratch device memory of the
/// buffer's size. The kernel needs the including file compiled as CUDA (nvcc, as Kokkos' CUDA backend
/// requires anyway); otherwise the parts are combined on the host, with a stream synchronization.
/// Order::native uses NCCL's own reductions instead: faster, deterministic from run to run for a
/// fixed world size and topology, but not the same bits at every world size. Integer reductions
/// are exact and always NCCL's.
///
/// Errors: every NCCL and CUDA error becomes a CommError naming the call and NCCL's error string.
/// Before each collective, an asynchronous error (ncclCommGetAsyncError) aborts the communicator
/// and throws, instead of leaving the ranks hanging.
class Nccl {
 public:
  using communicator_category = communicator_tag;        ///< declares this type a communicator
  static constexpr std::string_view name = "Nccl";       ///< shown in messages
  static constexpr bool stream_ordered = true;           ///< collectives are ordered on stream()

  /// How floating-point reductions combine the ranks' values.
  enum class Order {
    rank,    ///< in rank order, the same bits at every world size (default)
    native,  ///< NCCL's own reduction algorithms
  };

  /// Uses `comm` (not owned: the caller destroys it) with collectives enqueued on `stream`.
  explicit Nccl(ncclComm_t comm, cudaStream_t stream = nullptr, Order order = Order::rank) : state_(std::make_shared<State>()) {
    state_->comm = comm;
    state_->stream = stream;
    state_->order = order;
    detail_nccl::check(ncclCommCount(comm, &state_->size), "ncclCommCount");
    detail_nccl::check(ncclCommUserRank(comm, &state_->rank), "ncclCommUserRank");
  }

#if SHARDOPT_HAS_MPI
  /// @brief Creates (and owns) a NCCL communicator over the ranks of `mpi` (collective over `mpi`):
  /// rank 0 creates the unique id and broadcasts it over MPI. Each rank must have selected its
  /// CUDA device before.
  static Nccl from_mpi(MPI_Comm mpi, cudaStream_t stream = nullptr, Order order = Order::rank) {
    int rank = 0, size = 1;
    MPI_Comm_rank(mpi, &rank);
    MPI_Comm_size(mpi, &size);
    ncclUniqueId id{};
    if (rank == 0) detail_nccl::check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi) != MPI_SUCCESS) throw CommError("comm::Nccl::from_mpi: MPI_Bcast of the unique id failed");
    ncclComm_t comm = nullptr;
    detail_nccl::check(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank");
    Nccl n(comm, stream, order);
    n.state_->owned = true;
    return n;
  }
#endif

  int rank() const noexcept { return state_->rank; }  ///< this rank
  int size() const noexcept { return state_->size; }  ///< number of ranks
  ncclComm_t native() const noexcept { return state_->comm; }     ///< the NCCL communicator
  cudaStream_t stream() const noexcept { return state_->stream; }  ///< the stream collectives use
  Order order() const noexcept { return state_->order; }           ///< how floating-point reductions combine

  /// In-place all-reduce of `buffer` (in rank order for floating point, see Order).
  template <class T>
  void all_reduce(std::span<T> buffer, ReduceOp op) {
    if (size() == 1 || buffer.empty()) return;
    run(buffer.data(), buffer.size(), buffer.data(), buffer.size(), [&](const T*, T* r) {
      if (rank_ordered<T>()) {
        Ordered o{*this};
        detail::ordered_all_reduce(o, r, buffer.size(), op);
        return ncclSuccess;
      }
      return ncclAllReduce(r, r, buffer.size(), detail_nccl::datatype<T>(), detail_nccl::op(op), state_->comm, state_->stream);
    });
    count(detail::all_reduce_bytes(buffer.size_bytes(), size()));
  }
  /// Reduce-scatter: `recv` gets this rank's part (`send.size() == size() * recv.size()`), in rank
  /// order for floating point (see Order).
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
    run(send.data(), send.size(), recv.data(), recv.size(), [&](const T* s, T* r) {
      if (rank_ordered<T>()) {
        Ordered o{*this};
        detail::ordered_reduce_scatter(o, s, r, recv.size(), op);
        return ncclSuccess;
      }
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
  struct DeviceScratch {
    void* data = nullptr;
    std::size_t bytes = 0;
    DeviceScratch() = default;
    DeviceScratch(const DeviceScratch&) = delete;
    DeviceScratch& operator=(const DeviceScratch&) = delete;
    ~DeviceScratch() {
      if (data) (void)cudaFree(data);
    }
    void* get(std::size_t n) {
      if (bytes < n) {
        if (data) detail_nccl::check(cudaFree(data), "cudaFree");
        data = nullptr;
        bytes = 0;
        detail_nccl::check(cudaMalloc(&data, n), "cudaMalloc");
        bytes = n;
      }
      return data;
    }
  };
  struct State {
    ncclComm_t comm = nullptr;
    cudaStream_t stream = nullptr;
    int rank = 0, size = 1;
    bool owned = false;
    Order order = Order::rank;
    CommStats stats;
    DeviceScratch staging, parts, padded;   // device memory kept between calls
    std::vector<unsigned char> host_parts;  // the host combine's copy (file not compiled as CUDA)
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    ~State() {
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
  void* staging(std::size_t bytes) { return state_->staging.get(bytes); }
  template <class T>
  bool rank_ordered() const {
    return std::is_floating_point_v<T> && state_->order == Order::rank;
  }
  // The transport of detail::ordered_all_reduce / ordered_reduce_scatter: device memory, an
  // all-to-all of grouped ncclSend/ncclRecv, the combine kernel, ncclAllGather; all on stream().
  struct Ordered {
    Nccl& c;
    std::size_t size() const { return static_cast<std::size_t>(c.size()); }
    std::size_t rank() const { return static_cast<std::size_t>(c.rank()); }
    template <class T>
    T* scratch_parts(std::size_t n) { return static_cast<T*>(c.state_->parts.get(n * sizeof(T))); }
    template <class T>
    T* scratch_padded(std::size_t n) { return static_cast<T*>(c.state_->padded.get(n * sizeof(T))); }
    template <class T>
    void all_to_all(const T* send, T* parts, std::size_t n) {
      const auto dt = detail_nccl::datatype<T>();
      detail_nccl::check(ncclGroupStart(), "ncclGroupStart");
      ncclResult_t r = ncclSuccess;
      for (int q = 0; q < c.size() && (r == ncclSuccess || r == ncclInProgress); ++q) {
        r = ncclSend(send + q * n, n, dt, q, c.state_->comm, c.state_->stream);
        if (r == ncclSuccess || r == ncclInProgress) r = ncclRecv(parts + q * n, n, dt, q, c.state_->comm, c.state_->stream);
      }
      const ncclResult_t end = ncclGroupEnd();
      detail_nccl::check(r, "ncclSend/ncclRecv");
      detail_nccl::check(end, "ncclGroupEnd");
    }
    template <class T>
    void combine(const T* parts, T* out, std::size_t n, ReduceOp op) {
#if defined(__CUDACC__)
      const std::size_t blocks = std::min<std::size_t>((n + 255) / 256, 65535);
      detail_nccl::combine_in_rank_order<T><<<static_cast<unsigned>(blocks), 256, 0, c.state_->stream>>>(parts, out, n, size(), op);
      detail_nccl::check(cudaGetLastError(), "the rank-order combine kernel");
#else
      auto& host = c.state_->host_parts;
      host.resize(size() * n * sizeof(T));
      T* h = reinterpret_cast<T*>(host.data());
      c.copy(h, parts, size() * n * sizeof(T));
      detail_nccl::check(cudaStreamSynchronize(c.state_->stream), "cudaStreamSynchronize");
      detail::combine_in_rank_order(h, h, n, size(), op);
      c.copy(out, h, n * sizeof(T));
      detail_nccl::check(cudaStreamSynchronize(c.state_->stream), "cudaStreamSynchronize");
#endif
    }
    template <class T>
    void all_gather_in_place(T* buffer, std::size_t n) {
      detail_nccl::check(ncclAllGather(buffer + rank() * n, buffer, n, detail_nccl::datatype<T>(), c.state_->comm, c.state_->stream),
                         "ncclAllGather");
    }
    template <class T>
    void copy(T* dst, const T* src, std::size_t n) { c.copy(dst, src, n * sizeof(T)); }
    template <class T>
    void zero(T* dst, std::size_t n) {
      detail_nccl::check(cudaMemsetAsync(dst, 0, n * sizeof(T), c.state_->stream), "cudaMemsetAsync");
    }
  };
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
