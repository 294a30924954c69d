// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::ShardedOptimizer<Algo, Layout, Comm, ExecSpace>: the optimizer users compose.
///
/// This file holds the public API, its documentation and the order of operations of each call.
/// The members behind them live in one header per concern (docs/internals.md, "Where each part
/// lives"), included at the end: detail/optimizer/registration.hpp, planning.hpp, step.hpp,
/// state.hpp, checkpoint.hpp and agreement.hpp.

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/consensus.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/detail/fused_update.hpp>
#include <shardopt/detail/grad_norm.hpp>
#include <shardopt/detail/tensor_sums.hpp>
#include <shardopt/detail/lanes.hpp>
#include <shardopt/detail/plan.hpp>
#include <shardopt/detail/registry.hpp>
#include <shardopt/detail/checkpoint_format.hpp>
#include <shardopt/error.hpp>
#include <shardopt/grad_scaler.hpp>
#include <shardopt/layout_support.hpp>
#include <shardopt/options.hpp>
#include <shardopt/sharded_tensor.hpp>
#include <shardopt/state_dict.hpp>

namespace shardopt {

// Kokkos' half types, where they are 16-bit types of their own (KOKKOS_HALF_T_IS_FLOAT false: the
// CUDA, HIP and SYCL backends); elsewhere they are `float`, parameters already. The same formats.
#if defined(KOKKOS_HALF_T_IS_FLOAT) && !KOKKOS_HALF_T_IS_FLOAT
/// Kokkos' binary16 type: stepped as shardopt::float16.
template <>
struct element_alias<Kokkos::Experimental::half_t> {
  using type = float16;  ///< IEEE binary16
};
#endif
#if defined(KOKKOS_BHALF_T_IS_FLOAT) && !KOKKOS_BHALF_T_IS_FLOAT
/// Kokkos' bfloat16 type: stepped as shardopt::bfloat16.
template <>
struct element_alias<Kokkos::Experimental::bhalf_t> {
  using type = bfloat16;  ///< bfloat16
};
#endif

/// @brief Gradient clipping by the global norm, as set by ShardedOptimizer::clip_grad_norm().
struct ClipGradNorm {
  double max_norm;          ///< the largest total norm left unscaled (infinity: never scale, only measure)
  double norm_type = 2.0;   ///< p of the p-norm: a finite p > 0, or INFINITY for the largest |g|
  bool error_if_nonfinite = false;  ///< throw (on every rank, stepping nothing) if the total norm is NaN or infinite
  bool operator==(const ClipGradNorm&) const = default;  ///< equal settings
};

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
  /// Index of the `master` slot: the float32 master weights of 16-bit parameters (bfloat16,
  /// float16), after the algorithm's slots, sharded like them. Other parameters have none.
  static constexpr std::size_t master_slot = num_slots;
  /// Number of slots a parameter may have: the algorithm's and `master`.
  static constexpr std::size_t all_slots = num_slots + 1;
  /// The name of slot k: the algorithm's `slot_names[k]`, or "master".
  static constexpr std::string_view slot_name(std::size_t k) noexcept {
    if constexpr (num_slots > 0) {
      if (k < num_slots) return Algo::slot_names[k];
    }
    return "master";
  }
  /// Number of per-tensor scalar states of the algorithm (`Algo::scalar_state_names`; 0 without).
  static constexpr std::size_t num_scalar_states = detail::safe_algorithm_traits<Algo>::num_scalar_states;
  /// Number of per-tensor sums of the algorithm (`Algo::tensor_sum_names`; 0 for elementwise ones).
  static constexpr std::size_t num_tensor_sums = detail::safe_algorithm_traits<Algo>::num_tensor_sums;

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
  /// Both are Kokkos views of rank 1 to 4 of float, double, shardopt::bfloat16 or shardopt::float16
  /// (or a type declared the same bits as one of those two by shardopt::element_alias, as
  /// Kokkos::Experimental::half_t and bhalf_t are on CUDA and HIP), of the same type and shape, contiguous, in memory the execution space can access. The optimizer
  /// keeps the views (and so the allocations) and updates `param` in place. The gradient starts
  /// present. 16-bit parameters are stepped through float32 master weights (slot `master`, sharded
  /// like the state, started from the parameter at its first step) and written back rounded.
  /// @throws InvalidArgument naming the parameter if the name is taken or empty, the group is
  ///         unknown, the shapes differ, a view is not contiguous or the gradient aliases the parameter.
  template <class PView, class GView>
  void add_param(const std::string& name, const PView& param, const GView& grad, int group = 0);

