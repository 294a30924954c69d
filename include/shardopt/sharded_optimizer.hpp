#pragma once
/// @file
/// @brief shardopt::ShardedOptimizer<Algo, Layout, Comm, ExecSpace>: the optimizer users compose.

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
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
#include <shardopt/error.hpp>
#include <shardopt/options.hpp>
#include <shardopt/sharded_tensor.hpp>

namespace shardopt {

template <class Optimizer>
class StepContext;

/// @brief An optimizer over named parameters, plain or sharded, composed of three policies.
///
/// @tparam Algo the update rule (policies/shardopt/algo/): SGD, Adagrad, Adam, AdamW, RMSprop, or yours.
/// @tparam Layout which part of the optimizer state each rank owns and what a step communicates
///         (policies/shardopt/layout/): Replicated, or yours.
/// @tparam Comm the communicator (policies/shardopt/comm/): Serial, Mpi, or yours.
/// @tparam ExecSpace the Kokkos execution space the step runs in; parameters, gradients and state
///         live in its memory space.
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

 public:
  using algorithm_type = Algo;                          ///< the Algo policy
  using layout_type = Layout;                           ///< the Layout policy
  using comm_type = Comm;                               ///< the Comm policy
  using execution_space = ExecSpace;                    ///< where the step runs
  using memory_space = typename ExecSpace::memory_space;  ///< where parameters and state live
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
  explicit ShardedOptimizer(Comm comm, const options_type& defaults = {}, ExecSpace exec = ExecSpace())
      : comm_(std::move(comm)), exec_(std::move(exec)), defaults_(defaults) {
    if constexpr (valid_) Algo::validate(defaults);
    groups_.emplace_back();
    groups_[0].options = defaults;
  }
  ShardedOptimizer(const ShardedOptimizer&) = delete;             ///< not copyable (the state would be shared)
  ShardedOptimizer& operator=(const ShardedOptimizer&) = delete;  ///< not copyable
  ShardedOptimizer(ShardedOptimizer&&) noexcept = default;        ///< movable
  ShardedOptimizer& operator=(ShardedOptimizer&&) noexcept = default;  ///< movable

  /// @brief Adds a param group with the complete options `options` and returns its index.
  ///
  /// Fields left out of a designated initializer take torch.optim's defaults. To start from this
  /// optimizer's defaults instead (torch's behaviour for missing keys), pass a callable.
  /// @throws InvalidArgument if an option is invalid (nothing is added).
  int add_param_group(const options_type& options) {
    Algo::validate(options);
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
    static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename PView::memory_space>::accessible &&
                      Kokkos::SpaceAccessibility<ExecSpace, typename GView::memory_space>::accessible,
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
    Param p;
    p.name = name;
    p.group = static_cast<std::size_t>(group);
    p.dtype = dtype_of<T>();
    p.shape = shape;
    p.keepalive = std::make_shared<std::pair<PView, GView>>(param, grad);
    p.pieces.push_back(Piece{param.data(), grad.data(), param.size(), ShardMetadata{std::vector<std::int64_t>(shape.size(), 0), shape, comm_.rank()}, {}});
    commit_param(std::move(p));
  }

