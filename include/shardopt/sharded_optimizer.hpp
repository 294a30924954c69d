#pragma once
/// @file
/// @brief shardopt::ShardedOptimizer<Algo, Layout, Comm, ExecSpace>: the optimizer users compose.

#include <Kokkos_Core.hpp>

#include <fcntl.h>   // O_CREAT, O_EXCL, O_WRONLY, O_RDONLY
#include <unistd.h>  // unlink

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <climits>
#include <cstdio>  // rename
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/consensus.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/detail/fused_update.hpp>
#include <shardopt/detail/plan.hpp>
#include <shardopt/detail/redistribute.hpp>
#include <shardopt/error.hpp>
#include <shardopt/layout_support.hpp>
#include <shardopt/options.hpp>
#include <shardopt/sharded_tensor.hpp>
#include <shardopt/state_dict.hpp>
#include <shardopt/detail/safetensors.hpp>

#include <nlohmann/json.hpp>

namespace shardopt {

/// @brief An optimizer over named parameters, plain or sharded, composed of three policies.
///
/// @tparam Algo the update rule (policies/shardopt/algo/): SGD, Adagrad, Adam, AdamW, RMSprop, or yours.
/// @tparam Layout which part of the optimizer state each rank owns and what a step communicates
///         (policies/shardopt/layout/): Replicated, DataParallel, FlatPartition, ChunkRows,
///         ChunkCols, Chunk<Dim>, or yours.
/// @tparam Comm the communicator (policies/shardopt/comm/): Serial, Mpi, Nccl, or yours.
/// @tparam ExecSpace the Kokkos execution space the step runs in (parameters, gradients and state
///         live in its memory space), or a `Kokkos::Device<ExecutionSpace, MemorySpace>` to choose
///         the memory space too (e.g. `Kokkos::Device<Kokkos::Cuda, Kokkos::CudaUVMSpace>`).
///
/// Parameters are registered by name with add_param(); each belongs to a param group whose
/// options apply to it. zero_grad() and step() follow torch.optim. Registration is local; step()
/// and check_consistency() are collective over `Comm` and fail on every rank, changing nothing,
/// if the ranks disagree or any rank finds an error.
///
/// **Gradient presence.** Like torch's `p.grad is None`, a gradient can be absent: step() then
/// skips its parameter and leaves its state and step count alone. A gradient is present when
/// registered and after `zero_grad(false)`; `zero_grad(true)` (the default) zero-fills it and
/// marks it absent, and mark_grad_present() marks it present again once the caller has written it.
/// A gradient cannot be lost silently: step() throws if an absent gradient holds a non-zero value,
/// naming the parameter, since that means it was written but not marked.
template <class Algo, class Layout, class Comm, class ExecSpace = Kokkos::DefaultExecutionSpace>
class ShardedOptimizer {
  // One readable message for each wrong policy (its first missing member), and no cascade after it.
  static constexpr bool algo_ok_ = detail::check_algorithm<Algo>();
  static constexpr bool layout_ok_ = detail::check_layout<Layout>();
  static constexpr bool comm_ok_ = detail::check_communicator<Comm>();
  static constexpr bool valid_ = algo_ok_ && layout_ok_ && comm_ok_;
  // Views in memory_space, or in memory the execution space can access.
  template <class M>
  static constexpr bool can_access =
      std::is_same_v<M, typename ExecSpace::memory_space> || Kokkos::SpaceAccessibility<typename ExecSpace::execution_space, M>::accessible;
  static_assert(!detail::host_memory_comm<Comm> ||
                    Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename ExecSpace::memory_space>::accessible,
                "ShardedOptimizer<Algo, Layout, Comm, ExecSpace>: this Comm reduces in host memory (host_memory_only), but "
                "ExecSpace's memory is not host-accessible: use comm::Nccl for CUDA memory, or a host execution space.");

 public:
  using algorithm_type = Algo;                          ///< the Algo policy
  using layout_type = Layout;                           ///< the Layout policy
  using comm_type = Comm;                               ///< the Comm policy
  using execution_space = typename ExecSpace::execution_space;  ///< where the step runs
  using memory_space = typename ExecSpace::memory_space;        ///< where parameters and state live
  using device_type = Kokkos::Device<execution_space, memory_space>;  ///< the two together
  using options_type = typename detail::safe_algorithm_traits<Algo>::options_type;  ///< the algorithm's options
  /// Number of state slots of the algorithm.
  static constexpr std::size_t num_slots = detail::safe_algorithm_traits<Algo>::num_slots;

  /// @brief A param group: options and the names of its parameters.
  class ParamGroup {
   public:
    options_type options;  ///< the group's options; may be changed between steps (validated at step())
    /// Names of the group's parameters, in registration order.
    const std::vector<std::string>& params() const noexcept { return params_; }

   private:
    friend class ShardedOptimizer;
    std::vector<std::string> params_;
  };

  /// @brief Creates an optimizer with one param group (index 0) whose options are `defaults`.
  /// @throws InvalidArgument with torch's wording if an option is invalid.
  explicit ShardedOptimizer(Comm comm, const options_type& defaults = {}, execution_space exec = execution_space())
      : comm_(std::move(comm)), exec_(std::move(exec)), defaults_(defaults) {
    if constexpr (valid_) validate_options(defaults);
    groups_.emplace_back();
    groups_[0].options = defaults;
  }
  ShardedOptimizer(const ShardedOptimizer&) = delete;             ///< not copyable (the state would be shared)
  ShardedOptimizer& operator=(const ShardedOptimizer&) = delete;  ///< not copyable
  /// Movable; a moved-from optimizer throws shardopt::Error from every call that registers, steps,
  /// communicates or reads the state (assigning to it makes it usable again).
  ShardedOptimizer(ShardedOptimizer&&) noexcept = default;
  ShardedOptimizer& operator=(ShardedOptimizer&&) noexcept = default;  ///< movable

  /// @brief Adds a param group with the complete options `options` and returns its index.
  ///
  /// Fields left out of a designated initializer take torch.optim's defaults. To start from this
  /// optimizer's defaults instead (torch's behaviour for missing keys), pass a callable.
  /// @throws InvalidArgument if an option is invalid (nothing is added).
  int add_param_group(const options_type& options) {
    require_live("add_param_group");
    validate_options(options);
    groups_.emplace_back();
    groups_.back().options = options;
    return static_cast<int>(groups_.size()) - 1;
  }
  /// @brief Adds a param group whose options are this optimizer's defaults as changed by `edit(options&)`.
  template <class Edit>
    requires std::invocable<Edit&, options_type&>
  int add_param_group(Edit&& edit) {
    options_type o = defaults_;
    edit(o);
    return add_param_group(o);
  }

  /// @brief Registers the whole tensor `param` with gradient `grad` under `name`, in group `group`.
  ///
  /// Both are Kokkos views of rank 1 to 4 of float or double, of the same type and shape,
  /// contiguous, in memory the execution space can access. The optimizer keeps the views (and so
  /// the allocations) and updates `param` in place. The gradient starts present.
  /// @throws InvalidArgument naming the parameter if the name is taken or empty, the group is
  ///         unknown, the shapes differ, a view is not contiguous or the gradient aliases the parameter.
  template <class PView, class GView>
  void add_param(const std::string& name, const PView& param, const GView& grad, int group = 0) {
    require_live("add_param");
    static_assert(Kokkos::is_view<PView>::value && Kokkos::is_view<GView>::value,
                  "ShardedOptimizer::add_param: the parameter and its gradient must be Kokkos views.");
    using T = typename PView::non_const_value_type;
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "ShardedOptimizer::add_param: the parameter's element type must be float or double.");
    static_assert(std::is_same_v<typename PView::value_type, T> && std::is_same_v<typename GView::value_type, T>,
                  "ShardedOptimizer::add_param: the parameter and its gradient must be non-const views of the same "
                  "element type.");
    static_assert(PView::rank >= 1 && PView::rank <= 4 && GView::rank == PView::rank,
                  "ShardedOptimizer::add_param: the parameter and its gradient must be views of the same rank, 1 to 4.");
    static_assert(std::is_same_v<typename PView::array_layout, typename GView::array_layout>,
                  "ShardedOptimizer::add_param: the parameter and its gradient must have the same array layout.");
    static_assert(can_access<typename PView::memory_space> && can_access<typename GView::memory_space>,
                  "ShardedOptimizer::add_param: the views must live in memory the optimizer's execution space can access.");
    const std::string where = "add_param(" + detail::quote(name) + "): ";
    check_new_name(name, group);
    std::vector<std::int64_t> shape, gshape;
    for (unsigned d = 0; d < PView::rank; ++d) {
      shape.push_back(static_cast<std::int64_t>(param.extent(d)));
      gshape.push_back(static_cast<std::int64_t>(grad.extent(d)));
    }
    if (shape != gshape)
      throw InvalidArgument(where + "the gradient's shape " + detail::fmt_shape(gshape) + " differs from the parameter's shape " +
                            detail::fmt_shape(shape));
    if (!param.span_is_contiguous() || !grad.span_is_contiguous())
      throw InvalidArgument(where + "the " + std::string(param.span_is_contiguous() ? "gradient" : "parameter") +
                            " view is not contiguous");
    if (param.size() > 0 && param.data() == grad.data())
      throw InvalidArgument(where + "the gradient view is the parameter view itself");
    if (!row_major(param) || !row_major(grad))
      throw InvalidArgument(where + "the " + std::string(row_major(param) ? "gradient" : "parameter") +
                            " view is not in row-major order (e.g. LayoutLeft): shardopt keeps the optimizer state, state "
                            "dicts and checkpoints in a tensor's logical row-major order, as torch does, so it steps views "
                            "whose memory is in that order; use Kokkos::LayoutRight (Kokkos' default for views of rank 2 "
                            "and more on CUDA and HIP is LayoutLeft)");
    Param p;
    p.name = name;
    p.group = static_cast<std::size_t>(group);
    p.dtype = dtype_of<T>();
    p.shape = shape;
    p.keepalive = std::make_shared<std::pair<PView, GView>>(param, grad);
    p.pieces.push_back(Piece{param.data(), grad.data(), param.size(), ShardMetadata{std::vector<std::int64_t>(shape.size(), 0), shape, comm_.rank()}});
    commit_param(std::move(p));
  }