  /// @brief Registers the local shards of `tensor` under `name`, in group `group`.
  ///
  /// Each rank registers the same sharded tensor; step() updates only the local shards.
  /// @throws InvalidArgument naming the parameter if the name is taken, the group is unknown or the
  ///         tensor was not sharded over a communicator of this size and rank.
  template <class T, class MS>
  void add_param(const std::string& name, const ShardedTensor<T, MS>& tensor, int group = 0);

  /// @brief Zero-fills every gradient; with `set_to_none` (the default, as in torch) also marks
  /// them absent until mark_grad_present().
  void zero_grad(bool set_to_none = true);

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

  /// @brief One step with dynamic loss scaling: torch's `scaler.unscale_(opt)` (with clipping on,
  /// before it), `scaler.step(opt)` and `scaler.update()` in one call.
  ///
  /// The reduced gradients are multiplied by `scaler.inv_scale()` where the reduction copies them
  /// back (the gradients stepped in place, in place: no extra pass for the others), every gradient
  /// a rank steps is checked as under set_skip_nonfinite(true), the step is skipped on every rank if
  /// any is not finite, and `scaler.update(skipped)` follows on every rank. The clipping norm and
  /// the update see the unscaled gradients, with torch's bits. The scale must be the same on every
  /// rank (step() checks it). A disabled scaler makes this step().
  void step(GradScaler& scaler) {
    require_live("step");
    if (!scaler.is_enabled()) return step_after({}, nullptr);
    const std::int64_t before = skipped_steps_;
    step_after({}, nullptr, scaler.inv_scale());
    scaler.update(skipped_steps_ != before);
  }

  /// @brief Clips the gradients of every following step by their global norm, as
  /// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)` on the
  /// unsharded model just before `optimizer.step()`.
  ///
  /// step() then reduces every gradient first, computes the total norm of all present gradients
  /// (each element counted once: a sharded tensor over all its shards, a plain tensor as reduced,
  /// and under Replicated rank 0's copy) and steps with every gradient multiplied by
  /// `min(1, max_norm / (total + 1e-6))`, the same coefficient on every rank, inside the fused
  /// update. The norm is the norm of the per-tensor norms, each in its tensor's dtype, the total in
  /// float32 if every present gradient is float32 and in float64 otherwise, as torch computes it;
  /// its bits are the same at every world size and under every layout (docs/numerics.md). With
  /// clipping on, step() uses the gradients of plain tensors under reducing layouts as scratch: after
  /// it, this rank's reduced share of them holds the reduced (averaged) gradient. Like the bucket
  /// size, the setting must be the same on every rank (step() checks it).
  /// @throws InvalidArgument, changing nothing, if `max_norm` is negative or NaN, or `norm_type` is
  ///         not a p > 0 or INFINITY.
  void clip_grad_norm(double max_norm, double norm_type = 2.0, bool error_if_nonfinite = false) {
    require_live("clip_grad_norm");
    const std::string call = "clip_grad_norm(max_norm=" + detail::fmt(max_norm) + ", norm_type=" + detail::fmt(norm_type) + "): ";
    if (!(max_norm >= 0)) throw InvalidArgument(call + "max_norm must be >= 0 (inf only measures the norm)");
    if (!(norm_type > 0)) throw InvalidArgument(call + "norm_type must be a p > 0 or inf");
    clip_ = ClipGradNorm{max_norm, norm_type, error_if_nonfinite};
  }
  /// @brief Turns gradient clipping off for the following steps.
  void no_clip_grad_norm() noexcept { clip_.reset(); }
  /// The clipping of the following steps, if on; see clip_grad_norm().
  const std::optional<ClipGradNorm>& clip_grad_norm_setting() const noexcept { return clip_; }
  /// @brief The total norm of the gradients of the last step that clipped (what torch's
  /// clip_grad_norm_ returns, in its dtype), the same on every rank; also set by a step that threw
  /// for a non-finite norm.
  /// @throws Error if no step has clipped yet.
  double last_grad_norm() const {
    if (!last_grad_norm_) throw Error("last_grad_norm(): no step has clipped gradients yet (call clip_grad_norm() before step())");
    return *last_grad_norm_;
  }