  /// @brief Registers the local shards of `tensor` under `name`, in group `group`.
  ///
  /// Each rank registers the same sharded tensor; step() updates only the local shards.
  /// @throws InvalidArgument naming the parameter if the name is taken, the group is unknown or the
  ///         tensor was not sharded over a communicator of this size and rank.
  template <class T, class MS>
  void add_param(const std::string& name, const ShardedTensor<T, MS>& tensor, int group = 0) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "ShardedOptimizer::add_param: the sharded tensor's element type must be float or double.");
    static_assert(Kokkos::SpaceAccessibility<ExecSpace, MS>::accessible,
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
      p.pieces.push_back(Piece{s.value.data(), s.grad.data(), s.value.size(), s.metadata, {}});
    }
    commit_param(std::move(p));
  }

  /// @brief Zero-fills every gradient; with `set_to_none` (the default, as in torch) also marks
  /// them absent until mark_grad_present().
  void zero_grad(bool set_to_none = true) {
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
  /// throws the same error and nothing is changed.
  void step() {
    detail::LocalError err;
    std::vector<Allocation> fresh;
    try {
      validate_groups();
      check_absent_gradients();
      fresh = allocate_missing_state();
    } catch (const InvalidArgument& e) {
      err = {detail::LocalError::invalid_argument, e.what()};
    } catch (const std::bad_alloc&) {
      err = {detail::LocalError::other, "step(): out of memory allocating optimizer state"};
    } catch (const std::exception& e) {
      err = {detail::LocalError::other, e.what()};
    }
    agree(detail::Op::step, err);
    for (auto& a : fresh) params_[a.param].pieces[a.piece].state[a.slot] = std::move(a.view);
    StepContext<ShardedOptimizer> ctx(*this);
    Layout::step(ctx);
    for (auto& p : params_)
      if (p.grad_present) ++p.step;
  }

  /// @brief Calls `closure()` once (it recomputes the loss and gradients), then step(); returns its result.
  template <class Closure>
    requires std::invocable<Closure&>
  auto step(Closure&& closure) {
    if constexpr (std::is_void_v<std::invoke_result_t<Closure&>>) {
      closure();
      step();
    } else {
      auto loss = closure();
      step();
      return loss;
    }
  }

  /// @brief Collective check that every rank registered the same parameters (names, order, dtypes,
  /// shapes, sharding, groups) with the same options; throws CollectiveMismatch on every rank if not.
  void check_consistency() {
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

  /// @brief A host copy of state slot `slot` of parameter `name`, local piece `piece` (0 for a
  /// whole tensor; the index among this rank's shards otherwise); empty if not allocated yet.
  /// @throws InvalidArgument for an unknown name, slot or piece, or a `T` other than the parameter's type.
  template <class T>
  std::vector<T> local_state(const std::string& name, std::string_view slot, std::size_t piece = 0) const {
    const auto& p = params_[index_of(name, "local_state")];
    const std::string where = "local_state(" + detail::quote(name) + "): ";
    if (p.dtype != dtype_of<T>()) throw InvalidArgument(where + "the parameter is " + dtype_name(p.dtype));
    const std::size_t k = slot_index(slot, where);
    if (piece >= p.pieces.size())
      throw InvalidArgument(where + "piece " + std::to_string(piece) + " of " + std::to_string(p.pieces.size()));
    const auto& buf = p.pieces[piece].state[k];
    std::vector<T> out(buf.size() / sizeof(T));
    if (!out.empty())
      Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(out.data(), out.size()),
                        Kokkos::View<const T*, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                            reinterpret_cast<const T*>(buf.data()), out.size()));
    return out;
  }
  /// Bytes of optimizer state this rank holds.
  std::size_t state_bytes() const {
    std::size_t b = 0;
    for (const auto& p : params_)
      for (const auto& pc : p.pieces)
        for (const auto& s : pc.state) b += s.size();
    return b;
  }
  /// Bytes this optimizer's agreement messages added to `comm().stats().bytes_sent`.
  std::uint64_t control_bytes() const noexcept { return control_bytes_; }
  /// The communicator.
  Comm& comm() noexcept { return comm_; }
  /// The execution space instance.
  const ExecSpace& execution_space_instance() const noexcept { return exec_; }

 private:
  template <class Optimizer>
  friend class StepContext;

  enum class Dtype { float32, float64 };
  template <class T>
  static constexpr Dtype dtype_of() {
    return std::is_same_v<T, float> ? Dtype::float32 : Dtype::float64;
  }
  static const char* dtype_name(Dtype d) { return d == Dtype::float32 ? "float32" : "float64"; }

  using StateView = Kokkos::View<char*, memory_space>;  // bytes of one state slot of one piece
  struct Piece {
    void* value;
    void* grad;
    std::size_t numel;
    ShardMetadata meta;
    std::array<StateView, num_slots> state;
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
  };
  struct Allocation {
    std::size_t param, piece, slot;
    StateView view;
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
    params_.reserve(params_.size() + 1);
    groups_[p.group].params_.reserve(groups_[p.group].params_.size() + 1);
    index_.emplace(p.name, params_.size());  // may throw: nothing changed yet
    groups_[p.group].params_.push_back(p.name);
    params_.push_back(std::move(p));
    registration_.clear();
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

  void validate_groups() const {
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      try {
        Algo::validate(groups_[g].options);
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
  // State the coming step needs and does not have yet, allocated and initialized but not installed.
  std::vector<Allocation> allocate_missing_state() const {
    std::vector<Allocation> out;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      if (!p.grad_present) continue;
      const auto& o = groups_[p.group].options;
      for (std::size_t j = 0; j < p.pieces.size(); ++j)
        for (std::size_t k = 0; k < num_slots; ++k) {
          const auto& pc = p.pieces[j];
          if (!Algo::slot_used(o, k) || pc.numel == 0 || pc.state[k].size() > 0) continue;
          const std::size_t elem = p.dtype == Dtype::float32 ? sizeof(float) : sizeof(double);
          StateView v(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::state." + p.name + "." + std::string(Algo::slot_names[k])),
                      pc.numel * elem);
          const double init = Algo::initial_value(o, k);
          if (p.dtype == Dtype::float32) detail::fill(exec_, reinterpret_cast<float*>(v.data()), pc.numel, static_cast<float>(init));
          else detail::fill(exec_, reinterpret_cast<double*>(v.data()), pc.numel, init);
          out.push_back({i, j, k, std::move(v)});
        }
    }
    exec_.fence();
    return out;
  }

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
    std::string d = registration_;
    for (std::size_t g = 0; g < groups_.size(); ++g)
      d += "group " + std::to_string(g) + " " + describe_options<Algo>(groups_[g].options) + "\n";
    for (const auto& p : params_) d += "grad " + p.name + (p.grad_present ? " present\n" : " absent\n");
    return d;
  }
  std::uint64_t digest() const {
    if (registration_.empty()) describe();
    std::uint64_t h = registration_digest_;
    for (const auto& g : groups_) h = detail::fnv1a(describe_options<Algo>(g.options), h);
    std::string presence(params_.size(), '0');
    for (std::size_t i = 0; i < params_.size(); ++i) presence[i] = params_[i].grad_present ? '1' : '0';
    return detail::fnv1a(presence, h);
  }
  void agree(detail::Op op, const detail::LocalError& err) {
    control_bytes_ += detail::agree(comm_, op, digest(), err, [this] { return describe(); });
  }

  Comm comm_;
  ExecSpace exec_;
  options_type defaults_;
  std::vector<ParamGroup> groups_;
  std::vector<Param> params_;
  std::unordered_map<std::string, std::size_t> index_;
  mutable std::string registration_;
  mutable std::uint64_t registration_digest_ = 0;
  std::uint64_t control_bytes_ = 0;
};

