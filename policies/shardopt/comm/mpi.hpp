// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief comm::Mpi: collectives over an MPI communicator.

#include <shardopt/detail/mpi_header.hpp>  // <mpi.h>, without the MPI-2 C++ bindings

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <shardopt/comm_stats.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/detail/ordered_reduce.hpp>
#include <shardopt/error.hpp>

namespace shardopt::comm {

namespace detail_mpi {
template <class T>
MPI_Datatype datatype() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<U, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<U, char>) return MPI_CHAR;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 4) return MPI_INT32_T;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 8) return MPI_INT64_T;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 1) return MPI_UINT8_T;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 4) return MPI_UINT32_T;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 8) return MPI_UINT64_T;
  else static_assert(sizeof(U) == 0, "comm::Mpi: unsupported element type");
}

inline MPI_Op op(ReduceOp o) {
  switch (o) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
  }
  return MPI_SUM;
}

inline void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw CommError(std::string("comm::Mpi: ") + call + " failed: " + std::string(msg, len));
}

inline int to_int(std::size_t n, const char* call) {
  if (n > static_cast<std::size_t>(INT32_MAX))
    throw InvalidArgument(std::string("comm::Mpi::") + call + ": " + std::to_string(n) +
                          " elements exceed MPI's int count; split the buffer");
  return static_cast<int>(n);
}
}  // namespace detail_mpi

/// @brief Collectives over an MPI communicator.
///
/// The constructor duplicates the given communicator (collective over it), so shardopt's traffic
/// never matches a user's messages; copies of a comm::Mpi share the duplicate and its byte counts.
/// MPI errors become shardopt::CommError. Buffers must be memory MPI can read: host memory, or
/// device memory with a CUDA-aware MPI. On one process nothing calls MPI.
///
/// Each collective can also be started and completed later (start_all_reduce,
/// start_reduce_scatter, start_all_gather return a Request; Request::wait completes it, with the
/// same result as the blocking call): ShardedOptimizer then keeps two buckets of a step in flight.
class Mpi {
 public:
  using communicator_category = communicator_tag;  ///< declares this type a communicator
  static constexpr std::string_view name = "Mpi";  ///< shown in messages
  /// Reductions run on the host: buffers must be in host-accessible memory (use comm::Nccl on GPUs).
  static constexpr bool host_memory_only = true;