  /// @brief Registers the local shards of `tensor` under `name`, in group `group`.
  ///
  /// Each rank registers the same sharded tensor; step() updates only the local shards.
  /// @throws InvalidArgument naming the parameter if the name is taken, the group is unknown or the
  ///         tensor was not sharded over a communicator of this size and rank.
  template <class T, class MS>
  void add_param(const std::string& name, const ShardedTensor<T, MS>& tensor, int group = 0) {
    require_live("add_param");
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "ShardedOptimizer::add_param: the sharded tensor's element type must be float or double.");
    static_assert(can_access<MS>,
                  "ShardedOptimizer::add_param: the shards must live in memory the optimizer's execution space can access.");
    const std::string where = "add_param(" + detail::quote(name) + "): ";
    check_new_name(name, group);
    try {
      detail::validate_tiling(tensor.shape(), tensor.shards_metadata(), comm_.size());
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(where + e.what());
    }
    Param p;
    p.name = name;
    p.group = static_cast<std::size_t>(group);
    p.dtype = dtype_of<T>();
    p.shape = tensor.shape();
    p.shards = tensor.shards_metadata();
    p.keepalive = std::make_shared<std::vector<typename ShardedTensor<T, MS>::Shard>>(tensor.local_shards());
    std::size_t mine = 0;
    for (const auto& m : p.shards) mine += m.rank == comm_.rank();
    if (mine != tensor.local_shards().size())
      throw InvalidArgument(where + "this rank holds " + std::to_string(tensor.local_shards().size()) +
                            " shard(s) but the metadata places " + std::to_string(mine) + " on rank " +
                            std::to_string(comm_.rank()) + ": the tensor was sharded for another communicator");
    for (const auto& s : tensor.local_shards()) {
      if (s.metadata.rank != comm_.rank() || s.value.size() != static_cast<std::size_t>(s.metadata.numel()) ||
          s.grad.size() != s.value.size())
        throw InvalidArgument(where + "local shard (" + detail::describe(s.metadata) +
                              ") does not match its metadata on rank " + std::to_string(comm_.rank()));
      p.pieces.push_back(Piece{s.value.data(), s.grad.data(), s.value.size(), s.metadata});
    }
    commit_param(std::move(p));
  }

  /// @brief Zero-fills every gradient; with `set_to_none` (the default, as in torch) also marks
  /// them absent until mark_grad_present().
  void zero_grad(bool set_to_none = true) {
    require_live("zero_grad");
    for (auto& p : params_) {
      for (auto& pc : p.pieces) {
        if (p.dtype == Dtype::float32) detail::fill(exec_, static_cast<float*>(pc.grad), pc.numel, 0.0f);
        else detail::fill(exec_, static_cast<double*>(pc.grad), pc.numel, 0.0);
      }
      p.grad_present = !set_to_none;
    }
    exec_.fence();
  }

  /// @brief Marks the gradient of `name` present (written) after `zero_grad(true)`.
  void mark_grad_present(const std::string& name) { params_[index_of(name, "mark_grad_present")].grad_present = true; }
  /// @brief Marks every gradient present.
  void mark_grad_present() {
    for (auto& p : params_) p.grad_present = true;
  }
  /// @brief Whether the gradient of `name` is present.
  bool has_grad(const std::string& name) const { return params_[index_of(name, "has_grad")].grad_present; }

  /// @brief One optimizer step over every parameter whose gradient is present (collective).
  ///
  /// Validates every group's options and checks that the ranks agree (parameters, shapes, dtypes,
  /// groups, options, gradient presence) before changing anything; on any problem every rank
  /// throws the same error and nothing is changed. Then runs the Layout's strategy, per element
  /// type bucket by bucket (at most bucket_bytes() per collective): one collective before and
  /// (partitioned layouts) one after a fused update of the bucket, with two buckets in flight when
  /// the Comm can start collectives; last, the tensors stepped in place, in one fused update.
  ///
  /// On a device the work is enqueued on the execution space instance and step() returns without
  /// waiting for it (docs/gpu.md): fence the instance before reading parameters on the host.
  void step() {
    require_live("step");
    step_after({}, nullptr);
  }

  /// @brief Calls `closure()` once (it recomputes the loss and gradients), then step(); returns its result.
  ///
  /// If the closure throws on any rank, every rank throws (collectively, in the step's agreement)
  /// and nothing is stepped: the rank whose closure threw rethrows its exception, the others throw
  /// shardopt::Error naming that rank and the exception's message. Ranks never drift apart by a step.
  template <class Closure>
    requires std::invocable<Closure&>
  auto step(Closure&& closure) {
    require_live("step");
    using R = std::invoke_result_t<Closure&>;
    std::conditional_t<std::is_void_v<R>, char, std::optional<R>> loss{};
    detail::LocalError err;
    std::exception_ptr thrown;
    try {
      if constexpr (std::is_void_v<R>) closure();
      else loss.emplace(closure());
    } catch (const std::exception& e) {
      thrown = std::current_exception();
      err = {detail::LocalError::other, std::string("step(closure): the closure threw: ") + e.what()};
    } catch (...) {
      thrown = std::current_exception();
      err = {detail::LocalError::other, "step(closure): the closure threw an exception that is not a std::exception"};
    }
    step_after(std::move(err), thrown);
    if constexpr (!std::is_void_v<R>) return std::move(*loss);
  }

  /// @brief Seconds a rank waits at most, in a collective call, for the other ranks to arrive (0:
  /// forever), after which it reports which call it is in and which ranks are missing, and aborts
  /// the job instead of hanging. Where the Comm can tell (comm::Mpi); the default comes from the
  /// environment variable `SHARDOPT_COLLECTIVE_TIMEOUT` (seconds), else 1800.
  /// @throws InvalidArgument for a negative or non-finite value.
  void set_collective_timeout(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0)
      throw InvalidArgument("set_collective_timeout(" + detail::fmt(seconds) + "): the timeout must be a finite number of seconds >= 0");
    collective_timeout_ = seconds;
  }
  /// The collective timeout in seconds (0: none); see set_collective_timeout().
  double collective_timeout() const noexcept { return collective_timeout_; }

  /// The default of bucket_bytes(): 32 MiB.
  static constexpr std::size_t default_bucket_bytes = std::size_t(32) << 20;
  /// The largest bucket_bytes(): 2 GiB.
  static constexpr std::size_t max_bucket_bytes = std::size_t(1) << 31;
  /// @brief Sets the most bytes of gradients or parameters one collective of a step moves (at
  /// least one element per rank): every layout moves them through buffers of this size (two when
  /// the Comm can start collectives, as comm::Mpi can; one otherwise), bucket by bucket, so that
  /// the memory the optimizer adds per rank is its state plus a few buckets,
  /// whatever the size of the model. Results are the same bits for every bucket size. Like the
  /// registration, the bucket size must be the same on every rank (step() checks it).
  /// @throws InvalidArgument for 0 or more than max_bucket_bytes.
  void set_bucket_bytes(std::size_t bytes) {
    require_live("set_bucket_bytes");
    if (bytes == 0) throw InvalidArgument("set_bucket_bytes(0): a bucket must hold at least one element");
    if (bytes > max_bucket_bytes)
      throw InvalidArgument("set_bucket_bytes(" + std::to_string(bytes) + "): at most " + std::to_string(max_bucket_bytes) +
                            " bytes (2 GiB: MPI counts elements in an int)");
    bucket_bytes_ = bytes;
  }
  /// The bucket size in bytes; see set_bucket_bytes().
  std::size_t bucket_bytes() const noexcept { return bucket_bytes_; }

  /// @brief Collective check that every rank registered the same parameters (names, order, dtypes,
  /// shapes, sharding, groups) with the same options; throws CollectiveMismatch on every rank if not.
  void check_consistency() {
    require_live("check_consistency");
    detail::LocalError none;
    agree(detail::Op::check_consistency, none);
  }

  /// The param groups; their options may be changed between steps (e.g. by an LR scheduler).
  std::span<ParamGroup> param_groups() noexcept { return groups_; }
  /// The param groups.
  std::span<const ParamGroup> param_groups() const noexcept { return groups_; }
  /// The options group 0 was created with, also the base of add_param_group(edit).
  const options_type& defaults() const noexcept { return defaults_; }
  /// The names of every parameter, in registration order.
  std::vector<std::string> param_names() const {
    std::vector<std::string> out;
    for (const auto& p : params_) out.push_back(p.name);
    return out;
  }
  /// Steps taken by parameter `name` (steps with its gradient present).
  std::int64_t step_count(const std::string& name) const { return params_[index_of(name, "step_count")].step; }

  /// @brief A host copy of the part of state slot `slot` of parameter `name` that this rank keeps,
  /// run `run` of it (0 for a whole tensor or the first local shard; see local_state_runs()); empty
  /// if the slot is not allocated for it yet.
  /// @throws InvalidArgument for an unknown name, slot or run, or a `T` other than the parameter's type.
  template <class T>
  std::vector<T> local_state(const std::string& name, std::string_view slot, std::size_t run = 0) const {
    const std::size_t i = index_of(name, "local_state");
    const auto& p = params_[i];
    const std::string where = "local_state(" + detail::quote(name) + "): ";
    if (p.dtype != dtype_of<T>()) throw InvalidArgument(where + "the parameter is " + dtype_name(p.dtype));
    const std::size_t k = slot_index(slot, where);
    const auto& plan = plan_of<T>();
    const auto runs = state_runs_of(plan, i);
    if (run >= runs.size() && !(run == 0 && runs.empty()))
      throw InvalidArgument(where + "run " + std::to_string(run) + " of " + std::to_string(runs.size()));
    if (runs.empty() || !p.initialized[k]) return {};
    std::vector<T> out(static_cast<std::size_t>(runs[run].length));
    copy_to_host(plan.state[k].data() + runs[run].state_offset, out);
    return out;
  }
  /// Number of runs of state this rank keeps for `name` (see local_state()).
  std::size_t local_state_runs(const std::string& name) const {
    return runs_of(index_of(name, "local_state_runs")).size();
  }

  /// @brief The whole of state slot `slot` of parameter `name` as a row-major global tensor, on every
  /// rank (collective); empty if not allocated yet. Where ranks hold copies, rank order decides.
  template <class T>
  std::vector<T> gathered_state(const std::string& name, std::string_view slot) {
    require_live("gathered_state");
    const std::string where = "gathered_state(" + detail::quote(name) + "): ";
    detail::LocalError err;
    std::size_t i = 0, k = 0;
    try {
      i = index_of(name, "gathered_state");
      if (params_[i].dtype != dtype_of<T>()) throw InvalidArgument(where + "the parameter is " + dtype_name(params_[i].dtype));
      k = slot_index(slot, where);
    } catch (const InvalidArgument& e) {
      err = {detail::LocalError::invalid_argument, e.what()};
    }
    agree(detail::Op::gather_state, err);
    replan_if_needed();
    if (!params_[i].initialized[k]) return {};
    return gather_param<T>(plan_of<T>(), i, k);
  }

  // ---- state dicts and checkpoints --------------------------------------------------------------

  /// @brief This rank's optimizer state keyed by parameter names (local: not collective).
  ///
  /// Holds the algorithm's name, every param group (options and parameter names) and, for every
  /// registered parameter, its dtype, global shape, step count and the parts of each existing
  /// state slot that this rank keeps, at their offsets in the global tensor. Under DataParallel
  /// and Replicated that is every slot whole; under FlatPartition and Chunk, this rank's share.
  StateDict state_dict() const {
    require_live("state_dict");
    StateDict sd = skeleton();
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < num_slots; ++k) {
        if (!params_[i].initialized[k]) continue;
        auto& parts = sd.state.at(params_[i].name).slots[std::string(Algo::slot_names[k])];
        if (params_[i].dtype == Dtype::float32) local_parts<float>(i, k, parts);
        else local_parts<double>(i, k, parts);
      }
    return sd;
  }

  /// @brief The whole optimizer state on every rank, every slot as one part covering the global
  /// tensor (collective), like torch's full state dict of a sharded model.
  StateDict full_state_dict() {
    require_live("full_state_dict");
    detail::LocalError none;
    agree(detail::Op::gather_state, none);
    replan_if_needed();
    StateDict sd = skeleton();
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < num_slots; ++k) {
        if (!params_[i].initialized[k]) continue;
        StatePart part;
        if (params_[i].dtype == Dtype::float32) {
          const auto v = gather_param<float>(plan_f32_, i, k);
          part.values.assign(v.begin(), v.end());
        } else {
          part.values = gather_param<double>(plan_f64_, i, k);
        }
        sd.state.at(params_[i].name).slots[std::string(Algo::slot_names[k])].push_back(std::move(part));
      }
    return sd;
  }

  /// @brief Replaces the optimizer state, step counts and param-group options with those of `sd`
  /// (collective), re-sharding it to this optimizer's layout and world size.
  ///
  /// `sd` may come from any layout and world size: from state_dict() on each rank of the run that
  /// saved it, or from full_state_dict(). The parts passed on all ranks together must cover every
  /// slot; each rank takes the elements it keeps. Like torch, the options come from `sd`; they must
  /// keep the same state slots as this optimizer's options (e.g. the same `amsgrad`).
  /// @throws InvalidArgument listing every problem (unknown or missing parameter names, dtype or
  ///         shape mismatches, another algorithm, different groups, invalid or non-finite options,
  ///         parts out of range or not covering a slot), on every rank, with nothing changed.
  /// @throws CollectiveMismatch if the ranks pass state dicts that disagree (steps, options, slots).
  void load_state_dict(const StateDict& sd) {
    require_live("load_state_dict");
    detail::LocalError err;
    Incoming in;
    try {
      in = check_incoming(sd, true, "load_state_dict()");
    } catch (const InvalidArgument& e) {
      err = {detail::LocalError::invalid_argument, e.what()};
    }
    agree(detail::Op::load_state_dict, err, describe_incoming(sd));
    replan_if_needed();
    commit_loaded(in, stage_from_dict(sd, in));
  }

  /// @brief Writes the whole optimizer state to one safetensors file at `path` (collective).
  ///
  /// Each state slot is stored as its global tensor `state.<name>.<slot>` (the parameter's dtype),
  /// each step count as the int64 scalar `state.<name>.step`; the algorithm and the param groups
  /// (options and names) are in the header's `__metadata__`. Every rank writes the elements it
  /// keeps directly at their offsets (with MPI-IO where the Comm offers `open_shared`, as comm::Mpi
  /// does; with pwrite otherwise). The write is atomic: a temporary file next to `path` is
  /// written, flushed and fsynced, then renamed over `path`; a crash at any point leaves the
  /// previous file intact. Stale temporary files of earlier interrupted saves are removed.
  /// PyTorch reads the file with `safetensors` (see scripts/torch_interop.py).
  /// @throws IoError on every rank if any rank fails; `path` is then unchanged.
  void save(const std::string& path) {
    require_live("save");
    detail::LocalError err;
    if (path.empty()) err = {detail::LocalError::invalid_argument, "save(): the path is empty"};
    try {
      validate_groups();  // a file must be loadable: no option it cannot hold
    } catch (const InvalidArgument& e) {
      if (!err) err = {detail::LocalError::invalid_argument, std::string("save(): ") + e.what()};
    }
    agree(detail::Op::save, err);
    replan_if_needed();
    FileLayout layout = file_layout();
    // The temporary file is named after the process that creates it (rank 0), so that another
    // writer's cleanup can tell whether it is still being written (detail::st::stale_temp).
    std::string suffix = comm_.rank() == 0 ? detail::st::temp_suffix() : std::string();
    std::int64_t length = static_cast<std::int64_t>(suffix.size());
    comm_.broadcast(std::span<std::int64_t>(&length, 1), 0);
    suffix.resize(static_cast<std::size_t>(length));
    comm_.broadcast(std::span<char>(suffix.data(), suffix.size()), 0);
    const std::string tmp = path + detail::st::temp_marker + suffix;
    const bool root = comm_.rank() == 0;
    auto cleanup = [&] {
      if (root) ::unlink(tmp.c_str());
    };
    io_phase(detail::Op::save, cleanup, [&] {
      if (!root) return;
      detail::st::remove_stale_temps(path);
      std::optional<detail::st::File> created;
      try {
        created.emplace(tmp, O_CREAT | O_EXCL | O_WRONLY);
      } catch (const IoError& e) {
        detail::st::fail(path, std::string("cannot create the temporary file next to it (") + e.what() + ")");
      }
      detail::st::File& f = *created;
      const std::string head = detail::st::encode(layout.header);
      f.write_at(head.data(), head.size(), 0);
      f.resize(layout.header.data_start + layout.header.data_size);
      for (std::size_t i = 0; i < params_.size(); ++i)
        f.write_at(&params_[i].step, 8, layout.header.data_start + layout.header.tensors.at(step_key(i)).begin);
      checkpoint_hook("header_written");
      f.close();
    });
    std::vector<detail::st::Checksum> sums(params_.size() * num_slots);  // of the elements this rank writes
    auto write_all = [&](auto& f) {
      for (std::size_t i = 0; i < params_.size(); ++i)
        for (std::size_t k = 0; k < num_slots; ++k) {
          if (!params_[i].initialized[k]) continue;
          const auto& t = layout.header.tensors.at(slot_key(i, k));
          auto& sum = sums[i * num_slots + k];
          if (params_[i].dtype == Dtype::float32) write_owned<float>(f, i, k, layout.header.data_start + t.begin, sum);
          else write_owned<double>(f, i, k, layout.header.data_start + t.begin, sum);
        }
      checkpoint_hook("before_fsync");
    };
    io_phase(detail::Op::save, cleanup, [&] {
      if constexpr (requires { comm_.open_shared(tmp); }) {
        // MPI-IO: a collective open, each rank's writes, then a collective sync and close that
        // every rank reaches even if its own writes failed (the failure is raised after them).
        auto f = comm_.open_shared(tmp);
        std::exception_ptr failed;
        try {
          write_all(f);
        } catch (...) {
          failed = std::current_exception();
        }
        for (auto collective : {&decltype(f)::sync, &decltype(f)::close}) {
          try {
            (f.*collective)();
          } catch (...) {
            if (!failed) failed = std::current_exception();
          }
        }
        if (failed) std::rethrow_exception(failed);
      } else {
        detail::st::File f(tmp, O_WRONLY);
        write_all(f);
        f.sync();
        f.close();
      }
    });
    // Every rank wrote its part: the checksums of the whole tensors go into the header (the same
    // length as the placeholders it was written with), then the rename.
    const auto total = all_reduce_checksums(sums);
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < num_slots; ++k)
        if (params_[i].initialized[k]) layout.checksums[slot_key(i, k)] = total[i * num_slots + k].hex();
    layout.header.metadata["shardopt.checksums"] = layout.checksums.dump();
    io_phase(detail::Op::save, cleanup, [&] {
      if (!root) return;
      const std::string head = detail::st::encode(layout.header);
      if (head.size() != layout.header.data_start) throw Error("save(): the header changed size when its checksums were written");
      {
        detail::st::File f(tmp, O_WRONLY);
        f.write_at(head.data(), head.size(), 0);
        f.sync();
        f.close();
      }
      checkpoint_hook("before_rename");
      if (::rename(tmp.c_str(), path.c_str()) != 0) detail::st::fail_errno(path, "cannot rename " + tmp + " to it");
      checkpoint_hook("after_rename");
      detail::st::sync_directory(path);
    });
  }

  /// @brief Loads a checkpoint written by save() under any layout and world size (collective).
  ///
  /// Every rank validates the header (size limits, offsets inside the file and not overlapping,
  /// known dtypes, shapes) and the contents against this optimizer as load_state_dict() does, then
  /// reads only the elements it keeps. Replaces the state, step counts and param-group options.
  /// @throws IoError for a missing, truncated or corrupt file, InvalidArgument if it does not fit
  ///         this optimizer (every problem listed); on every rank, with nothing changed.
  void load(const std::string& path) {
    require_live("load");
    detail::LocalError err;
    std::optional<detail::st::File> file;
    detail::st::Header header;
    std::map<std::string, std::string> checksums;
    StateDict sd;
    Incoming in;
    const std::string where = "load(" + detail::quote(path) + ")";
    try {
      file.emplace(path, O_RDONLY);
      header = detail::st::read_header(*file, path);
      checksums = checksums_of(header, path);
      sd = dict_from_header(*file, header, checksums, path);
      in = check_incoming(sd, false, where);
    } catch (const InvalidArgument& e) {
      err = {detail::LocalError::invalid_argument, e.what()};
    } catch (const IoError& e) {
      err = {detail::LocalError::io, e.what()};
    } catch (const std::exception& e) {
      err = {detail::LocalError::other, where + ": " + e.what()};
    }
    const std::string incoming = describe_incoming(sd);
    agree(detail::Op::load, err, incoming);
    replan_if_needed();
    std::vector<std::vector<double>> staged;
    std::vector<detail::st::Checksum> sums(params_.size() * num_slots);
    io_phase(detail::Op::load, [] {}, [&] { staged = stage_from_file(*file, header, sums); }, incoming);
    verify_checksums(checksums, path, all_reduce_checksums(sums));  // the same verdict on every rank
    commit_loaded(in, std::move(staged));
  }

  /// Bytes of optimizer state this rank holds.
  std::size_t state_bytes() const {
    std::size_t b = 0;
    for (const auto& v : plan_f32_.state) b += v.size() * sizeof(float);
    for (const auto& v : plan_f64_.state) b += v.size() * sizeof(double);
    return b;
  }
  /// Bytes this optimizer's agreement messages added to `comm().stats().bytes_sent`.
  std::uint64_t control_bytes() const noexcept { return control_bytes_; }
  /// The communicator.
  Comm& comm() noexcept { return comm_; }
  /// The execution space instance.
  const execution_space& execution_space_instance() const noexcept { return exec_; }

 private:
  // step() after a closure (whose failure, if any, is `err`, and `thrown` on this rank).
  void step_after(detail::LocalError err, std::exception_ptr thrown) {
    if (!err) {
      try {
        validate_groups();
        check_absent_gradients();
      } catch (const InvalidArgument& e) {
        err = {detail::LocalError::invalid_argument, e.what()};
      } catch (const std::exception& e) {
        err = {detail::LocalError::other, e.what()};
      }
    }
    try {
      agree(detail::Op::step, err);
    } catch (...) {
      if (thrown) std::rethrow_exception(thrown);  // this rank's own exception, as it was
      throw;
    }
    replan_if_needed();
    step_dtype<float>(plan_f32_);
    step_dtype<double>(plan_f64_);
    for (auto& p : params_)
      if (p.grad_present) ++p.step;
  }

  // The layout's strategy; on one process every layout steps the tensors in place (nothing to
  // reduce or gather, so no packing either).
  Strategy strategy() const noexcept { return comm_.size() == 1 ? Strategy::local : Layout::strategy; }

  enum class Dtype { float32, float64 };
  template <class T>
  static constexpr Dtype dtype_of() {
    return std::is_same_v<T, float> ? Dtype::float32 : Dtype::float64;
  }
  static const char* dtype_name(Dtype d) { return d == Dtype::float32 ? "float32" : "float64"; }

  struct Piece {
    void* value;
    void* grad;
    std::size_t numel;
    ShardMetadata meta;
  };
  struct Param {
    std::string name;
    std::size_t group = 0;
    Dtype dtype = Dtype::float32;
    std::vector<std::int64_t> shape;
    std::vector<ShardMetadata> shards;  // all shards of a sharded tensor; empty for a whole tensor
    std::vector<Piece> pieces;          // what this rank holds
    std::shared_ptr<const void> keepalive;
    std::int64_t step = 0;
    bool grad_present = true;
    std::array<bool, num_slots> initialized{};  // the same on every rank
  };

  using StateRun = detail::StateRun;
  // The device tables of one bucket: gradients in, the other ranks' parameters out, this rank's
  // parameters not stepped (absent gradients) into the all-gather, and the update's tables.
  template <class T>
  struct BucketTables {
    detail::CopyTable<T, execution_space, memory_space> pack, unpack, absent;
    typename detail::fused_workspace_for<valid_, Algo, T, num_slots, execution_space, memory_space>::type workspace;
  };
  // Everything a step of one element type needs, rebuilt when the registration or the bucket size
  // changes (the state only when the registration does).
  template <class T>
  struct Plan {
    bool built = false;
    detail::PlanLayout layout;  // the pure plan: state runs, buckets (detail/plan.hpp)
    // Bucket buffers (P windows each under a partitioned strategy) and this rank's reduced windows:
    // two when the Comm can start collectives (bucket b uses buffer b % depth), else one.
    std::array<Kokkos::View<T*, memory_space>, 2> bucket, reduced;
    std::size_t depth = 1;
    std::vector<BucketTables<T>> tables;  // per bucket
    typename detail::fused_workspace_for<valid_, Algo, T, num_slots, execution_space, memory_space>::type local;  // runs in place
    std::array<Kokkos::View<T*, memory_space>, num_slots> state;
  };

  void check_new_name(const std::string& name, int group) const {
    const std::string where = "add_param(" + detail::quote(name) + "): ";
    if (name.empty() || name.find_first_of(" \n") != std::string::npos)
      throw InvalidArgument(where + "a parameter name must be non-empty and contain no spaces or newlines");
    if (index_.count(name)) throw InvalidArgument(where + "a parameter of that name is already registered");
    if (group < 0 || group >= static_cast<int>(groups_.size()))
      throw InvalidArgument(where + "unknown param group " + std::to_string(group) + " (the optimizer has " +
                            std::to_string(groups_.size()) + " group(s): 0 to " + std::to_string(groups_.size() - 1) + ")");
  }
  void commit_param(Param&& p) {
    const auto ranges = memory_ranges(p, params_.size());
    check_memory(ranges, "add_param(" + detail::quote(p.name) + "): ");
    // Room first (growing geometrically: registration stays linear), so that no push_back below throws.
    auto room = [](auto& v) {
      if (v.size() == v.capacity()) v.reserve(std::max<std::size_t>(8, 2 * v.capacity()));
    };
    room(params_);
    room(groups_[p.group].params_);
    index_.emplace(p.name, params_.size());  // may throw: nothing changed yet
    try {
      for (const auto& r : ranges) memory_.insert(r);
    } catch (...) {
      for (const auto& r : ranges) memory_.erase(r.first);
      index_.erase(p.name);
      throw;
    }
    groups_[p.group].params_.push_back(p.name);
    params_.push_back(std::move(p));
    registration_.clear();
    plans_valid_ = false;
  }
  // The byte ranges [begin, end) of the elements of parameter p (index `index`) and its gradient on
  // this rank, keyed by begin.
  struct Extent {
    std::uintptr_t end;
    std::size_t param;
    bool grad;
  };
  std::vector<std::pair<std::uintptr_t, Extent>> memory_ranges(const Param& p, std::size_t index) const {
    const std::size_t item = p.dtype == Dtype::float32 ? sizeof(float) : sizeof(double);
    std::vector<std::pair<std::uintptr_t, Extent>> out;
    for (const auto& pc : p.pieces) {
      if (pc.numel == 0) continue;
      for (const bool g : {false, true}) {
        const auto b = reinterpret_cast<std::uintptr_t>(g ? pc.grad : pc.value);
        out.push_back({b, Extent{b + pc.numel * item, index, g}});
      }
    }
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    return out;
  }
  // No two registered ranges may overlap: tied weights (one view under two names, or a subview of
  // another parameter) would be stepped twice and split the ranks, and a gradient that is (part of)
  // a parameter would be overwritten by the step. O(log n) per range.
  void check_memory(const std::vector<std::pair<std::uintptr_t, Extent>>& ranges, const std::string& where) const {
    auto what = [&](const Extent& e) {
      return std::string(e.grad ? "the gradient" : "the parameter") +
             (e.param < params_.size() ? " of " + detail::quote(params_[e.param].name) : std::string(e.grad ? "" : " itself"));
    };
    auto fail = [&](const Extent& mine, const Extent& other) {
      const bool tied = !mine.grad && !other.grad;
      throw InvalidArgument(where + "the memory of " + (mine.grad ? "its gradient" : "the parameter") + " overlaps " + what(other) +
                            (tied ? ": tied (shared) weights are registered once, under one name, with one gradient that holds "
                                    "the sum of the gradients of every use (as autograd accumulates them)"
                                  : ": every parameter and every gradient must be memory of its own"));
    };
    for (std::size_t j = 1; j < ranges.size(); ++j)
      if (ranges[j].first < ranges[j - 1].second.end) fail(ranges[j].second, ranges[j - 1].second);
    for (const auto& [begin, e] : ranges) {
      auto it = memory_.upper_bound(begin);
      if (it != memory_.begin() && std::prev(it)->second.end > begin) fail(e, std::prev(it)->second);
      if (it != memory_.end() && it->first < e.end) fail(e, it->second);
    }
  }
  // Whether a view's elements lie in memory in row-major order (dimensions of extent 1 aside).
  template <class View>
  static bool row_major(const View& v) {
    std::size_t strides[9] = {};  // stride(s) fills rank + 1 entries (Kokkos 3.4 to 5)
    v.stride(strides);
    std::size_t expect = 1;
    for (int d = static_cast<int>(View::rank) - 1; d >= 0; --d) {
      if (v.extent(d) > 1 && strides[d] != expect) return false;
      expect *= v.extent(d);
    }
    return true;
  }
  std::size_t index_of(const std::string& name, const char* call) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw InvalidArgument(std::string(call) + "(" + detail::quote(name) + "): no parameter of that name");
    return it->second;
  }
  std::size_t slot_index(std::string_view slot, const std::string& where) const {
    for (std::size_t k = 0; k < num_slots; ++k)
      if (Algo::slot_names[k] == slot) return k;
    throw InvalidArgument(where + "no state slot " + detail::quote(slot) + " in " + std::string(Algo::name));
  }
  template <class T>
  Plan<T>& plan_of() {
    if constexpr (std::is_same_v<T, float>) return plan_f32_;
    else return plan_f64_;
  }
  template <class T>
  const Plan<T>& plan_of() const {
    if constexpr (std::is_same_v<T, float>) return plan_f32_;
    else return plan_f64_;
  }
  template <class T>
  static std::vector<StateRun> state_runs_of(const Plan<T>& plan, std::size_t param) {
    std::vector<StateRun> out;
    for (const std::size_t r : plan.layout.runs_of(param)) out.push_back(plan.layout.state_runs[r]);
    return out;
  }
  // (Sources are non-const views: Kokkos 3.4 cannot copy from const views into or out of some memory spaces.)
  template <class T>
  void copy_to_host(const T* device, std::vector<T>& host) const {
    Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(host.data(), host.size()),
                      Kokkos::View<T*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(const_cast<T*>(device), host.size()));
  }
  template <class T>
  void copy_from_host(T* device, const std::vector<T>& host) const {
    Kokkos::deep_copy(Kokkos::View<T*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(device, host.size()),
                      Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(const_cast<T*>(host.data()), host.size()));
  }

  // Moved-from optimizers have no communicator or state left: a clear error instead of a crash.
  void require_live(const char* call) const {
    if (!live_.live)
      throw Error(std::string("ShardedOptimizer::") + call + "(): this optimizer was moved from; use the one it was moved to");
  }
  // Torch's checks of the algorithm, and every option finite: an infinite learning rate, say, would
  // turn the parameters into NaN at once, and could not be written to a checkpoint (JSON has no inf).
  static void validate_options(const options_type& o) {
    Algo::validate(o);  // first: torch's words for what torch rejects
    for (const auto& [n, v] : option_values<Algo>(o))
      if (!std::isfinite(v)) throw InvalidArgument("option " + n + " is not finite (" + detail::fmt(v) + ")");
  }
  void validate_groups() const {
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      try {
        validate_options(groups_[g].options);
      } catch (const InvalidArgument& e) {
        throw InvalidArgument("param group " + std::to_string(g) + ": " + e.what());
      }
    }
  }
  void check_absent_gradients() const {
    for (const auto& p : params_) {
      if (p.grad_present) continue;
      for (const auto& pc : p.pieces) {
        const bool written = p.dtype == Dtype::float32 ? detail::any_nonzero(exec_, static_cast<const float*>(pc.grad), pc.numel)
                                                       : detail::any_nonzero(exec_, static_cast<const double*>(pc.grad), pc.numel);
        if (written)
          throw InvalidArgument("step(): the gradient of " + detail::quote(p.name) +
                                " holds non-zero values but is marked absent since zero_grad(set_to_none=true); call "
                                "mark_grad_present(" + detail::quote(p.name) + ") after writing it, or zero_grad(false)");
      }
    }
  }

  // ---- planning ---------------------------------------------------------------------------------

  // Rebuilds the plans after the registration changed, carrying existing state over (collective).
  void replan_if_needed() {
    if (plans_valid_) {
      rebucket(plan_f32_);
      rebucket(plan_f64_);
      return;
    }
    replan<float>(plan_f32_);
    replan<double>(plan_f64_);
    plans_valid_ = true;
  }
  // After set_bucket_bytes(): the same state runs, new buckets (local: nothing moves).
  template <class T>
  void rebucket(Plan<T>& plan) {
    if (!plan.built || plan.layout.bucket_elements == bucket_elements<T>()) return;
    Plan<T> next = build_plan<T>();
    next.state = std::move(plan.state);
    plan = std::move(next);
  }

  // Rebuilds the plan of T after the registration changed and carries the existing state over
  // (collective): runs a rank keeps before and after are copied in place; under a partitioned
  // strategy the packed parameters' state goes to its new owners a window at a time (O(N/P) per
  // rank plus a bucket, never a whole tensor).
  template <class T>
  void replan(Plan<T>& plan) {
    Plan<T> next = build_plan<T>();
    if (plan.built) carry_state(plan, next);
    plan = std::move(next);
  }
  template <class T>
  void carry_state(const Plan<T>& old, Plan<T>& next) {
    for (std::size_t k = 0; k < num_slots; ++k) {
      bool any = false;
      for (const auto& prm : params_) any = any || (prm.dtype == dtype_of<T>() && prm.initialized[k]);
      if (any && next.layout.state_size > 0)
        next.state[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(Algo::slot_names[k]), next.layout.state_size);
    }
    // Where a run's elements sit in its parameter: the flat offset of a packed run, the position
    // among the parameter's local runs of a local one (local runs never change hands).
    auto positions = [](const Plan<T>& plan, std::size_t i) {
      std::vector<std::pair<std::int64_t, StateRun>> out;
      std::int64_t local = 0;
      for (const auto& r : state_runs_of(plan, i)) {
        out.push_back({r.packed ? r.src : local, r});
        if (!r.packed) local += r.length;
      }
      std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      return out;
    };
    const bool exchange = strategy() == Strategy::partitioned;
    std::vector<detail::Span> have, need;
    std::vector<T*> where;  // of each span's first element
    std::int64_t total = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& prm = params_[i];
      if (prm.dtype != dtype_of<T>()) continue;
      const auto before = positions(old, i), after = positions(next, i);
      for (std::size_t k = 0; k < num_slots; ++k) {
        if (!prm.initialized[k]) continue;  // the same on every rank, as `total` must be
        if (exchange && prm.shards.empty()) {  // packed: through the windows
          for (const auto& [at, r] : before) {
            have.push_back({total + at, r.length, where.size()});
            where.push_back(const_cast<T*>(old.state[k].data()) + r.state_offset);
          }
          for (const auto& [at, r] : after) {
            need.push_back({total + at, r.length, where.size()});
            where.push_back(next.state[k].data() + r.state_offset);
          }
          total += numel_of(i);
          continue;
        }
        // Every element this rank keeps after, it kept before: copies in place.
        std::size_t b = 0;
        for (const auto& [at, r] : after) {
          while (b < before.size() && before[b].first + before[b].second.length <= at) ++b;
          for (std::size_t c = b; c < before.size() && before[c].first < at + r.length; ++c) {
            const std::int64_t lo = std::max(at, before[c].first), hi = std::min(at + r.length, before[c].first + before[c].second.length);
            copy_in_space(next.state[k].data() + r.state_offset + (lo - at),
                          old.state[k].data() + before[c].second.state_offset + (lo - before[c].first), static_cast<std::size_t>(hi - lo));
          }
        }
      }
    }
    if (total == 0) return;
    std::vector<T> host;
    const std::int64_t lost = detail::redistribute<T>(
        comm_, total, std::max<std::int64_t>(1, bucket_elements<T>() / comm_.size()), std::move(have), std::move(need),
        [&](std::size_t id, std::int64_t off, T* out, std::size_t n) {
          host.resize(n);
          copy_to_host(where[id] + off, host);
          std::copy(host.begin(), host.end(), out);
        },
        [&](std::size_t id, std::int64_t off, const T* in, const char*, std::size_t n) {
          host.assign(in, in + n);
          copy_from_host(where[id] + off, host);
        });
    if (lost != 0)  // every element kept after was kept by some rank before
      throw Error("ShardedOptimizer: internal error: " + std::to_string(lost) + " elements of state found no previous owner");
  }
  // dst[0, n) = src[0, n), both in memory_space.
  template <class T>
  void copy_in_space(T* dst, const T* src, std::size_t n) const {
    if (n == 0) return;
    using U = Kokkos::View<T*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    Kokkos::deep_copy(U(dst, n), U(const_cast<T*>(src), n));
  }

  template <class T>
  Plan<T> build_plan() const {
    const int p = comm_.size(), me = comm_.rank();
    Plan<T> plan;
    plan.built = true;
    std::vector<detail::PlanTensor> tensors;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& prm = params_[i];
      if (prm.dtype != dtype_of<T>()) continue;
      detail::PlanTensor t{i, prm.shape, prm.shards.empty(), {}};
      for (const auto& pc : prm.pieces) t.pieces.push_back(static_cast<std::int64_t>(pc.numel));
      tensors.push_back(std::move(t));
    }
    plan.layout = detail::make_plan<Layout>(tensors, params_.size(), strategy(), p, me, bucket_elements<T>());
    bucket_tables(plan);
    return plan;
  }
  // The bucket size in elements of T (at least one).
  template <class T>
  std::int64_t bucket_elements() const {
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(bucket_bytes_ / sizeof(T)));
  }
  // The buffers and device tables of plan's buckets.
  template <class T>
  void bucket_tables(Plan<T>& plan) const {
    const auto& buckets = plan.layout.buckets;
    plan.tables.clear();
    plan.tables.resize(buckets.size());
    std::int64_t width = 0;
    for (const auto& b : buckets) width = std::max(width, b.width);
    const bool parted = strategy() == Strategy::partitioned;
    plan.depth = can_start && buckets.size() > 1 ? 2 : 1;
    for (std::size_t d = 0; d < plan.depth && width > 0; ++d) {
      plan.bucket[d] = Kokkos::View<T*, memory_space>("shardopt::bucket", static_cast<std::size_t>(width * (parted ? comm_.size() : 1)));
      if (parted) plan.reduced[d] = Kokkos::View<T*, memory_space>("shardopt::reduced", static_cast<std::size_t>(width));
    }
    using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
    for (std::size_t b = 0; b < buckets.size(); ++b) {
      T* buf = plan.bucket[b % plan.depth].data();
      std::vector<Run> pack, unpack;
      for (const auto& c : buckets[b].pack)
        pack.push_back({buf + c.at, static_cast<const T*>(params_[c.param].pieces[0].grad) + c.src, static_cast<std::size_t>(c.length)});
      for (const auto& c : buckets[b].unpack)
        unpack.push_back({static_cast<T*>(params_[c.param].pieces[0].value) + c.src, buf + c.at, static_cast<std::size_t>(c.length)});
      plan.tables[b].pack.assign(exec_, std::move(pack));
      plan.tables[b].unpack.assign(exec_, std::move(unpack));
    }
  }

  // ---- the step -------------------------------------------------------------------------------------

  // Through a class template, so that a wrong Algo is not looked into before step() is used.
  template <class T>
  using Scalars = typename detail::scalars_of<Algo, T>::type;

  // Whether the Comm can start collectives and complete them later (comm::Mpi): the step then keeps
  // two buckets in flight. Other communicators get the blocking loop.
  template <class T>
  static constexpr bool can_start_for = requires(Comm& c, std::span<const T> s, std::span<T> r) {
    c.start_reduce_scatter(s, r, ReduceOp::sum).wait();
    c.start_all_gather(s, r).wait();
    c.start_all_reduce(r, ReduceOp::sum).wait();
    requires std::same_as<decltype(c.start_all_gather(s, r)), decltype(c.start_reduce_scatter(s, r, ReduceOp::sum))>;
    requires std::same_as<decltype(c.start_all_gather(s, r)), decltype(c.start_all_reduce(r, ReduceOp::sum))>;
    requires std::is_default_constructible_v<decltype(c.start_all_gather(s, r))>;
    requires std::is_move_assignable_v<decltype(c.start_all_gather(s, r))>;
  };
  static constexpr bool can_start = can_start_for<float> && can_start_for<double>;
  // Host-memory communicators read and write buffers when called: the kernels before must be done.
  // Stream-ordered ones (comm::Nccl) enqueue behind them instead.
  void before_collective() const {
    if constexpr (!requires { requires static_cast<bool>(Comm::stream_ordered); }) exec_.fence();
  }

  // One step of the element type T: the runs stepped in place in one launch, then each bucket in
  // turn (pack, reduce, update, and under a partitioned strategy the all-gather and unpack).
  template <class T>
  void step_dtype(Plan<T>& plan) {
    init_state(plan);
    // The scalars of each (group, step) pair, computed once: parameters usually share both.
    std::vector<Scalars<T>> scalars;
    std::map<std::pair<std::size_t, std::int64_t>, unsigned> scalar_index;
    std::pair<std::size_t, std::int64_t> last_key{SIZE_MAX, -1};
    unsigned last = 0;
    auto segment = [&](const Param& prm, std::int64_t state_offset, std::size_t length) {
      detail::Segment<T, num_slots> s{};
      s.size = length;
      const std::pair<std::size_t, std::int64_t> key{prm.group, prm.step};
      if (key != last_key) {
        auto [it, added] = scalar_index.try_emplace(key, static_cast<unsigned>(scalars.size()));
        if (added) scalars.push_back(Algo::template prepare<T>(groups_[prm.group].options, prm.step + 1));
        last = it->second;
        last_key = key;
      }
      s.scalars = last;
      s.grad_divisor = T(1);
      for (std::size_t k = 0; k < num_slots; ++k) s.slot[k] = plan.state[k].size() ? plan.state[k].data() + state_offset : nullptr;
      return s;
    };
    std::vector<detail::Segment<T, num_slots>> segs;
    for (const auto& r : plan.layout.state_runs) {
      const auto& prm = params_[r.param];
      if (r.packed || !prm.grad_present) continue;
      auto s = segment(prm, r.state_offset, static_cast<std::size_t>(r.length));
      s.param = static_cast<T*>(prm.pieces[r.piece].value);
      s.grad = static_cast<const T*>(prm.pieces[r.piece].grad);
      segs.push_back(s);
    }
    // This rank's scalars are all known before the first launch (the packed parameters' are added
    // here, in state order), so every launch gets the same table.
    for (const auto& r : plan.layout.state_runs)
      if (r.packed && params_[r.param].grad_present) segment(params_[r.param], 0, 0);
    std::vector<detail::Segment<T, num_slots>> local = std::move(segs);
    segs.clear();
    const int p = comm_.size(), me = comm_.rank();
    const bool parted = strategy() == Strategy::partitioned;
    const T divisor = Layout::reduction == Reduction::mean ? static_cast<T>(p) : T(1);
    const std::size_t nb = plan.layout.buckets.size();
    auto buffer = [&](std::size_t b) { return plan.bucket[b % plan.depth].data(); };
    auto reduced = [&](std::size_t b) { return parted ? plan.reduced[b % plan.depth].data() : buffer(b); };
    auto width = [&](std::size_t b) { return static_cast<std::size_t>(plan.layout.buckets[b].width); };
    // Steps this rank's elements of bucket b once it is reduced, writing them also into this rank's
    // window of the buffer for the all-gather (with the parameters of absent gradients).
    auto update = [&](std::size_t b) {
      T* mine = parted ? buffer(b) + me * width(b) : nullptr;
      using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
      std::vector<Run> absent;  // not stepped, but the all-gather still carries this rank's part of it
      for (const auto& u : plan.layout.buckets[b].update) {
        const auto& prm = params_[u.param];
        T* value = static_cast<T*>(prm.pieces[0].value) + u.src;
        if (!prm.grad_present) {
          if (parted) absent.push_back({mine + u.at, value, static_cast<std::size_t>(u.length)});
          continue;
        }
        auto s = segment(prm, u.state_offset, static_cast<std::size_t>(u.length));
        s.param = value;
        s.grad = reduced(b) + u.at;
        s.grad_divisor = divisor;
        s.mirror = parted ? mine + u.at : nullptr;
        segs.push_back(s);
      }
      detail::fused_update<Algo>(exec_, std::move(segs), std::vector<Scalars<T>>(scalars), plan.tables[b].workspace);
      segs.clear();
      if (!parted) return;
      plan.tables[b].absent.assign(exec_, std::move(absent));
      detail::copy_runs(exec_, plan.tables[b].absent);
    };
    // The runs stepped in place, after the buckets: a collective that fails leaves them unchanged.
    auto step_local = [&](std::vector<detail::Segment<T, num_slots>>& l) {
      detail::fused_update<Algo>(exec_, std::move(l), std::vector<Scalars<T>>(scalars), plan.local);
    };
    auto reduce_span = [&](std::size_t b) { return std::span<T>(buffer(b), width(b) * (parted ? p : 1)); };
    auto gather_spans = [&](std::size_t b) {
      return std::pair{std::span<const T>(buffer(b) + me * width(b), width(b)), std::span<T>(buffer(b), width(b) * p)};
    };
    if constexpr (can_start) {
      // Pipelined: bucket b + 1 is packed and its reduction started before bucket b is stepped,
      // and bucket b's all-gather runs while bucket b + 1 is reduced and stepped (two buffers).
      using Request = decltype(comm_.start_all_gather(std::span<const T>(), std::span<T>()));
      std::array<Request, 2> reducing, gathering;
      auto start = [&](std::size_t b) {
        detail::copy_runs(exec_, plan.tables[b].pack);
        before_collective();
        if (parted)
          reducing[b % 2] = comm_.start_reduce_scatter(std::span<const T>(reduce_span(b)), std::span<T>(reduced(b), width(b)), ReduceOp::sum);
        else
          reducing[b % 2] = comm_.start_all_reduce(reduce_span(b), ReduceOp::sum);
      };
      auto finish = [&](std::size_t b) {
        if (!parted) return;
        gathering[b % 2].wait();
        detail::copy_runs(exec_, plan.tables[b].unpack);
      };
      if (nb > 0) start(0);
      for (std::size_t b = 0; b < nb; ++b) {
        if (b + 1 < nb) {
          if (b >= 1) finish(b - 1);  // frees the buffer bucket b + 1 packs into
          start(b + 1);
        }
        reducing[b % 2].wait();
        update(b);
        if (!parted) continue;
        before_collective();
        const auto [send, recv] = gather_spans(b);
        gathering[b % 2] = comm_.start_all_gather(send, recv);
      }
      if (nb >= 2) finish(nb - 2);
      if (nb >= 1) finish(nb - 1);
      step_local(local);
    } else {
      // One bucket at a time, with the Comm's blocking collectives.
      for (std::size_t b = 0; b < nb; ++b) {
        detail::copy_runs(exec_, plan.tables[b].pack);
        before_collective();
        if (parted) comm_.reduce_scatter(std::span<const T>(reduce_span(b)), std::span<T>(reduced(b), width(b)), ReduceOp::sum);
        else comm_.all_reduce(reduce_span(b), ReduceOp::sum);
        update(b);
        if (!parted) continue;
        before_collective();
        const auto [send, recv] = gather_spans(b);
        comm_.all_gather(send, recv);
        detail::copy_runs(exec_, plan.tables[b].unpack);
      }
      step_local(local);
    }
  }
  // Allocates the slots the coming step needs and sets the state of parameters stepped for the first
  // time to the algorithm's initial value.
  template <class T>
  void init_state(Plan<T>& plan) {
    for (std::size_t k = 0; k < num_slots; ++k) {
      // The runs to set, merged where contiguous with the same value: one fill per slot when every
      // parameter starts together, however many tensors there are.
      std::vector<std::tuple<std::int64_t, std::int64_t, T>> fills;  // offset, length, value
      for (std::size_t i = 0; i < params_.size(); ++i) {
        auto& prm = params_[i];
        if (prm.dtype != dtype_of<T>() || !prm.grad_present || prm.initialized[k]) continue;
        const auto& o = groups_[prm.group].options;
        if (!Algo::slot_used(o, k)) continue;
        if (plan.state[k].size() == 0 && plan.layout.state_size > 0)
          plan.state[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(Algo::slot_names[k]), plan.layout.state_size);
        const T value = static_cast<T>(Algo::initial_value(o, k));
        for (const std::size_t r : plan.layout.runs_of(i))
          fills.emplace_back(plan.layout.state_runs[r].state_offset, plan.layout.state_runs[r].length, value);
        prm.initialized[k] = true;
      }
      std::sort(fills.begin(), fills.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
      for (std::size_t f = 0; f < fills.size();) {
        auto [at, length, value] = fills[f];
        std::size_t g = f + 1;
        for (; g < fills.size() && std::get<0>(fills[g]) == at + length && std::get<2>(fills[g]) == value; ++g) length += std::get<1>(fills[g]);
        detail::fill(exec_, plan.state[k].data() + at, static_cast<std::size_t>(length), value);
        f = g;
      }
    }
  }


  // The global tensor of slot k of parameter i from every rank's runs (collective); the lowest rank
  // holding an element provides it.
  template <class T>
  std::vector<T> gather_param(const Plan<T>& plan, std::size_t i, std::size_t k) {
    const std::int64_t numel = numel_of(i);
    // This rank's contribution: (global offset, length) pairs and their values.
    std::vector<std::int64_t> head;
    std::vector<T> values;
    for (const auto& r : state_runs_of(plan, i)) {
      std::vector<T> v(static_cast<std::size_t>(r.length));
      if (plan.state[k].size()) copy_to_host(plan.state[k].data() + r.state_offset, v);
      for (const auto& [g, at, len] : segments(i, r)) head.insert(head.end(), {g, len});
      values.insert(values.end(), v.begin(), v.end());
    }
    const auto heads = all_gather_varying(head);
    const auto vals = all_gather_varying(values);
    std::vector<T> out(static_cast<std::size_t>(numel));
    std::vector<char> filled(static_cast<std::size_t>(numel), 0);
    for (std::size_t q = 0; q < heads.size(); ++q) {
      std::size_t at = 0;
      for (std::size_t h = 0; h + 1 < heads[q].size(); h += 2) {
        for (std::int64_t e = 0; e < heads[q][h + 1]; ++e, ++at) {
          const auto g = static_cast<std::size_t>(heads[q][h] + e);
          if (!filled[g]) out[g] = vals[q][at], filled[g] = 1;
        }
      }
    }
    return out;
  }
  template <class V>
  std::vector<std::vector<V>> all_gather_varying(const std::vector<V>& mine) {
    return detail::all_gather_varying(comm_, mine);
  }

  // ---- state dicts and checkpoints (private) ---------------------------------------------------------

  // What a state dict or file brings, parsed and checked against this optimizer.
  struct Incoming {
    std::vector<options_type> options;                 // per group
    std::vector<std::int64_t> steps;                   // per parameter
    std::vector<std::array<bool, num_slots>> present;  // per parameter: slots it brings
  };

  // Where parameter i's elements of a state run sit in the global tensor: (global offset, offset
  // within the run, length) triples, in the run's order.
  std::vector<std::array<std::int64_t, 3>> segments(std::size_t i, const StateRun& r) const {
    const auto& prm = params_[i];
    if (r.packed) return {{r.src, 0, r.length}};
    if (prm.shards.empty()) return {{0, 0, r.length}};
    std::vector<std::array<std::int64_t, 3>> out;  // a shard: one segment per row of its box
    const auto& m = prm.pieces[r.piece].meta;
    const std::int64_t row = m.sizes.back();
    for (std::int64_t at = 0; row > 0 && at < r.length; at += row) {
      std::int64_t g = 0, rem = at;
      std::vector<std::int64_t> idx(m.sizes.size());
      for (int d = static_cast<int>(m.sizes.size()) - 1; d >= 0; --d) {
        idx[d] = m.offsets[d] + rem % m.sizes[d];
        rem /= m.sizes[d];
      }
      for (std::size_t d = 0; d < idx.size(); ++d) g = g * prm.shape[d] + idx[d];
      out.push_back({g, at, row});
    }
    return out;
  }
  // Whether this rank writes run r to a checkpoint: each element is written by exactly one rank.
  bool writes(std::size_t i, const StateRun& r) const {
    if (!params_[i].shards.empty()) return true;  // shards tile the tensor: the holder writes
    if (r.packed && strategy() == Strategy::partitioned) return true;  // the owner
    return comm_.rank() == 0;                                                // copies: rank 0
  }
  std::int64_t numel_of(std::size_t i) const { return detail::numel(params_[i].shape); }

  StateDict skeleton() const {
    StateDict sd;
    sd.algorithm = std::string(Algo::name);
    for (const auto& g : groups_) sd.param_groups.push_back({option_values<Algo>(g.options), g.params_});
    for (const auto& p : params_) {
      ParamState ps;
      ps.dtype = dtype_name(p.dtype);
      ps.shape = p.shape;
      ps.step = p.step;
      sd.state.emplace(p.name, std::move(ps));
    }
    return sd;
  }

  template <class T>
  void local_parts(std::size_t i, std::size_t k, std::vector<StatePart>& parts) const {
    const auto& plan = plan_of<T>();
    for (const auto& r : state_runs_of(plan, i)) {
      std::vector<T> v(static_cast<std::size_t>(r.length));
      copy_to_host(plan.state[k].data() + r.state_offset, v);
      for (const auto& [g, at, len] : segments(i, r)) {
        if (!parts.empty() && parts.back().offset + static_cast<std::int64_t>(parts.back().values.size()) == g)
          parts.back().values.insert(parts.back().values.end(), v.begin() + at, v.begin() + at + len);
        else
          parts.push_back(StatePart{g, std::vector<double>(v.begin() + at, v.begin() + at + len)});
      }
    }
  }

  // Checks `sd` against this optimizer, listing every problem in one InvalidArgument.
  Incoming check_incoming(const StateDict& sd, bool check_parts, const std::string& where) const {
    std::vector<std::string> problems;
    Incoming in;
    if (sd.algorithm != Algo::name)
      problems.push_back("the state is of algorithm " + detail::quote(sd.algorithm) + " but this optimizer is " + std::string(Algo::name));
    if (sd.param_groups.size() != groups_.size())
      problems.push_back("the state has " + std::to_string(sd.param_groups.size()) + " param group(s) but this optimizer has " +
                         std::to_string(groups_.size()));
    std::unordered_map<std::string, std::size_t> group_of;
    for (std::size_t g = 0; g < sd.param_groups.size(); ++g) {
      const auto& sg = sd.param_groups[g];
      const std::string pg = "param group " + std::to_string(g) + ": ";
      options_type o = g < groups_.size() ? groups_[g].options : defaults_;
      std::vector<std::string> seen;
      for (const auto& [name, value] : sg.options) {
        seen.push_back(name);
        if (!std::isfinite(value)) problems.push_back(pg + "option " + name + " is not finite (" + detail::fmt(value) + ")");
        else if (!set_option<Algo>(o, name, value)) problems.push_back(pg + "unknown option " + detail::quote(name) + " for " + std::string(Algo::name));
        else if (is_bool_option(name) && value != 0.0 && value != 1.0)
          problems.push_back(pg + "option " + name + " is a flag but has the value " + detail::fmt(value));
      }
      for (const auto& [name, value] : option_values<Algo>(o))
        if (std::find(seen.begin(), seen.end(), name) == seen.end()) problems.push_back(pg + "option " + name + " is missing");
      try {
        Algo::validate(o);
      } catch (const InvalidArgument& e) {
        problems.push_back(pg + e.what());
      }
      if (g < groups_.size()) {
        std::string differ;
        auto same_slots = [](const options_type& x, const options_type& y) {
          for (std::size_t k = 0; k < num_slots; ++k)
            if (Algo::slot_used(x, k) != Algo::slot_used(y, k)) return false;
          return true;
        };
        if (!same_slots(o, groups_[g].options)) {
          // Name the options that decide the slots: those whose value alone changes them.
          const auto mine = option_values<Algo>(groups_[g].options), theirs = option_values<Algo>(o);
          for (std::size_t f = 0; f < mine.size(); ++f) {
            options_type one = groups_[g].options;
            set_option<Algo>(one, theirs[f].first, theirs[f].second);
            if (mine[f].second != theirs[f].second && !same_slots(one, groups_[g].options))
              differ += " " + mine[f].first + "=" + detail::fmt(theirs[f].second) + " (here " + detail::fmt(mine[f].second) + ")";
          }
          problems.push_back(pg + "the state's options keep different state slots than this optimizer's:" + differ);
        }
      }
      in.options.push_back(o);
      for (const auto& name : sg.params) {
        if (!group_of.emplace(name, g).second) {
          problems.push_back("parameter " + detail::quote(name) + " is listed in two param groups (" + std::to_string(group_of[name]) +
                             " and " + std::to_string(g) + ")");
          continue;
        }
        auto it = index_.find(name);
        if (it == index_.end()) problems.push_back(pg + "unknown parameter " + detail::quote(name));
        else if (params_[it->second].group != g)
          problems.push_back("parameter " + detail::quote(name) + " is in param group " + std::to_string(params_[it->second].group) +
                             " here but in group " + std::to_string(g) + " in the state");
      }
    }
    for (const auto& p : params_)
      if (!group_of.count(p.name)) problems.push_back("parameter " + detail::quote(p.name) + " is in no param group of the state");
    for (const auto& [name, ps] : sd.state)
      if (!index_.count(name)) problems.push_back("the state has unknown parameter " + detail::quote(name));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const std::string pp = "parameter " + detail::quote(p.name) + ": ";
      in.steps.push_back(0);
      in.present.push_back({});
      auto it = sd.state.find(p.name);
      if (it == sd.state.end()) {
        problems.push_back(pp + "no state for it");
        continue;
      }
      const auto& ps = it->second;
      const bool described = !(ps.dtype.empty() && ps.slots.empty());  // a file lists dtype and shape with the slots
      if (described && ps.dtype != dtype_name(p.dtype)) problems.push_back(pp + "the state is " + ps.dtype + " but the parameter is " + dtype_name(p.dtype));
      if (described && ps.shape != p.shape)
        problems.push_back(pp + "the state has shape " + detail::fmt_shape(ps.shape) + " but the parameter " + detail::fmt_shape(p.shape));
      if (ps.step < 0) problems.push_back(pp + "negative step count " + std::to_string(ps.step));
      in.steps.back() = ps.step;
      for (const auto& [slot, parts] : ps.slots) {
        std::size_t k = num_slots;
        for (std::size_t s = 0; s < num_slots; ++s)
          if (Algo::slot_names[s] == slot) k = s;
        if (k == num_slots) {
          problems.push_back(pp + "unknown state slot " + detail::quote(slot) + " for " + std::string(Algo::name));
          continue;
        }
        in.present.back()[k] = true;
        if (!check_parts) continue;
        for (const auto& part : parts)
          if (part.offset < 0 || part.offset + static_cast<std::int64_t>(part.values.size()) > numel_of(i)) {
            problems.push_back(pp + "slot " + slot + " has a part at offset " + std::to_string(part.offset) + " of " +
                               std::to_string(part.values.size()) + " elements, outside the " + std::to_string(numel_of(i)) + " elements");
            break;
          }
      }
      // A parameter has all of its state or none: a slot missing whole would silently restart at
      // its initial value while the step count goes on.
      const auto& present = in.present.back();
      if (std::find(present.begin(), present.end(), true) != present.end() && p.group < in.options.size())
        for (std::size_t k = 0; k < num_slots; ++k)
          if (!present[k] && Algo::slot_used(in.options[p.group], k))
            problems.push_back(pp + "state slot " + std::string(Algo::slot_names[k]) +
                               " is missing (the state has other slots of this parameter, and its options keep this one)");
    }
    if (!problems.empty()) {
      std::string msg = where + ": the state does not fit this optimizer (" + std::to_string(problems.size()) + " problem(s)):";
      for (std::size_t i = 0; i < problems.size() && i < 32; ++i) msg += "\n  - " + problems[i];
      if (problems.size() > 32) msg += "\n  - ...";
      throw InvalidArgument(msg);
    }
    return in;
  }
  static bool is_bool_option(std::string_view name) {
    bool is_bool = false;
    options_type o{};
    for_each_option<Algo>(o, [&](std::string_view n, auto& v) {
      if (n == name) is_bool = std::is_same_v<std::remove_reference_t<decltype(v)>, bool>;
    });
    return is_bool;
  }
  // Lines compared across ranks: every rank must load the same steps, options and slots.
  static std::string describe_incoming(const StateDict& sd) {
    std::string d = "loading algorithm " + sd.algorithm + "\n";
    for (std::size_t g = 0; g < sd.param_groups.size(); ++g) {
      d += "loading-group " + std::to_string(g);
      for (const auto& [n, v] : sd.param_groups[g].options) d += " " + n + "=" + detail::fmt(v);
      d += "\n";
    }
    for (const auto& [name, ps] : sd.state) {
      d += "loading " + name + " step=" + std::to_string(ps.step) + " slots=";
      for (const auto& [slot, parts] : ps.slots) d += slot + ",";
      d += "\n";
    }
    return d;
  }

  // The values of every present slot of every parameter for this rank's state runs, concatenated
  // in state_runs_of order, from the parts passed on all ranks. A rank whose own parts cover what
  // it keeps takes them (where they overlap, the part with the lowest offset, the earlier if
  // equal); slots some rank cannot fill from its own parts travel through detail::redistribute, a
  // window at a time (collective; no rank builds a whole tensor), and there the lowest rank's
  // parts count.
  std::vector<std::vector<double>> stage_from_dict(const StateDict& sd, const Incoming& in) {
    const std::size_t n = params_.size();
    std::vector<std::vector<double>> staged(n * num_slots);
    std::vector<std::int64_t> need(n * num_slots, 0);
    auto parts_of = [&](std::size_t j) -> const std::vector<StatePart>& {
      return sd.state.at(params_[j / num_slots].name).slots.at(std::string(Algo::slot_names[j % num_slots]));
    };
    // This rank's segments of parameter i: (global offset, length), in state order.
    auto own = [&](std::size_t i) {
      std::vector<std::pair<std::int64_t, std::int64_t>> out;
      for (const auto& r : runs_of(i))
        for (const auto& [g, at, len] : segments(i, r)) out.push_back({g, len});
      return out;
    };
    for (std::size_t j = 0; j < n * num_slots; ++j) {
      if (!in.present[j / num_slots][j % num_slots]) continue;
      std::vector<const StatePart*> parts;
      for (const auto& part : parts_of(j)) parts.push_back(&part);
      std::stable_sort(parts.begin(), parts.end(), [](const StatePart* a, const StatePart* b) { return a->offset < b->offset; });
      std::vector<std::int64_t> reach(parts.size());  // the furthest end of parts[0..q]: where to start looking
      for (std::size_t q = 0; q < parts.size(); ++q)
        reach[q] = std::max(q ? reach[q - 1] : 0, parts[q]->offset + static_cast<std::int64_t>(parts[q]->values.size()));
      auto& out = staged[j];
      std::vector<char> filled;
      for (const auto& [g, len] : own(j / num_slots)) {
        const std::size_t base = out.size();
        out.resize(base + static_cast<std::size_t>(len), 0.0);
        filled.resize(out.size(), 0);
        const auto first = static_cast<std::size_t>(std::upper_bound(reach.begin(), reach.end(), g) - reach.begin());
        for (std::size_t q = first; q < parts.size() && parts[q]->offset < g + len; ++q) {
          const StatePart* part = parts[q];
          const std::int64_t lo = std::max(g, part->offset), hi = std::min(g + len, part->offset + static_cast<std::int64_t>(part->values.size()));
          for (std::int64_t e = lo; e < hi; ++e) {
            const std::size_t at = base + static_cast<std::size_t>(e - g);
            if (!filled[at]) out[at] = part->values[static_cast<std::size_t>(e - part->offset)], filled[at] = 1;
          }
        }
      }
      need[j] = std::find(filled.begin(), filled.end(), 0) != filled.end() ? 1 : 0;
    }
    if (comm_.size() > 1 && !need.empty()) comm_.all_reduce(std::span<std::int64_t>(need), ReduceOp::max);
    // The slots some rank lacks elements of, concatenated: every rank's parts, a window at a time.
    std::vector<detail::Span> have, want;
    std::vector<const double*> from;
    std::vector<std::pair<double*, std::size_t>> to;  // where, and which slot (for the verdict)
    std::int64_t total = 0;
    for (std::size_t j = 0; j < n * num_slots; ++j) {
      if (!need[j]) continue;
      for (const auto& part : parts_of(j)) {
        have.push_back({total + part.offset, static_cast<std::int64_t>(part.values.size()), from.size()});
        from.push_back(part.values.data());
      }
      std::size_t at = 0;
      for (const auto& [g, len] : own(j / num_slots)) {
        want.push_back({total + g, len, to.size()});
        to.push_back({staged[j].data() + at, j});
        at += static_cast<std::size_t>(len);
      }
      total += numel_of(j / num_slots);
    }
    if (total == 0) return staged;
    std::vector<std::int64_t> absent(n * num_slots, 0);
    detail::redistribute<double>(
        comm_, total, std::max<std::int64_t>(1, bucket_elements<double>() / comm_.size()), std::move(have), std::move(want),
        [&](std::size_t id, std::int64_t off, double* out, std::size_t count) { std::copy(from[id] + off, from[id] + off + count, out); },
        [&](std::size_t id, std::int64_t off, const double* values, const char* filled, std::size_t count) {
          std::copy(values, values + count, to[id].first + off);
          absent[to[id].second] += std::count(filled, filled + count, 0);
        });
    // The same verdict on every rank: elements every rank keeps were counted on each (max), the
    // others on their one owner (sum).
    std::vector<std::int64_t> most(absent);
    comm_.all_reduce(std::span<std::int64_t>(absent), ReduceOp::sum);
    comm_.all_reduce(std::span<std::int64_t>(most), ReduceOp::max);
    std::string missing;
    for (std::size_t j = 0; j < n * num_slots; ++j) {
      const std::size_t i = j / num_slots;
      const bool copies = params_[i].shards.empty() && strategy() != Strategy::partitioned;
      const std::int64_t count = copies ? most[j] : absent[j];
      if (need[j] && count > 0)
        missing += "\n  - slot " + std::string(Algo::slot_names[j % num_slots]) + " of " + detail::quote(params_[i].name) + ": " +
                   std::to_string(count) + " of " + std::to_string(numel_of(i)) + " elements in no rank's parts";
    }
    if (!missing.empty())
      throw InvalidArgument("load_state_dict(): the parts passed on all ranks together do not cover the state:" + missing);
    return staged;
  }
  std::vector<StateRun> runs_of(std::size_t i) const {
    return params_[i].dtype == Dtype::float32 ? state_runs_of(plan_f32_, i) : state_runs_of(plan_f64_, i);
  }

  // Replaces state, steps and options; allocates first so that a failure changes nothing.
  void commit_loaded(const Incoming& in, std::vector<std::vector<double>> staged) {
    auto s32 = loaded_state<float>(plan_f32_, in, staged);
    auto s64 = loaded_state<double>(plan_f64_, in, staged);
    plan_f32_.state = std::move(s32);
    plan_f64_.state = std::move(s64);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      params_[i].step = in.steps[i];
      params_[i].initialized = in.present[i];
    }
    for (std::size_t g = 0; g < groups_.size(); ++g) groups_[g].options = in.options[g];
  }
  template <class T>
  std::array<Kokkos::View<T*, memory_space>, num_slots> loaded_state(const Plan<T>& plan, const Incoming& in,
                                                                    const std::vector<std::vector<double>>& staged) const {
    std::array<Kokkos::View<T*, memory_space>, num_slots> out;
    for (std::size_t k = 0; k < num_slots; ++k)
      for (std::size_t i = 0; i < params_.size(); ++i) {
        if (params_[i].dtype != dtype_of<T>() || !in.present[i][k]) continue;
        if (out[k].size() == 0 && plan.layout.state_size > 0)
          out[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(Algo::slot_names[k]), plan.layout.state_size);
        const auto& src = staged[i * num_slots + k];
        std::size_t at = 0;
        for (const auto& r : state_runs_of(plan, i)) {
          std::vector<T> v(src.begin() + at, src.begin() + at + r.length);
          copy_from_host(out[k].data() + r.state_offset, v);
          at += static_cast<std::size_t>(r.length);
        }
      }
    return out;
  }

  // ---- files

  struct FileLayout {
    detail::st::Header header;
    nlohmann::json checksums;  // "shardopt.checksums": the steps' now, the slots' once written
  };
  std::string slot_key(std::size_t i, std::size_t k) const { return "state." + params_[i].name + "." + std::string(Algo::slot_names[k]); }
  std::string step_key(std::size_t i) const { return "state." + params_[i].name + ".step"; }

  // The file's header, the same on every rank: tensors in registration order, slots, then the step.
  FileLayout file_layout() const {
    FileLayout f;
    std::uint64_t at = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::uint64_t bytes = static_cast<std::uint64_t>(numel_of(i)) * (params_[i].dtype == Dtype::float32 ? 4u : 8u);
      for (std::size_t k = 0; k < num_slots; ++k) {
        if (!params_[i].initialized[k]) continue;
        f.header.tensors[slot_key(i, k)] = {params_[i].dtype == Dtype::float32 ? "F32" : "F64", params_[i].shape, at, at + bytes};
        at += bytes;
      }
      f.header.tensors[step_key(i)] = {"I64", {}, at, at + 8};
      at += 8;
    }
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : groups_) {
      nlohmann::json options = nlohmann::json::object();
      options_type o = g.options;
      for_each_option<Algo>(o, [&](std::string_view n, auto v) { options[std::string(n)] = v; });
      groups.push_back({{"options", options}, {"params", g.params_}});
    }
    f.checksums = nlohmann::json::object();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      detail::st::Checksum step;
      step.add(0, &params_[i].step, 1);
      f.checksums[step_key(i)] = step.hex();
      for (std::size_t k = 0; k < num_slots; ++k)
        if (params_[i].initialized[k]) f.checksums[slot_key(i, k)] = detail::st::checksum_placeholder;
    }
    f.header.metadata = {{"shardopt.format", "1"},
                         {"shardopt.algorithm", std::string(Algo::name)},
                         {"shardopt.param_groups", groups.dump()},
                         {"shardopt.checksums", f.checksums.dump()}};
    f.header.data_start = detail::st::encode(f.header).size();
    f.header.data_size = at;
    return f;
  }

  template <class T, class File>
  void write_owned(File& f, std::size_t i, std::size_t k, std::uint64_t base, detail::st::Checksum& sum) const {
    const auto& plan = plan_of<T>();
    for (const auto& r : state_runs_of(plan, i)) {
      if (!writes(i, r)) continue;
      std::vector<T> v(static_cast<std::size_t>(r.length));
      copy_to_host(plan.state[k].data() + r.state_offset, v);
      for (const auto& [g, at, len] : segments(i, r)) {
        f.write_at(v.data() + at, static_cast<std::uint64_t>(len) * sizeof(T), base + static_cast<std::uint64_t>(g) * sizeof(T));
        sum.add(static_cast<std::uint64_t>(g), v.data() + at, static_cast<std::size_t>(len));
      }
    }
  }
  // The checksums of all ranks' parts added up (collective).
  std::vector<detail::st::Checksum> all_reduce_checksums(const std::vector<detail::st::Checksum>& mine) {
    // The low and high 32 bits summed apart (< P * 2^32 each: no overflow), then put together mod 2^64.
    std::vector<std::int64_t> lanes(2 * mine.size());
    for (std::size_t j = 0; j < mine.size(); ++j)
      lanes[2 * j] = static_cast<std::int64_t>(mine[j].sum & 0xffffffffu), lanes[2 * j + 1] = static_cast<std::int64_t>(mine[j].sum >> 32);
    if (comm_.size() > 1 && !lanes.empty()) comm_.all_reduce(std::span<std::int64_t>(lanes), ReduceOp::sum);
    std::vector<detail::st::Checksum> out(mine.size());
    for (std::size_t j = 0; j < mine.size(); ++j)
      out[j].sum = static_cast<std::uint64_t>(lanes[2 * j]) + (static_cast<std::uint64_t>(lanes[2 * j + 1]) << 32);
    return out;
  }
  // "shardopt.checksums" of a file, checked for form; empty for files written without (by other tools).
  static std::map<std::string, std::string> checksums_of(const detail::st::Header& h, const std::string& path) {
    std::map<std::string, std::string> out;
    auto it = h.metadata.find("shardopt.checksums");
    if (it == h.metadata.end()) return out;
    const auto j = nlohmann::json::parse(it->second, nullptr, false);
    if (j.is_discarded() || !j.is_object()) detail::st::fail(path, "shardopt.checksums is not a JSON object");
    for (const auto& [key, v] : j.items()) {
      if (!h.tensors.count(key)) detail::st::fail(path, "shardopt.checksums lists " + detail::quote(key) + ", which is no tensor of the file");
      if (!v.is_string() || v.template get<std::string>().size() != 16)
        detail::st::fail(path, "the checksum of " + detail::quote(key) + " is not 16 hexadecimal digits");
      out.emplace(key, v.template get<std::string>());
    }
    for (const auto& [key, t] : h.tensors)
      if (!out.count(key)) detail::st::fail(path, "shardopt.checksums has no checksum of " + detail::quote(key));
    return out;
  }
  [[noreturn]] static void checksum_mismatch(const std::string& path, const std::string& tensors) {
    detail::st::fail(path, "the data of " + tensors + " does not match its checksum (written incompletely, or changed since)");
  }
  // The slots' checksums (checksums_of) against what every rank read (`read`, all ranks' parts added up).
  void verify_checksums(const std::map<std::string, std::string>& sums, const std::string& path,
                        const std::vector<detail::st::Checksum>& read) const {
    std::string bad;
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < num_slots; ++k) {
        auto it = sums.find(slot_key(i, k));
        if (it != sums.end() && it->second != read[i * num_slots + k].hex()) bad += (bad.empty() ? "" : ", ") + detail::quote(it->first);
      }
    if (!bad.empty()) checksum_mismatch(path, bad);
  }

  // The state a checkpoint holds, without values: algorithm, groups, steps (checked against `sums`,
  // the file's checksums_of), slots present.
  static StateDict dict_from_header(const detail::st::File& file, const detail::st::Header& h,
                                    const std::map<std::string, std::string>& sums, const std::string& path) {
    auto meta = [&](const char* key) {
      auto it = h.metadata.find(key);
      if (it == h.metadata.end()) detail::st::fail(path, std::string("not a shardopt checkpoint: __metadata__ has no ") + key);
      return it->second;
    };
    if (meta("shardopt.format") != "1") detail::st::fail(path, "unsupported shardopt.format " + detail::quote(meta("shardopt.format")));
    StateDict sd;
    sd.algorithm = meta("shardopt.algorithm");
    nlohmann::json groups;
    try {
      groups = nlohmann::json::parse(meta("shardopt.param_groups"));
    } catch (const nlohmann::json::exception& e) {
      detail::st::fail(path, std::string("shardopt.param_groups is not valid JSON (") + e.what() + ")");
    }
    if (!groups.is_array()) detail::st::fail(path, "shardopt.param_groups is not a JSON array");
    for (const auto& g : groups) {
      if (!g.is_object() || !g.contains("options") || !g["options"].is_object() || !g.contains("params") || !g["params"].is_array())
        detail::st::fail(path, "a param group in shardopt.param_groups lacks its options object or params array");
      ParamGroupState pg;
      for (const auto& [n, v] : g["options"].items()) {
        if (!v.is_number() && !v.is_boolean()) detail::st::fail(path, "option " + detail::quote(n) + " is neither a number nor a boolean");
        pg.options.emplace_back(n, v.is_boolean() ? (v.template get<bool>() ? 1.0 : 0.0) : v.template get<double>());
      }
      for (const auto& n : g["params"]) {
        if (!n.is_string()) detail::st::fail(path, "a parameter name in shardopt.param_groups is not a string");
        pg.params.push_back(n.template get<std::string>());
      }
      sd.param_groups.push_back(std::move(pg));
    }
    std::set<std::string> with_step;
    for (const auto& [key, t] : h.tensors) {
      const auto dot = key.rfind('.');
      if (key.rfind("state.", 0) != 0 || dot == std::string::npos || dot <= 6)
        detail::st::fail(path, "tensor " + detail::quote(key) + " is not named state.<parameter>.<slot or step>");
      const std::string name = key.substr(6, dot - 6), what = key.substr(dot + 1);
      auto& ps = sd.state[name];
      if (what == "step") {
        if (t.dtype != "I64" || !t.shape.empty()) detail::st::fail(path, "tensor " + detail::quote(key) + " is not an int64 scalar");
        file.read_at(&ps.step, 8, h.data_start + t.begin);
        detail::st::Checksum step;
        step.add(0, &ps.step, 1);
        if (!sums.empty() && sums.at(key) != step.hex())
          checksum_mismatch(path, detail::quote(key));
        with_step.insert(name);
        continue;
      }
      if (t.dtype != "F32" && t.dtype != "F64") detail::st::fail(path, "tensor " + detail::quote(key) + " has dtype " + t.dtype + ", not F32 or F64");
      const std::string dtype = t.dtype == "F32" ? "float32" : "float64";
      if ((!ps.dtype.empty() && ps.dtype != dtype) || (!ps.slots.empty() && ps.shape != t.shape))
        detail::st::fail(path, "the state slots of " + detail::quote(name) + " differ in dtype or shape");
      ps.dtype = dtype;
      ps.shape = t.shape;
      ps.slots[what];
    }
    for (auto& [name, ps] : sd.state)
      if (!with_step.count(name)) detail::st::fail(path, "tensor state." + name + ".step is missing");
    return sd;
  }
  // The values of every slot the file holds for this rank's state runs, as stage_from_dict() gives
  // them, read from the file (only the elements this rank keeps).
  // `sums` gets the checksums of the elements this rank would write (each element counted on one rank).
  std::vector<std::vector<double>> stage_from_file(const detail::st::File& f, const detail::st::Header& h,
                                                   std::vector<detail::st::Checksum>& sums) const {
    std::vector<std::vector<double>> staged(params_.size() * num_slots);
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < num_slots; ++k) {
        auto it = h.tensors.find(slot_key(i, k));
        if (it == h.tensors.end()) continue;
        const std::size_t j = i * num_slots + k;
        if (params_[i].dtype == Dtype::float32) read_owned<float>(f, i, h.data_start + it->second.begin, staged[j], sums[j]);
        else read_owned<double>(f, i, h.data_start + it->second.begin, staged[j], sums[j]);
      }
    return staged;
  }
  template <class T>
  void read_owned(const detail::st::File& f, std::size_t i, std::uint64_t base, std::vector<double>& out, detail::st::Checksum& sum) const {
    std::vector<T> v;
    for (const auto& r : state_runs_of(plan_of<T>(), i)) {
      const bool counted = writes(i, r);
      for (const auto& [g, at, len] : segments(i, r)) {
        v.resize(static_cast<std::size_t>(len));
        f.read_at(v.data(), static_cast<std::uint64_t>(len) * sizeof(T), base + static_cast<std::uint64_t>(g) * sizeof(T));
        if (counted) sum.add(static_cast<std::uint64_t>(g), v.data(), v.size());
        out.insert(out.end(), v.begin(), v.end());
      }
    }
  }

  // Runs `body` on every rank and agrees on the outcome: any rank's failure is thrown on every rank
  // after `cleanup` (run on every rank).
  template <class Cleanup, class Body>
  void io_phase(detail::Op op, Cleanup&& cleanup, Body&& body, const std::string& extra = {}) {
    detail::LocalError err;
    try {
      body();
    } catch (const IoError& e) {
      err = {detail::LocalError::io, e.what()};
    } catch (const std::exception& e) {
      err = {detail::LocalError::other, e.what()};
    }
    try {
      agree(op, err, extra);
    } catch (...) {
      cleanup();
      throw;
    }
  }
  static void checkpoint_hook(const char* point) {
    if (detail::checkpoint_test_hook) detail::checkpoint_test_hook(point);
  }

  // ---- agreement ------------------------------------------------------------------------------------

  // Registration (cached), options and gradient presence, one line each.
  std::string describe() const {
    if (registration_.empty()) {
      for (const auto& p : params_) {
        registration_ += "param " + p.name + " " + dtype_name(p.dtype) + " " + detail::fmt_shape(p.shape) + " group " +
                         std::to_string(p.group);
        if (!p.shards.empty()) {
          std::string s;
          for (const auto& m : p.shards) s += detail::describe(m) + ";";
          registration_ += " sharded(" + std::to_string(p.shards.size()) + " shards, digest " + std::to_string(detail::fnv1a(s)) + ")";
        }
        registration_ += "\n";
      }
      registration_digest_ = detail::fnv1a(registration_);
    }
    std::string d = registration_ + "bucket_bytes " + std::to_string(bucket_bytes_) + "\n";
    for (std::size_t g = 0; g < groups_.size(); ++g)
      d += "group " + std::to_string(g) + " " + describe_options<Algo>(groups_[g].options) + "\n";
    for (const auto& p : params_) d += "grad " + p.name + (p.grad_present ? " present\n" : " absent\n");
    return d;
  }
  std::uint64_t digest() const {
    if (registration_.empty()) describe();
    std::uint64_t h = detail::fnv1a(std::to_string(bucket_bytes_), registration_digest_);
    for (const auto& g : groups_) h = detail::fnv1a(describe_options<Algo>(g.options), h);
    std::string presence(params_.size(), '0');
    for (std::size_t i = 0; i < params_.size(); ++i) presence[i] = params_[i].grad_present ? '1' : '0';
    return detail::fnv1a(presence, h);
  }
  // `extra`: further lines every rank must agree on (what load_state_dict() or load() brings).
  // Every call counts (seq_), on every rank alike, failed ones too: the agreement checks the count.
  void agree(detail::Op op, const detail::LocalError& err, const std::string& extra = {}) {
    const std::uint64_t d = extra.empty() ? digest() : detail::fnv1a(extra, digest());
    control_bytes_ += detail::agree(comm_, detail::CallId{op, ++seq_}, d, err, [this, &extra] { return describe() + extra; },
                                    collective_timeout_);
  }

  // False in a moved-from optimizer (a move clears the source's flag).
  struct LiveFlag {
    bool live = true;
    LiveFlag() = default;
    LiveFlag(LiveFlag&& o) noexcept : live(std::exchange(o.live, false)) {}
    LiveFlag& operator=(LiveFlag&& o) noexcept {
      if (this != &o) live = std::exchange(o.live, false);
      return *this;
    }
  };
  LiveFlag live_;
  Comm comm_;
  execution_space exec_;
  options_type defaults_;
  std::vector<ParamGroup> groups_;
  std::vector<Param> params_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::uintptr_t, Extent> memory_;  // every registered range (memory_ranges), keyed by begin
  mutable std::string registration_;
  mutable std::uint64_t registration_digest_ = 0;
  std::uint64_t control_bytes_ = 0;
  std::int64_t seq_ = 0;  // collective calls so far
  double collective_timeout_ = detail::default_collective_timeout();
  std::size_t bucket_bytes_ = default_bucket_bytes;
  bool plans_valid_ = false;
  Plan<float> plan_f32_;
  Plan<double> plan_f64_;
};

}  // namespace shardopt