/// @brief What a Layout's `step(ctx)` can do: the communicator and the fused update.
///
/// Layouts call these members; ShardedOptimizer calls `Layout::step(ctx)` once per step() after
/// every check has passed.
/// @tparam Optimizer the ShardedOptimizer being stepped.
template <class Optimizer>
class StepContext {
 public:
  /// Wraps `opt` for one step.
  explicit StepContext(Optimizer& opt) : opt_(opt) {}
  /// The communicator.
  typename Optimizer::comm_type& comm() { return opt_.comm_; }
  /// @brief Updates every local piece (whole tensor or local shard) of every parameter whose
  /// gradient is present, in place, with its own gradient: one fused kernel per element type.
  void update_local() {
    run<float>();
    run<double>();
  }

 private:
  using Algo = typename Optimizer::algorithm_type;
  static constexpr std::size_t N = Optimizer::num_slots;
  template <class T>
  using Scalars = decltype(Algo::template prepare<T>(std::declval<const typename Algo::Options&>(), 1));

  template <class T>
  void run() {
    std::vector<detail::Segment<T, N, Scalars<T>>> segs;
    for (const auto& p : opt_.params_) {
      if (!p.grad_present || p.dtype != Optimizer::template dtype_of<T>()) continue;
      const auto scalars = Algo::template prepare<T>(opt_.groups_[p.group].options, p.step + 1);
      for (const auto& pc : p.pieces) {
        if (pc.numel == 0) continue;
        detail::Segment<T, N, Scalars<T>> s{static_cast<T*>(pc.value), static_cast<const T*>(pc.grad), {}, pc.numel, scalars};
        for (std::size_t k = 0; k < N; ++k) s.slot[k] = pc.state[k].size() ? reinterpret_cast<T*>(pc.state[k].data()) : nullptr;
        segs.push_back(s);
      }
    }
    detail::fused_update<Algo, T, N>(opt_.exec_, segs);
  }
  Optimizer& opt_;
};

}  // namespace shardopt