  /// Duplicates `comm` (a collective call on `comm`). MPI must be initialized.
  explicit Mpi(MPI_Comm comm) : state_(std::make_shared<State>()) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw InvalidArgument("comm::Mpi: MPI is not initialized (create a shardopt::ScopeGuard first)");
    detail_mpi::check(MPI_Comm_dup(comm, &state_->comm), "MPI_Comm_dup");
    detail_mpi::check(MPI_Comm_dup(comm, &state_->arrivals), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(state_->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(state_->arrivals, MPI_ERRORS_RETURN);
    MPI_Comm_rank(state_->comm, &state_->rank);
    MPI_Comm_size(state_->comm, &state_->size);
  }

  /// This process's rank in the communicator.
  int rank() const noexcept { return state_->rank; }
  /// The number of processes in the communicator.
  int size() const noexcept { return state_->size; }
  /// The duplicated communicator shardopt uses.
  MPI_Comm native() const noexcept { return state_->comm; }

  /// @brief In-place all-reduce of `buffer`.
  ///
  /// For float and double the result is deterministic and the same on every rank: each element is
  /// combined in rank order, ((x_0 + x_1) + x_2) + ..., whatever the world size (a reduce-scatter
  /// through MPI_Alltoall and an ordered local sum, then MPI_Allgather: the volume of a ring
  /// all-reduce). Integer buffers use MPI_Allreduce.
  template <class T>
  void all_reduce(std::span<T> buffer, ReduceOp op) {
    if (size() == 1) return;
    if constexpr (std::is_floating_point_v<T>) {
      Ordered o{*this};
      detail::ordered_all_reduce(o, buffer.data(), buffer.size(), op);
    } else {
      detail_mpi::check(MPI_Allreduce(MPI_IN_PLACE, buffer.data(), detail_mpi::to_int(buffer.size(), "all_reduce"),
                                      detail_mpi::datatype<T>(), detail_mpi::op(op), native()),
                        "MPI_Allreduce");
    }
    count(detail::all_reduce_bytes(buffer.size_bytes(), size()));
  }
  /// @brief Reduce-scatter: `recv` gets this rank's part of the reduction of `send`
  /// (`send.size() == size() * recv.size()`), combined in rank order as all_reduce does.
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, ReduceOp op) {
    if (done_locally("reduce_scatter", send, recv, true)) return;
    Ordered o{*this};
    detail::ordered_reduce_scatter(o, send.data(), recv.data(), recv.size(), op);
    count(detail::reduce_scatter_bytes(recv.size_bytes(), size()));
  }
  /// All-gather: `recv` gets every rank's `send`, in rank order (`recv.size() == size() * send.size()`).
  /// `send` may be this rank's own part of `recv` (in place).
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    if (done_locally("all_gather", send, recv, false)) return;
    const bool in_place = send.data() == recv.data() + send.size() * rank();
    const int n = detail_mpi::to_int(send.size(), "all_gather");
    detail_mpi::check(MPI_Allgather(in_place ? MPI_IN_PLACE : send.data(), n, detail_mpi::datatype<T>(), recv.data(), n,
                                    detail_mpi::datatype<T>(), native()),
                      "MPI_Allgather");
    count(detail::all_gather_bytes(send.size_bytes(), size()));
  }
  /// @brief A collective started by start_all_reduce(), start_reduce_scatter() or
  /// start_all_gather(), in flight until wait() (the destructor waits too, ignoring errors).
  /// The buffers passed to the start must stay untouched until then.
  class Request {
   public:
    Request() = default;
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    /// Takes the collective over from `o`.
    Request(Request&& o) noexcept : finish_(std::move(o.finish_)) { o.finish_ = nullptr; }
    /// Waits for the collective this one holds, then takes `o`'s over.
    Request& operator=(Request&& o) noexcept {
      if (this != &o) {
        wait_quietly();
        finish_ = std::move(o.finish_);
        o.finish_ = nullptr;
      }
      return *this;
    }
    ~Request() { wait_quietly(); }
    /// Completes the collective (for a reduction, combines the ranks' parts in rank order).
    void wait() {
      if (!finish_) return;
      auto f = std::move(finish_);
      finish_ = nullptr;
      f();
    }
    /// Whether the collective has not been waited for yet.
    bool pending() const noexcept { return static_cast<bool>(finish_); }

   private:
    friend class Mpi;
    void wait_quietly() noexcept {
      try {
        wait();
      } catch (...) {
      }
    }
    std::function<void()> finish_;
  };

  /// @brief all_reduce(), started: the same result once wait() returns. Floating-point buffers
  /// start their all-to-all here (MPI_Ialltoall) and combine and all-gather in wait().
  template <class T>
  Request start_all_reduce(std::span<T> buffer, ReduceOp op) {
    Request r;
    if (size() == 1 || buffer.empty()) return r;
    const std::size_t p = static_cast<std::size_t>(size()), part = (buffer.size() + p - 1) / p;
    if constexpr (std::is_floating_point_v<T>) {
      // The parts, and a padded copy of the buffer where P does not divide its size.
      const bool pad = part * p != buffer.size();
      auto padded = take_scratch((part * p + (pad ? part * p : 0)) * sizeof(T));
      T* parts = reinterpret_cast<T*>(padded->data());
      T* work = pad ? parts + part * p : buffer.data();
      if (pad) {
        std::copy(buffer.begin(), buffer.end(), work);
        std::fill(work + buffer.size(), work + part * p, T(0));
      }
      auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
      std::function<void()> finish = [st = state_, req, padded, work, parts, part, p, buffer, op]() {
        auto back = [&] { st->pool.push_back(padded); };
        try {
          detail_mpi::check(MPI_Wait(req.get(), MPI_STATUS_IGNORE), "MPI_Wait (all_reduce)");
          detail::combine_in_rank_order(parts, work + static_cast<std::size_t>(st->rank) * part, part, p, op);
          detail_mpi::check(MPI_Allgather(MPI_IN_PLACE, detail_mpi::to_int(part, "all_reduce"), detail_mpi::datatype<T>(), work,
                                          detail_mpi::to_int(part, "all_reduce"), detail_mpi::datatype<T>(), st->comm),
                            "MPI_Allgather");
          if (work != buffer.data()) std::copy(work, work + buffer.size(), buffer.begin());
        } catch (...) {
          back();
          throw;
        }
        back();
      };  // made before the collective starts: nothing can throw between its start and r owning it
      *req = start_all_to_all(work, parts, part);
      count(detail::all_reduce_bytes(buffer.size_bytes(), size()));
      r.finish_ = std::move(finish);
    } else {
      auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
      std::function<void()> finish = [req] { detail_mpi::check(MPI_Wait(req.get(), MPI_STATUS_IGNORE), "MPI_Wait (all_reduce)"); };
      detail_mpi::check(MPI_Iallreduce(MPI_IN_PLACE, buffer.data(), detail_mpi::to_int(buffer.size(), "all_reduce"),
                                       detail_mpi::datatype<T>(), detail_mpi::op(op), native(), req.get()),
                        "MPI_Iallreduce");
      count(detail::all_reduce_bytes(buffer.size_bytes(), size()));
      r.finish_ = std::move(finish);
    }
    return r;
  }
  /// @brief reduce_scatter(), started (MPI_Ialltoall); wait() combines in rank order into `recv`.
  template <class T>
  Request start_reduce_scatter(std::span<const T> send, std::span<T> recv, ReduceOp op) {
    Request r;
    if (done_locally("start_reduce_scatter", send, recv, true) || recv.empty()) return r;
    const std::size_t p = static_cast<std::size_t>(size());
    auto scratch = take_scratch(send.size() * sizeof(T));
    T* parts = reinterpret_cast<T*>(scratch->data());
    auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
    std::function<void()> finish = [st = state_, req, scratch, parts, recv, p, op]() {
      const int rc = MPI_Wait(req.get(), MPI_STATUS_IGNORE);
      if (rc == MPI_SUCCESS) detail::combine_in_rank_order(parts, recv.data(), recv.size(), p, op);
      st->pool.push_back(scratch);
      detail_mpi::check(rc, "MPI_Wait (reduce_scatter)");
    };
    *req = start_all_to_all(send.data(), parts, recv.size());
    count(detail::reduce_scatter_bytes(recv.size_bytes(), size()));
    r.finish_ = std::move(finish);
    return r;
  }
  /// @brief all_gather(), started (MPI_Iallgather); in place when `send` is this rank's part of `recv`.
  template <class T>
  Request start_all_gather(std::span<const T> send, std::span<T> recv) {
    Request r;
    if (done_locally("start_all_gather", send, recv, false) || send.empty()) return r;
    const bool in_place = send.data() == recv.data() + send.size() * rank();
    const int n = detail_mpi::to_int(send.size(), "all_gather");
    auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
    std::function<void()> finish = [req] { detail_mpi::check(MPI_Wait(req.get(), MPI_STATUS_IGNORE), "MPI_Wait (all_gather)"); };
    detail_mpi::check(MPI_Iallgather(in_place ? MPI_IN_PLACE : send.data(), n, detail_mpi::datatype<T>(), recv.data(), n,
                                     detail_mpi::datatype<T>(), native(), req.get()),
                      "MPI_Iallgather");
    count(detail::all_gather_bytes(send.size_bytes(), size()));
    r.finish_ = std::move(finish);
    return r;
  }
  /// Broadcast `buffer` from `root`.
  template <class T>
  void broadcast(std::span<T> buffer, int root) {
    if (root < 0 || root >= size())
      throw InvalidArgument("comm::Mpi::broadcast: root " + std::to_string(root) + " is not a rank (size " +
                            std::to_string(size()) + ")");
    if (size() == 1) return;
    detail_mpi::check(MPI_Bcast(buffer.data(), detail_mpi::to_int(buffer.size(), "broadcast"), detail_mpi::datatype<T>(),
                                root, native()),
                      "MPI_Bcast");
    count(detail::broadcast_bytes(buffer.size_bytes(), size()));
  }
  /// @brief A file every rank of the communicator opened with MPI-IO, as ShardedOptimizer::save()
  /// uses it: independent writes at explicit offsets, then a collective sync and close.
  class SharedFile {
   public:
    SharedFile(const SharedFile&) = delete;
    SharedFile& operator=(const SharedFile&) = delete;
    /// Takes the file over from `o`.
    SharedFile(SharedFile&& o) noexcept : file_(o.file_), path_(std::move(o.path_)) { o.file_ = MPI_FILE_NULL; }
    SharedFile& operator=(SharedFile&&) = delete;
    ~SharedFile() {
      if (file_ != MPI_FILE_NULL) MPI_File_close(&file_);  // only after an exception: collective
    }
    /// Writes `bytes` bytes at `offset` (independent: any number of calls per rank).
    void write_at(const void* data, std::uint64_t bytes, std::uint64_t offset) {
      const char* p = static_cast<const char*>(data);
      while (bytes > 0) {
        const int n = static_cast<int>(std::min<std::uint64_t>(bytes, 1u << 30));
        MPI_Status status;
        const int rc = MPI_File_write_at(file_, static_cast<MPI_Offset>(offset), p, n, MPI_BYTE, &status);
        if (rc != MPI_SUCCESS) {
          char text[MPI_MAX_ERROR_STRING] = {};
          int len = 0;
          MPI_Error_string(rc, text, &len);
          throw IoError("checkpoint '" + path_ + "': MPI_File_write_at failed at offset " + std::to_string(offset) + ": " +
                        std::string(text, static_cast<std::size_t>(len)));
        }
        // MPI-IO may report success for a short or empty write (OpenMPI's ompio does for EFBIG,
        // a full disk or a quota, and only logs it): the byte count is the truth.
        int written = 0;
        if (MPI_Get_count(&status, MPI_BYTE, &written) != MPI_SUCCESS || written == MPI_UNDEFINED) written = -1;
        if (written != n)
          throw IoError("checkpoint '" + path_ + "': MPI_File_write_at wrote " +
                        (written < 0 ? std::string("an unknown number") : std::to_string(written)) + " of " + std::to_string(n) +
                        " bytes at offset " + std::to_string(offset) + " (disk full, quota or file size limit?)");
        p += n, bytes -= static_cast<std::uint64_t>(n), offset += static_cast<std::uint64_t>(n);
      }
    }
    /// Flushes every rank's writes to storage (collective).
    void sync() {
      if (MPI_File_sync(file_) != MPI_SUCCESS) throw IoError("checkpoint '" + path_ + "': MPI_File_sync failed");
    }
    /// Closes the file (collective).
    void close() {
      if (MPI_File_close(&file_) != MPI_SUCCESS) throw IoError("checkpoint '" + path_ + "': MPI_File_close failed");
      file_ = MPI_FILE_NULL;
    }

   private:
    friend class Mpi;
    SharedFile(MPI_File f, std::string path) : file_(f), path_(std::move(path)) {}
    MPI_File file_ = MPI_FILE_NULL;
    std::string path_;
  };

  /// @brief Opens an existing file for writing on every rank with MPI-IO (collective). Fails on
  /// every rank if it fails on any.
  SharedFile open_shared(const std::string& path) {
    MPI_File f = MPI_FILE_NULL;
    const int rc = MPI_File_open(native(), path.c_str(), MPI_MODE_WRONLY, MPI_INFO_NULL, &f);
    int failed = rc != MPI_SUCCESS ? 1 : 0;
    detail_mpi::check(MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, native()), "MPI_Allreduce");
    if (failed) {
      if (rc == MPI_SUCCESS) MPI_File_close(&f);
      char text[MPI_MAX_ERROR_STRING] = {};
      int len = 0;
      if (rc != MPI_SUCCESS) MPI_Error_string(rc, text, &len);
      throw IoError("checkpoint '" + path + "': MPI_File_open failed" + (len ? std::string(": ") + text : std::string(" on another rank")));
    }
    return SharedFile(f, path);
  }
  /// @brief Announces that this rank has arrived at shardopt collective call `seq` (described by
  /// `call`) and waits, at most `timeout` seconds (0: no limit), until the ranks it needs are there:
  /// rank 0 waits for every rank, the others for rank 0. A rank that waits longer prints which call
  /// it is in and which ranks have not arrived, and aborts the job (MPI_Abort) rather than hang.
  ///
  /// ShardedOptimizer calls it before each agreement (detail::agree): one small message from every
  /// rank to rank 0 and back, on a communicator of its own.
  void arrive(std::int64_t seq, double timeout, const std::string& call) {
    if (size() == 1) return;
    const int p = size(), me = rank();
    constexpr int tag = 7301;
    std::vector<std::int64_t> in(static_cast<std::size_t>(me == 0 ? p - 1 : 1));
    std::vector<MPI_Request> recvs(in.size()), sends(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      const int peer = me == 0 ? static_cast<int>(i) + 1 : 0;
      detail_mpi::check(MPI_Irecv(&in[i], 1, MPI_INT64_T, peer, tag, state_->arrivals, &recvs[i]), "MPI_Irecv");
      detail_mpi::check(MPI_Isend(&seq, 1, MPI_INT64_T, peer, tag, state_->arrivals, &sends[i]), "MPI_Isend");
    }
    const auto start = std::chrono::steady_clock::now();
    std::vector<int> done(recvs.size());
    for (long polls = 0;; ++polls) {
      int n = 0;
      detail_mpi::check(MPI_Testsome(static_cast<int>(recvs.size()), recvs.data(), &n, done.data(), MPI_STATUSES_IGNORE),
                        "MPI_Testsome");
      if (n == MPI_UNDEFINED) break;  // every receive completed
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (timeout > 0 && waited > timeout) {
        std::vector<int> missing;
        for (std::size_t i = 0; i < recvs.size(); ++i)
          if (recvs[i] != MPI_REQUEST_NULL) missing.push_back(me == 0 ? static_cast<int>(i) + 1 : 0);
        std::string list;
        for (std::size_t i = 0; i < missing.size() && i < 32; ++i) list += (i ? ", " : "") + std::to_string(missing[i]);
        if (missing.size() > 32) list += ", ...";
        std::fprintf(stderr,
                     "shardopt: rank %d has waited %.1f s in %s for rank(s) %s, which have not arrived at a shardopt "
                     "collective call (every rank must make the same calls in the same order; the limit is "
                     "SHARDOPT_COLLECTIVE_TIMEOUT or set_collective_timeout()): aborting the job\n",
                     me, waited, call.c_str(), list.c_str());
        std::fflush(stderr);
        MPI_Abort(native(), 124);
      }
      if (polls > 200) std::this_thread::sleep_for(std::chrono::microseconds(polls > 2000 ? 2000 : 50));
    }
    detail_mpi::check(MPI_Waitall(static_cast<int>(sends.size()), sends.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  }
  /// Waits for every rank.
  void barrier() {
    if (size() > 1) detail_mpi::check(MPI_Barrier(native()), "MPI_Barrier");
  }
  /// Bytes and calls so far (shared by copies of this communicator).
  const CommStats& stats() const noexcept { return state_->stats; }

 private:
  // The size check of a reduce-scatter (`send` the whole: size() * recv.size() elements) or an
  // all-gather (`recv` the whole); on one rank the copy of send into recv, and true: nothing to send.
  template <class T>
  bool done_locally(const char* call, std::span<const T> send, std::span<T> recv, bool send_is_whole) const {
    const std::size_t whole = send_is_whole ? send.size() : recv.size(), part = send_is_whole ? recv.size() : send.size();
    if (whole != part * static_cast<std::size_t>(size()))
      throw InvalidArgument(std::string("comm::Mpi::") + call + ": " + (send_is_whole ? "send" : "recv") + " has " +
                            std::to_string(whole) + " elements, expected size() * " + (send_is_whole ? "recv" : "send") +
                            ".size() = " + std::to_string(part * size()));
    if (size() != 1) return false;
    if (send.data() != recv.data()) std::copy(send.begin(), send.end(), recv.begin());
    return true;
  }
  struct State {
    MPI_Comm comm = MPI_COMM_NULL;
    MPI_Comm arrivals = MPI_COMM_NULL;  // arrive()'s messages, apart from the collectives
    int rank = 0, size = 1;
    CommStats stats;
    std::vector<unsigned char> padded, parts;  // scratch reused between calls
    std::vector<std::shared_ptr<std::vector<unsigned char>>> pool;  // the started collectives' scratch, when done
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    ~State() {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
      if (!finalized && arrivals != MPI_COMM_NULL) MPI_Comm_free(&arrivals);
    }
  };
  // The transport of detail::ordered_all_reduce / ordered_reduce_scatter: host memory, MPI_Alltoall
  // and MPI_Allgather, the combine on the host.
  struct Ordered {
    Mpi& c;
    std::size_t size() const { return static_cast<std::size_t>(c.size()); }
    std::size_t rank() const { return static_cast<std::size_t>(c.rank()); }
    template <class T>
    T* scratch_parts(std::size_t n) { return scratch<T>(c.state_->parts, n); }
    template <class T>
    T* scratch_padded(std::size_t n) { return scratch<T>(c.state_->padded, n); }
    template <class T>
    void all_to_all(const T* send, T* parts, std::size_t n) {
      const int count = detail_mpi::to_int(n, "all_reduce/reduce_scatter");
      detail_mpi::check(MPI_Alltoall(send, count, detail_mpi::datatype<T>(), parts, count, detail_mpi::datatype<T>(), c.native()),
                        "MPI_Alltoall");
    }
    template <class T>
    void combine(const T* parts, T* out, std::size_t n, ReduceOp op) { detail::combine_in_rank_order(parts, out, n, size(), op); }
    template <class T>
    void all_gather_in_place(T* buffer, std::size_t n) {
      const int count = detail_mpi::to_int(n, "all_reduce");
      detail_mpi::check(MPI_Allgather(MPI_IN_PLACE, count, detail_mpi::datatype<T>(), buffer, count, detail_mpi::datatype<T>(), c.native()),
                        "MPI_Allgather");
    }
    template <class T>
    void copy(T* dst, const T* src, std::size_t n) { std::copy(src, src + n, dst); }
    template <class T>
    void zero(T* dst, std::size_t n) { std::fill(dst, dst + n, T(0)); }
  };
  // Memory for n elements of T, kept between calls (not cleared).
  template <class T>
  static T* scratch(std::vector<unsigned char>& s, std::size_t n) {
    if (s.size() < n * sizeof(T)) s.resize(n * sizeof(T));
    return reinterpret_cast<T*>(s.data());
  }
  // Started collectives' scratch: each in-flight one holds its own, returned to this pool after.
  using Scratch = std::shared_ptr<std::vector<unsigned char>>;
  Scratch take_scratch(std::size_t bytes) {
    auto& pool = state_->pool;
    Scratch s;
    if (!pool.empty()) {
      s = std::move(pool.back());
      pool.pop_back();
    } else {
      s = std::make_shared<std::vector<unsigned char>>();
    }
    if (s->size() < bytes) s->resize(bytes);
    return s;
  }
  template <class T>
  MPI_Request start_all_to_all(const T* send, T* parts, std::size_t n) {
    const int count = detail_mpi::to_int(n, "all_reduce/reduce_scatter");
    MPI_Request req;
    detail_mpi::check(MPI_Ialltoall(send, count, detail_mpi::datatype<T>(), parts, count, detail_mpi::datatype<T>(), native(), &req),
                      "MPI_Ialltoall");
    return req;
  }
  void count(std::uint64_t bytes) {
    state_->stats.bytes_sent += bytes;
    state_->stats.collectives += 1;
  }
  std::shared_ptr<State> state_;
};

}  // namespace shardopt::comm
