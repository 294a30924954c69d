// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What a policy must provide: category tags, `is_..._v` traits, C++20 concepts, and the
/// checks behind the one-line compile errors a wrong policy gets.
///
/// A policy declares what it is by a typedef, as Kokkos types do:
/// - an optimizer algorithm: `using algorithm_category = shardopt::elementwise_algorithm_tag;`
/// - a sharding layout: `using layout_category = shardopt::layout_policy_tag;`
/// - a communicator: `using communicator_category = shardopt::communicator_tag;`

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <Kokkos_Macros.hpp>

#include <shardopt/layout_support.hpp>

namespace shardopt {

/// @brief Category of algorithms whose update of one element reads only that element's
/// parameter, gradient and state (SGD, Adagrad, Adam, AdamW, RMSprop, Lion, ...).
struct elementwise_algorithm_tag {};
/// @brief Category of sharding layouts (see policies/shardopt/layout/).
struct layout_policy_tag {};
/// @brief Category of communicators (see policies/shardopt/comm/).
struct communicator_tag {};

/// @brief The reduction a collective applies.
enum class ReduceOp { sum, min, max };

/// @brief A pointer to each state slot of one element, handed to `Algo::update`.
/// @tparam T the element type (float or double).
/// @tparam N the number of state slots of the algorithm.
template <class T, std::size_t N>
struct StateSlots {
  T* base[N > 0 ? N : 1];  ///< base[k]: the first element of the run in slot k (null if the slot is unused).
  std::size_t index;       ///< this element's index within the run
  /// The element's value in slot `k` (only for slots the options use).
  KOKKOS_INLINE_FUNCTION constexpr T& operator[](std::size_t k) const { return base[k][index]; }
};

namespace detail {
template <class A> concept has_algorithm_category = requires { typename A::algorithm_category; };
template <class A> concept declares_elementwise =
    has_algorithm_category<A> && std::same_as<typename A::algorithm_category, elementwise_algorithm_tag>;
template <class A> concept has_options = requires { typename A::Options; } &&
                                         std::default_initializable<typename A::Options>;
template <class P> concept has_name = requires { { P::name } -> std::convertible_to<std::string_view>; };
template <class A> concept has_option_fields = requires { std::tuple_size<std::remove_cvref_t<decltype(A::option_fields)>>::value; };
template <class A> concept has_slot_names = requires {
  { std::span<const std::string_view>(A::slot_names) };
};
template <class A> concept has_validate = requires(const typename A::Options& o) { A::validate(o); };
template <class A> concept has_slot_used = requires(const typename A::Options& o, std::size_t k) {
  { A::slot_used(o, k) } -> std::convertible_to<bool>;
  { A::initial_value(o, k) } -> std::convertible_to<double>;
};
// Per-tensor scalar state (optional): `scalar_state_names`, their `initial_scalar_state(o, k)` and
// `advance_scalar_state(o, step, std::span<double>)`; an algorithm with it takes the values in
// `prepare<T>(o, step, std::span<const double>)`.
template <class A> concept has_scalar_state = requires {
  { std::span<const std::string_view>(A::scalar_state_names) };
};
template <class A> concept has_scalar_state_hooks =
    requires(const typename A::Options& o, std::size_t k, std::int64_t step, std::span<double> s) {
      { A::initial_scalar_state(o, k) } -> std::convertible_to<double>;
      A::advance_scalar_state(o, step, s);
    };
template <class A, class T> concept has_prepare =
    (!has_scalar_state<A> && requires(const typename A::Options& o, std::int64_t step) { A::template prepare<T>(o, step); }) ||
    (has_scalar_state<A> &&
     requires(const typename A::Options& o, std::int64_t step, std::span<const double> s) { A::template prepare<T>(o, step, s); });
// Algo::prepare<T> of step `step`, with the tensor's scalar state where the algorithm keeps one.
template <class A, class T>
auto prepare_step(const typename A::Options& o, std::int64_t step, [[maybe_unused]] std::span<const double> scalar_state) {
  if constexpr (has_scalar_state<A>) return A::template prepare<T>(o, step, scalar_state);
  else return A::template prepare<T>(o, step);
}
// The scalar state a tensor starts with under options `o` (empty without one), and its advance to step `step`.
template <class A>
std::vector<double> initial_scalar_state_of([[maybe_unused]] const typename A::Options& o) {
  if constexpr (has_scalar_state<A>) {
    std::vector<double> v(std::size(A::scalar_state_names));
    for (std::size_t k = 0; k < v.size(); ++k) v[k] = A::initial_scalar_state(o, k);
    return v;
  } else {
    return {};
  }
}
template <class A>
void advance_scalar_state_of([[maybe_unused]] const typename A::Options& o, [[maybe_unused]] std::int64_t step,
                             [[maybe_unused]] std::vector<double>& state) {
  if constexpr (has_scalar_state<A>) A::advance_scalar_state(o, step, std::span<double>(state));
}
// Per-tensor sums (optional): `tensor_sum_names`. Such an algorithm steps in two passes: pass 1,
// `accumulate<T>(s, param, grad, state, double* terms)`, gives the element's term of each sum and
// writes nothing; the engine completes every sum over the whole tensor, whatever the sharding;
// `tensor_factor<T>(o, std::span<const double> sums)` (host, once per tensor and step) turns them
// into one value, and pass 2, `update<T>(s, param, grad, state, factor)`, takes it.
template <class A> concept has_tensor_sums = requires {
  { std::span<const std::string_view>(A::tensor_sum_names) };
};
template <class A, class T> using prepared_t = decltype(prepare_step<A, T>(std::declval<const typename A::Options&>(), 1, {}));
template <class A, class T, std::size_t N> concept has_tensor_sum_hooks =
    requires(const prepared_t<A, T>& s, const T& cp, T& p, T g, StateSlots<T, N> st, double* terms, const typename A::Options& o,
             std::span<const double> sums) {
      A::template accumulate<T>(s, cp, g, st, terms);
      { A::template tensor_factor<T>(o, sums) } -> std::convertible_to<T>;
      A::template update<T>(s, p, g, st, T(1));
    };
// Algo::update takes StateSlots<T, N> (has_update: with N = std::size(slot_names)); with per-tensor
// sums, the two passes.
template <class A, class T, std::size_t N> concept has_update_with_slots =
    has_prepare<A, T> &&
    ((!has_tensor_sums<A> && requires(const prepared_t<A, T>& s, T& p, T g, StateSlots<T, N> st) { A::template update<T>(s, p, g, st); }) ||
     (has_tensor_sums<A> && has_tensor_sum_hooks<A, T, N>));
template <class A, class T> concept has_update = has_update_with_slots<A, T, std::size(A::slot_names)>;

// The N of the StateSlots<T, N> that Algo::update takes, when it is not std::size(slot_names) (0 to
// 32), or -1: what a wrong N is, for the message.
template <class A, class T, std::size_t... N>
constexpr long update_slot_count(std::index_sequence<N...>) {
  long found = -1;
  ((found = found < 0 && has_update_with_slots<A, T, N> ? static_cast<long>(N) : found), ...);
  return found;
}

template <class L> concept has_layout_category = requires { typename L::layout_category; } &&
                                                  std::same_as<typename L::layout_category, layout_policy_tag>;
template <class L> concept has_strategy = requires {
  { L::strategy } -> std::convertible_to<Strategy>;
  { L::reduction } -> std::convertible_to<Reduction>;
};
template <class L> concept has_pack = requires(std::span<const TensorInfo> t, int p) {
  { L::pack(t, p) } -> std::convertible_to<Packing>;
};

template <class C> concept has_comm_category = requires { typename C::communicator_category; } &&
                                               std::same_as<typename C::communicator_category, communicator_tag>;
template <class C> concept has_rank_size = requires(const C& c) {
  { c.rank() } -> std::convertible_to<int>;
  { c.size() } -> std::convertible_to<int>;
};
template <class C> concept has_all_reduce = requires(C& c, std::span<double> d, std::span<std::int64_t> i) {
  c.all_reduce(d, ReduceOp::sum);
  c.all_reduce(i, ReduceOp::min);
};
template <class C> concept has_reduce_scatter = requires(C& c, std::span<const double> s, std::span<double> r) {
  c.reduce_scatter(s, r, ReduceOp::sum);
};
template <class C> concept has_all_gather = requires(C& c, std::span<const double> s, std::span<double> r,
                                                     std::span<const char> cs, std::span<char> cr) {
  c.all_gather(s, r);
  c.all_gather(cs, cr);
};
template <class C> concept has_broadcast = requires(C& c, std::span<double> d, std::span<char> b) {
  c.broadcast(d, 0);
  c.broadcast(b, 0);
};
template <class C> concept has_barrier_stats = requires(C& c) {
  c.barrier();
  { c.stats().bytes_sent } -> std::convertible_to<std::uint64_t>;
};
}  // namespace detail

/// @brief True if `A` declares itself an element-wise optimizer algorithm.
template <class A> inline constexpr bool is_algorithm_v = detail::declares_elementwise<A>;
/// @brief True if `L` declares itself a sharding layout.
template <class L> inline constexpr bool is_layout_v = detail::has_layout_category<L>;
/// @brief True if `C` declares itself a communicator.
template <class C> inline constexpr bool is_communicator_v = detail::has_comm_category<C>;

/// @brief An optimizer algorithm policy: everything `ShardedOptimizer` uses of its `Algo`.
///
/// See policies/shardopt/algo/adam.hpp for a complete example and docs/ for the guide.
template <class A>
concept Algorithm = detail::declares_elementwise<A> && detail::has_options<A> && detail::has_name<A> &&
                    detail::has_option_fields<A> && detail::has_slot_names<A> && detail::has_validate<A> &&
                    detail::has_slot_used<A> && (!detail::has_scalar_state<A> || detail::has_scalar_state_hooks<A>) &&
                    detail::has_update<A, float> && detail::has_update<A, double>;

/// @brief A sharding layout policy: a category tag, a name, a Strategy, a Reduction and
/// `static Packing pack(std::span<const TensorInfo>, int world_size)`.
template <class L>
concept Layout = detail::has_layout_category<L> && detail::has_name<L> && detail::has_strategy<L> && detail::has_pack<L>;

/// @brief A communicator policy: rank, size, the collectives on typed buffers, a barrier and byte counts.
template <class C>
concept Communicator = detail::has_comm_category<C> && detail::has_name<C> && detail::has_rank_size<C> &&
                       detail::has_all_reduce<C> && detail::has_reduce_scatter<C> && detail::has_all_gather<C> &&
                       detail::has_broadcast<C> && detail::has_barrier_stats<C>;

namespace detail {
template <class> inline constexpr bool always_false = false;

// One readable error per wrong policy: only the first missing member is reported.
template <class A>
consteval bool check_algorithm() {
  if constexpr (!has_algorithm_category<A>) {
    static_assert(always_false<A>,
                  "ShardedOptimizer<Algo, Layout, Comm>: Algo is not an optimizer algorithm policy: it lacks "
                  "'using algorithm_category = shardopt::elementwise_algorithm_tag;' (did you put a Layout or "
                  "Comm in the Algo slot?)");
  } else if constexpr (!declares_elementwise<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo::algorithm_category must be "
                                   "shardopt::elementwise_algorithm_tag.");
  } else if constexpr (!has_options<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks a default-constructible "
                                   "nested struct 'Options' (its options, with torch.optim's names and defaults).");
  } else if constexpr (!has_name<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks "
                                   "'static constexpr std::string_view name'.");
  } else if constexpr (!has_option_fields<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'static constexpr auto "
                                   "option_fields = std::tuple{shardopt::field(\"lr\", &Options::lr), ...}'.");
  } else if constexpr (!has_slot_names<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'static constexpr "
                                   "std::array<std::string_view, N> slot_names' (the names of its state slots).");
  } else if constexpr (!has_validate<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'static void "
                                   "validate(const Options&)' (throws shardopt::InvalidArgument).");
  } else if constexpr (!has_slot_used<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'static bool "
                                   "slot_used(const Options&, std::size_t)' or 'static double "
                                   "initial_value(const Options&, std::size_t)'.");
  } else if constexpr (has_scalar_state<A> && !has_scalar_state_hooks<A>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo declares scalar_state_names but lacks "
                                   "'static double initial_scalar_state(const Options&, std::size_t k)' or 'static void "
                                   "advance_scalar_state(const Options&, std::int64_t step, std::span<double> state)'.");
  } else if constexpr (has_scalar_state<A> && (!has_prepare<A, float> || !has_prepare<A, double>)) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo declares scalar_state_names, so it needs "
                                   "'template <class T> static Scalars prepare(const Options&, std::int64_t step, "
                                   "std::span<const double> scalar_state)' (the per-step scalars, from the tensor's scalar state).");
  } else if constexpr (!has_prepare<A, float> || !has_prepare<A, double>) {
    static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'template <class T> static "
                                   "Scalars prepare(const Options&, std::int64_t step)' (the per-step scalars).");
  } else if constexpr (!has_update<A, float> || !has_update<A, double>) {
    if constexpr (update_slot_count<A, float>(std::make_index_sequence<33>{}) >= 0) {
      static_assert(update_slot_count<A, float>(std::make_index_sequence<33>{}) == static_cast<long>(std::size(A::slot_names)),
                    "ShardedOptimizer<Algo, Layout, Comm>: Algo::update takes shardopt::StateSlots<T, N> with an N that is "
                    "not the number of names in Algo::slot_names: N must be std::size(slot_names), one pointer per slot "
                    "(the comparison below reads 'N == number of slot names').");
    } else if constexpr (has_tensor_sums<A>) {
      static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo declares tensor_sum_names, so it needs "
                                     "'accumulate<T>(const Scalars&, const T& param, T grad, StateSlots<T, N>, double* terms)', "
                                     "'static T tensor_factor<T>(const Options&, std::span<const double> sums)' and "
                                     "'update<T>(const Scalars&, T& param, T grad, StateSlots<T, N>, T factor)'.");
    } else {
      static_assert(always_false<A>, "ShardedOptimizer<Algo, Layout, Comm>: Algo lacks 'template <class T> "
                                     "KOKKOS_INLINE_FUNCTION static void update(const Scalars&, T& param, T grad, "
                                     "shardopt::StateSlots<T, N> state)'.");
    }
  }
  return Algorithm<A>;
}