  /// @brief With `on`, a step whose gradients hold a NaN or an infinity anywhere, on any rank, after
  /// their reduction, is skipped on every rank: parameters, state, scalar state (NAdam's
  /// mu_product) and step counts stay bitwise as they were, and skipped_steps() counts it. This is
  /// what a 16-bit training loop needs when a gradient overflows (torch.amp.GradScaler skips such a
  /// step the same way). The gradients checked are the ones each rank steps: its reduced share of
  /// the plain tensors under reducing layouts, its own shards, and under Replicated its own copies
  /// (a NaN in one rank's copy skips the step everywhere).
  ///
  /// Like clipping, it makes step() reduce every gradient first (into the gradients' memory: after
  /// step(), this rank's reduced share of the plain tensors under reducing layouts holds the reduced
  /// gradient) and read the gradients once more for the check (the largest |g| per tensor). The
  /// ranks' verdicts travel in the collective clipping already runs (no extra collective); without
  /// clipping, in one all-reduce of one integer per step (one process: none). With clipping on, a
  /// step is skipped only for a non-finite gradient element: a total norm that overflows float64
  /// (or float32, for float32 gradients) from finite gradients is clipped as torch clips it, or
  /// raises under error_if_nonfinite; a skipped step never raises. Like clipping, the setting must
  /// be the same on every rank (step() checks it). Off by default.
  void set_skip_nonfinite(bool on) {
    require_live("set_skip_nonfinite");
    skip_nonfinite_ = on;
  }
  /// Whether steps with a non-finite gradient are skipped; see set_skip_nonfinite().
  bool skip_nonfinite() const noexcept { return skip_nonfinite_; }
  /// @brief The steps skipped for a non-finite gradient since this optimizer was made, the same on
  /// every rank (not part of the state dict or checkpoints).
  std::int64_t skipped_steps() const noexcept { return skipped_steps_; }

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
  /// @brief The per-tensor scalar state `key` (one of `Algo::scalar_state_names`, e.g. NAdam's
  /// `mu_product`) of parameter `name`, the same on every rank; its initial value under the
  /// parameter's group options until the parameter's first step.
  /// @throws InvalidArgument for an unknown name or key.
  double scalar_state(const std::string& name, std::string_view key) const;

  /// @brief A host copy of the part of state slot `slot` of parameter `name` that this rank keeps,
  /// run `run` of it (0 for a whole tensor or the first local shard; see local_state_runs()); empty
  /// if the slot is not allocated for it yet.
  /// @throws InvalidArgument for an unknown name, slot or run, or a `T` other than the parameter's type.
  template <class T>
  std::vector<T> local_state(const std::string& name, std::string_view slot, std::size_t run = 0) const;
  /// Number of runs of state this rank keeps for `name` (see local_state()).
  std::size_t local_state_runs(const std::string& name) const {
    return runs_of(index_of(name, "local_state_runs")).size();
  }