// A Comm whose collectives only work on host memory (comm::Mpi).
template <class C>
concept host_memory_comm = requires { C::host_memory_only; } && static_cast<bool>(C::host_memory_only);

// The names of Algo's per-tensor scalar state (none unless it declares scalar_state_names).
template <class A>
constexpr std::span<const std::string_view> scalar_state_names_of() {
  if constexpr (has_scalar_state<A>) return A::scalar_state_names;
  else return {};
}

// The names of Algo's per-tensor sums (empty for an elementwise algorithm).
template <class A>
constexpr std::span<const std::string_view> tensor_sum_names_of() {
  if constexpr (has_tensor_sums<A>) return A::tensor_sum_names;
  else return {};
}

// Algo's update of one element, with the tensor's factor where it has per-tensor sums.
template <class A, class T, class S, class St>
KOKKOS_FORCEINLINE_FUNCTION void update_element(const S& s, T& p, T g, St st, [[maybe_unused]] T factor) {
  if constexpr (has_tensor_sums<A>) A::template update<T>(s, p, g, st, factor);
  else A::template update<T>(s, p, g, st);
}

// Stand-ins that keep a wrong Algo from cascading into further errors after its one message.
struct invalid_policy_options {};
template <class A>
struct safe_algorithm_traits {
  using options_type = invalid_policy_options;
  static constexpr std::size_t num_slots = 0;
  static constexpr std::size_t num_scalar_states = 0;
  static constexpr std::size_t num_tensor_sums = 0;
};
template <class A>
  requires has_options<A> && has_slot_names<A>