  /// @brief The whole of state slot `slot` of parameter `name` as a row-major global tensor, on every
  /// rank (collective); empty if not allocated yet. Where ranks hold copies, rank order decides.
  template <class T>
  std::vector<T> gathered_state(const std::string& name, std::string_view slot);

  // ---- state dicts and checkpoints --------------------------------------------------------------

  /// @brief This rank's optimizer state keyed by parameter names (local: not collective).
  ///
  /// Holds the algorithm's name, every param group (options and parameter names) and, for every
  /// registered parameter, its dtype, global shape, step count, the parts of each existing
  /// state slot that this rank keeps, at their offsets in the global tensor, and the algorithm's
  /// per-tensor scalar state (whole: every rank keeps it). Under DataParallel and Replicated that
  /// is every slot whole; under FlatPartition and Chunk, this rank's share.
  StateDict state_dict() const;

  /// @brief The whole optimizer state on every rank, every slot as one part covering the global
  /// tensor (collective), like torch's full state dict of a sharded model.
  StateDict full_state_dict();

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
    agree(detail::Op::load_state_dict, err, detail::describe_incoming(sd));
    replan_if_needed();
    commit_loaded(in, stage_from_dict(sd, in));
  }

  /// @brief Writes the whole optimizer state to one safetensors file at `path` (collective).
  ///
  /// Each state slot is stored as its global tensor `state.<name>.<slot>` (the parameter's dtype),
  /// each step count as the int64 scalar `state.<name>.step`, each per-tensor scalar state (e.g.
  /// NAdam's `mu_product`) as the float64 scalar `state.<name>.<key>`; the algorithm and the param groups
  /// (options and names) are in the header's `__metadata__`. Every rank writes the elements it
  /// keeps directly at their offsets (with MPI-IO where the Comm offers `open_shared`, as comm::Mpi
  /// does; with pwrite otherwise). The write is atomic: a temporary file next to `path` is
  /// written, flushed and fsynced, then renamed over `path`; a crash at any point leaves the
  /// previous file intact. Stale temporary files of earlier interrupted saves are removed.
  /// PyTorch reads the file with `safetensors` (see scripts/torch_interop.py).
  /// @throws IoError on every rank if any rank fails; `path` is then unchanged.
  void save(const std::string& path) { save_checkpoint(path, nullptr); }

  /// @brief save(path), with the state of `scaler` (torch's `scaler.state_dict()`: `scale`,
  /// `growth_factor`, `backoff_factor`, `growth_interval`, `_growth_tracker`) in the header's
  /// `__metadata__` as the JSON object `shardopt.grad_scaler`, so that load(path, scaler) resumes
  /// the loss scale with the parameters (collective). A disabled scaler, as torch's, has no state:
  /// the file is then the one save(path) writes.
  /// @throws CollectiveMismatch on every rank, writing nothing, if the ranks' scalers differ or
  ///         some rank calls save(path) without one; IoError as save(path).
  void save(const std::string& path, const GradScaler& scaler) { save_checkpoint(path, &scaler); }

  /// @brief Loads a checkpoint written by save() under any layout and world size (collective).
  ///
  /// Every rank validates the header (size limits, offsets inside the file and not overlapping,
  /// known dtypes, shapes) and the contents against this optimizer as load_state_dict() does, then
  /// reads only the elements it keeps. Replaces the state, step counts and param-group options.
  /// @throws IoError for a missing, truncated or corrupt file, InvalidArgument if it does not fit
  ///         this optimizer (every problem listed); on every rank, with nothing changed.
  void load(const std::string& path) { load_checkpoint(path, nullptr); }

  /// @brief load(path), and `scaler` takes the state save(path, scaler) wrote beside the
  /// optimizer's (`shardopt.grad_scaler`; torch's `scaler.load_state_dict()`). A disabled scaler
  /// takes nothing, as torch's. The optimizer and the scaler change together or not at all.
  /// @throws InvalidArgument on every rank, with nothing changed, if `scaler` is enabled and the
  ///         file holds no scaler state (saved without a scaler, or with a disabled one) or one
  ///         GradScaler::load_state_dict() rejects; CollectiveMismatch if some rank calls
  ///         load(path) without a scaler; otherwise as load(path).
  void load(const std::string& path, GradScaler& scaler) { load_checkpoint(path, &scaler); }

  /// Bytes of optimizer state this rank holds.
  std::size_t state_bytes() const {
    std::size_t b = 0;
    detail::for_each_lane(lanes_, [&](const auto& lane) {
      for (const auto& v : lane.state) b += v.size() * sizeof(typename std::decay_t<decltype(lane)>::value_type);
    });
    return b;
  }
  /// Bytes this optimizer's agreement messages added to `comm().stats().bytes_sent`.
  std::uint64_t control_bytes() const noexcept { return control_bytes_; }
  /// The communicator.
  Comm& comm() noexcept { return comm_; }
  /// The execution space instance.
  const execution_space& execution_space_instance() const noexcept { return exec_; }

 private:
  // ---- the lanes: one per element type (detail/lanes.hpp) -----------------------------------------

  using Param = detail::Param<all_slots>;
  using StateRun = detail::StateRun;

  // The device tables of one bucket: gradients in, the other ranks' parameters out, this rank's
  // parameters not stepped (absent gradients) into the all-gather, and the update's tables.
  template <class T>
  struct BucketTables {
    detail::CopyTable<T, execution_space, memory_space> pack, unpack, absent;
    detail::CopyTable<T, execution_space, memory_space> restore;  // this rank's reduced window into the gradients (clipping)
    typename detail::fused_workspace_for<valid_, Algo, T, num_slots, execution_space, memory_space>::type workspace;
  };
  // Everything of the element type T: the plan, the buffers and tables a step needs (rebuilt when
  // the registration or the bucket size changes) and the state (carried over when the
  // registration changes).
  template <class T>
  struct Lane {
    using value_type = T;
    bool built = false;
    detail::PlanLayout layout;  // the pure plan: state runs, buckets (detail/plan.hpp)
    // Bucket buffers (P windows each under a partitioned strategy) and this rank's reduced windows:
    // two when the Comm can start collectives (bucket b uses buffer b % depth), else one.
    std::array<Kokkos::View<T*, memory_space>, 2> bucket, reduced;
    std::size_t depth = 1;
    std::vector<BucketTables<T>> tables;  // per bucket
    typename detail::fused_workspace_for<valid_, Algo, T, num_slots, execution_space, memory_space>::type local;  // runs in place
    std::array<Kokkos::View<T*, memory_space>, all_slots> state;  // the algorithm's slots, then the master weights
    std::array<Kokkos::View<T*, memory_space>, all_slots> loading;  // commit_loaded's new state, until every lane has it
    detail::CopyTable<T, execution_space, memory_space> zero;     // every gradient of this type, zero-filled by zero_grad
    detail::NormWorkspace<T, execution_space, memory_space> norm;  // the gradient norms' leaves (clipping)
    detail::CopyTable<T, execution_space, memory_space> unscale;  // the gradients stepped in place, unscaled (GradScaler)
    // With the reduction first (clipping, skip_nonfinite, a GradScaler, per-tensor sums), the
    // reduced gradients of 16-bit parameters in float32, laid out like the state (allocated at the
    // first such step), and the table that widens those stepped in place into it.
    Kokkos::View<T*, memory_space> grad32;
    detail::CopyTable<T, execution_space, memory_space> widen;
    // Pass 1 of an algorithm with per-tensor sums.
    typename detail::accumulate_workspace_for<valid_ && (num_tensor_sums > 0), Algo, T, num_slots, execution_space, memory_space>::type
        accumulate;
    std::size_t zero_of = SIZE_MAX;                                // the number of parameters `zero` was built for
  };
  template <class T>
  Lane<T>& lane() noexcept {
    static_assert(std::is_same_v<T, detail::compute_t<T>>,
                  "shardopt: the state of bfloat16 and float16 parameters (and their master weights) is float32: ask for float");
    return std::get<Lane<T>>(lanes_);
  }
  template <class T>
  const Lane<T>& lane() const noexcept {
    return std::get<Lane<T>>(lanes_);
  }
  // The layout's strategy; on one process every layout steps the tensors in place (nothing to
  // reduce or gather, so no packing either).
  Strategy strategy() const noexcept { return comm_.size() == 1 ? Strategy::local : Layout::strategy; }

  // ---- registration (detail/optimizer/registration.hpp) --------------------------------------------

  void check_new_name(const std::string& name, int group) const;
  void commit_param(Param&& p);
  std::size_t index_of(const std::string& name, const char* call) const;
  std::size_t slot_index(std::string_view slot, const std::string& where) const;
  // Moved-from optimizers have no communicator or state left: a clear error instead of a crash.
  void require_live(const char* call) const {
    if (!live_.live)
      throw Error(std::string("ShardedOptimizer::") + call + "(): this optimizer was moved from; use the one it was moved to");
  }
  static void validate_options(const options_type& o);
  void validate_groups() const;
  void check_absent_gradients() const;
  std::int64_t numel_of(std::size_t i) const { return params_[i].numel(); }

  // ---- planning (detail/optimizer/planning.hpp) -----------------------------------------------------

  void replan_if_needed();
  template <class T>
  void rebucket(Lane<T>& plan);
  template <class T>
  void replan(Lane<T>& plan);
  template <class T>
  void carry_state(const Lane<T>& old, Lane<T>& next);
  template <class T>
  Lane<T> build_plan() const;
  template <class T>
  void bucket_tables(Lane<T>& plan) const;
  template <class T>
  void restore_tables(Lane<T>& plan) const;
  template <class T>
  void init_state(Lane<T>& plan);
  // The bucket size in elements of T (at least one).
  template <class T>
  std::int64_t bucket_elements() const {
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(bucket_bytes_ / sizeof(T)));
  }
  // Whether parameter i is stepped in the lane of T; whether it keeps master weights (16-bit).
  template <class T>
  bool in_lane(const Param& p) const noexcept {
    return detail::lane_dtype(p.dtype) == detail::dtype_of<T>();
  }
  static bool has_master(const Param& p) noexcept { return detail::storage_of(p.dtype) != detail::Storage::lane; }
  // Why state of another type than T's was asked of p.
  static std::string state_type_message(const Param& p) {
    return "the parameter is " + detail::dtype_name(p.dtype) +
           (has_master(p) ? " (its state and master weights are float32)" : std::string());
  }
  // Whether slot k exists for parameter p under options o: the algorithm's slot_used, or `master`.
  static bool slot_exists(const Param& p, const options_type& o, std::size_t k) {
    if constexpr (num_slots > 0) {
      if (k < num_slots) return Algo::slot_used(o, k);
    }
    return has_master(p);
  }
  // Element `offset` of a piece's value or gradient memory (of parameter p, stepped in the lane of T).
  template <class T>
  static void* element(const Param& p, void* base, std::int64_t offset) noexcept {
    return detail::element_at<T>(base, detail::storage_of(p.dtype), static_cast<std::size_t>(offset));
  }
  // This rank's state runs of parameter i, in state order.
  template <class T>
  static std::vector<StateRun> state_runs_of(const Lane<T>& plan, std::size_t i) {
    std::vector<StateRun> out;
    for (const std::size_t r : plan.layout.runs_of(i)) out.push_back(plan.layout.state_runs[r]);
    return out;
  }
  std::vector<StateRun> runs_of(std::size_t i) const {
    std::vector<StateRun> out;
    detail::visit_lane(params_[i].dtype, [&](auto t) { out = state_runs_of(lane<typename decltype(t)::type>(), i); });
    return out;
  }
  // Where parameter i's elements of a state run sit in the global tensor (detail::global_segments).
  std::vector<std::array<std::int64_t, 3>> segments(std::size_t i, const StateRun& r) const {
    return detail::global_segments(params_[i], r);
  }
  // Copies between memory_space and the host, and within memory_space (detail/fused_update.hpp).
  template <class T>
  void copy_to_host(const T* device, std::vector<T>& host) const {
    detail::copy_n<Kokkos::HostSpace, memory_space>(host.data(), device, host.size());
  }
  template <class T>
  void copy_from_host(T* device, const std::vector<T>& host) const {
    detail::copy_n<memory_space, Kokkos::HostSpace>(device, host.data(), host.size());
  }
  template <class T>
  void copy_in_space(T* dst, const T* src, std::size_t n) const {
    detail::copy_n<memory_space, memory_space>(dst, src, n);
  }

  // ---- the step (detail/optimizer/step.hpp) ---------------------------------------------------------

  void step_after(detail::LocalError err, std::exception_ptr thrown, std::optional<float> unscale = {});
  std::vector<std::vector<double>> advanced_scalar_state() const;
  // How step_lane gets its gradients: reduced by it, or already reduced (and averaged) in the
  // gradients' memory by clip_lane, to be multiplied by `scale`.
  template <class T>
  struct Clipped {
    bool pre_reduced = false;
    T scale = T(1);
  };
  template <class T>
  struct SegmentTable;
  template <class T>
  void step_lane(Lane<T>& plan, const std::vector<std::vector<double>>& next, Clipped<T> clipped, const std::vector<double>& factors);
  double clip_coefficient(detail::NormPieces& pieces, bool& nonfinite);
  bool nonfinite_anywhere(bool mine);
  template <class T>
  void reduce_lane(Lane<T>& plan, detail::NormPieces* pieces, detail::NormPieces* check, T unscale);
  std::vector<double> tensor_factors(const std::vector<std::vector<double>>& next, double coef);
  template <class T>
  void accumulate_lane(Lane<T>& plan, const std::vector<std::vector<double>>& next, Clipped<T> clipped, detail::SumPieces& sums,
                       detail::SumPieces& own);
  // Whether parameter i's per-tensor sums are this rank's own: a whole tensor stepped in place.
  bool own_sums(std::size_t i) const { return params_[i].shards.empty() && strategy() == Strategy::local; }

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
  template <class Types>
  struct CanStart;
  template <class... Ts>
  struct CanStart<std::tuple<Ts...>> {
    static constexpr bool value = (can_start_for<Ts> && ...);
  };
  static constexpr bool can_start = CanStart<detail::LaneTypes>::value;  // for every lane's type
  // Host-memory communicators read and write buffers when called: the kernels before must be done.
  // Stream-ordered ones (comm::Nccl) enqueue behind them instead.
  void before_collective() const {
    if constexpr (!requires { requires static_cast<bool>(Comm::stream_ordered); }) exec_.fence();
  }

  // ---- state queries, state dicts (detail/optimizer/state.hpp) ---------------------------------------

  // What a state dict or file brings, parsed and checked against this optimizer.
  struct Incoming {
    std::vector<options_type> options;                 // per group
    std::vector<std::int64_t> steps;                   // per parameter
    std::vector<std::array<bool, all_slots>> present;  // per parameter: slots it brings
    std::vector<std::vector<double>> scalar_state;     // per parameter: its scalar state (empty before its first step)
  };
  template <class T>
  std::vector<T> gather_param(const Lane<T>& plan, std::size_t i, std::size_t k);
  StateDict skeleton() const;
  template <class T>
  void local_parts(std::size_t i, std::size_t k, std::vector<StatePart>& parts) const;
  Incoming check_incoming(const StateDict& sd, bool check_parts, const std::string& where) const;
  static bool is_bool_option(std::string_view name);
  std::vector<std::vector<double>> stage_from_dict(const StateDict& sd, const Incoming& in);
  void commit_loaded(const Incoming& in, std::vector<std::vector<double>> staged);
  void save_checkpoint(const std::string& path, const GradScaler* scaler);
  void load_checkpoint(const std::string& path, GradScaler* scaler);
  template <class T>
  std::array<Kokkos::View<T*, memory_space>, all_slots> loaded_state(const Lane<T>& plan, const Incoming& in,
                                                                    const std::vector<std::vector<double>>& staged) const;

  // ---- the checkpoint file (detail/optimizer/checkpoint.hpp) -----------------------------------------

  std::string slot_key(std::size_t i, std::size_t k) const { return detail::slot_key(params_[i].name, slot_name(k)); }
  std::string step_key(std::size_t i) const { return detail::step_key(params_[i].name); }
  std::string scalar_key(std::size_t i, std::size_t k) const {
    return detail::slot_key(params_[i].name, detail::scalar_state_names_of<Algo>()[k]);
  }
  // Whether this rank writes run r to a checkpoint: each element is written by exactly one rank.
  bool writes(std::size_t i, const StateRun& r) const {
    if (!params_[i].shards.empty()) return true;                       // shards tile the tensor: the holder writes
    if (r.packed && strategy() == Strategy::partitioned) return true;  // the owner
    return comm_.rank() == 0;                                          // copies: rank 0
  }
  detail::FileLayout file_layout(const std::string& grad_scaler) const;  // grad_scaler: its JSON, or empty
  template <class T, class File>
  void write_owned(File& f, std::size_t i, std::size_t k, std::uint64_t base, detail::st::Checksum& sum) const;
  void verify_checksums(const std::map<std::string, std::string>& sums, const std::string& path,
                        const std::vector<detail::st::Checksum>& read) const;
  std::vector<std::vector<double>> stage_from_file(const detail::st::File& f, const detail::st::Header& h,
                                                   std::vector<detail::st::Checksum>& sums) const;
  template <class T>
  void read_owned(const detail::st::File& f, std::size_t i, std::uint64_t base, std::vector<double>& out,
                  detail::st::Checksum& sum) const;
  static void checkpoint_hook(const char* point) {
    if (detail::checkpoint_test_hook) detail::checkpoint_test_hook(point);
  }

  // ---- agreement (detail/optimizer/agreement.hpp) -----------------------------------------------------

  std::string describe() const;
  std::string describe_clip() const;
  std::string describe_skip() const;
  std::uint64_t digest() const;
  void agree(detail::Op op, const detail::LocalError& err, const std::string& extra = {});
  template <class Cleanup, class Body>
  void io_phase(detail::Op op, Cleanup&& cleanup, Body&& body, const std::string& extra = {});

  // ---- data ---------------------------------------------------------------------------------------------
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
  detail::MemoryMap memory_;  // every registered range
  mutable std::string registration_;
  mutable std::uint64_t registration_digest_ = 0;
  std::uint64_t control_bytes_ = 0;
  std::int64_t seq_ = 0;  // collective calls so far
  double collective_timeout_ = detail::default_collective_timeout();
  std::size_t bucket_bytes_ = default_bucket_bytes;
  bool plans_valid_ = false;
  std::optional<ClipGradNorm> clip_;      // gradient clipping of the following steps
  std::optional<double> last_grad_norm_;  // the total norm of the last step that clipped
  bool skip_nonfinite_ = false;           // skip steps with a non-finite gradient
  std::int64_t skipped_steps_ = 0;        // steps skipped for non-finite gradients
  detail::lanes_of<Lane> lanes_;
};

}  // namespace shardopt

#include <shardopt/detail/optimizer/registration.hpp>
#include <shardopt/detail/optimizer/planning.hpp>
#include <shardopt/detail/optimizer/step.hpp>
#include <shardopt/detail/optimizer/state.hpp>
#include <shardopt/detail/optimizer/checkpoint.hpp>
#include <shardopt/detail/optimizer/agreement.hpp>