struct safe_algorithm_traits<A> {
  using options_type = typename A::Options;
  static constexpr std::size_t num_slots = std::size(A::slot_names);
  static constexpr std::size_t num_scalar_states = scalar_state_names_of<A>().size();
  static constexpr std::size_t num_tensor_sums = tensor_sum_names_of<A>().size();
};

// The per-step scalars Algo::prepare<T> returns.
template <class A, class T>
struct scalars_of {
  using type = decltype(prepare_step<A, T>(std::declval<const typename A::Options&>(), std::int64_t{1}, {}));
};

template <class L>
consteval bool check_layout() {
  if constexpr (!has_layout_category<L>) {
    static_assert(always_false<L>,
                  "ShardedOptimizer<Algo, Layout, Comm>: Layout is not a sharding layout policy: it lacks "
                  "'using layout_category = shardopt::layout_policy_tag;' (did you put an Algo or Comm in the "
                  "Layout slot?)");
  } else if constexpr (!has_name<L>) {
    static_assert(always_false<L>, "ShardedOptimizer<Algo, Layout, Comm>: Layout lacks "
                                   "'static constexpr std::string_view name'.");
  } else if constexpr (!has_strategy<L>) {
    static_assert(always_false<L>, "ShardedOptimizer<Algo, Layout, Comm>: Layout lacks 'static constexpr "
                                   "shardopt::Strategy strategy' or 'static constexpr shardopt::Reduction reduction'.");
  } else if constexpr (!has_pack<L>) {
    static_assert(always_false<L>, "ShardedOptimizer<Algo, Layout, Comm>: Layout lacks 'static shardopt::Packing "
                                   "pack(std::span<const shardopt::TensorInfo> tensors, int world_size)'.");
  }
  return Layout<L>;
}

template <class C>
consteval bool check_communicator() {
  if constexpr (!has_comm_category<C>) {
    static_assert(always_false<C>,
                  "ShardedOptimizer<Algo, Layout, Comm>: Comm is not a communicator policy: it lacks "
                  "'using communicator_category = shardopt::communicator_tag;' (did you put an Algo or Layout in "
                  "the Comm slot?)");
  } else if constexpr (!has_name<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks "
                                   "'static constexpr std::string_view name'.");
  } else if constexpr (!has_rank_size<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks 'int rank() const' or "
                                   "'int size() const'.");
  } else if constexpr (!has_all_reduce<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks the collective "
                                   "'template <class T> void all_reduce(std::span<T> buffer, shardopt::ReduceOp)'.");
  } else if constexpr (!has_reduce_scatter<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks the collective "
                                   "'template <class T> void reduce_scatter(std::span<const T> send, std::span<T> "
                                   "recv, shardopt::ReduceOp)'.");
  } else if constexpr (!has_all_gather<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks the collective "
                                   "'template <class T> void all_gather(std::span<const T> send, std::span<T> recv)'.");
  } else if constexpr (!has_broadcast<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks the collective "
                                   "'template <class T> void broadcast(std::span<T> buffer, int root)'.");
  } else if constexpr (!has_barrier_stats<C>) {
    static_assert(always_false<C>, "ShardedOptimizer<Algo, Layout, Comm>: Comm lacks 'void barrier()' or "
                                   "'stats()' (returning shardopt::CommStats).");
  }
  return Communicator<C>;
}
}  // namespace detail

}  // namespace shardopt
