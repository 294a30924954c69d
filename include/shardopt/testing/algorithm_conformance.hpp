// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The conformance suite of an algorithm policy: SHARDOPT_ALGORITHM_CONFORMANCE and the
/// checks it runs. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <shardopt/algorithm.hpp>
#include <shardopt/comm/serial.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>
#include <shardopt/layout/chunk.hpp>
#include <shardopt/layout/data_parallel.hpp>
#include <shardopt/layout/flat_partition.hpp>
#include <shardopt/layout/replicated.hpp>
#include <shardopt/options.hpp>
#include <shardopt/sharded_optimizer.hpp>
#include <shardopt/testing/compare.hpp>
#include <shardopt/testing/consistency.hpp>
#include <shardopt/testing/findings.hpp>
#include <shardopt/testing/model.hpp>
#include <shardopt/testing/slot_guard.hpp>

namespace shardopt::testing {

/// @brief Every bundled layout: an element-wise algorithm must give the same bits under each.
using bundled_layouts = std::tuple<layout::Replicated, layout::DataParallel, layout::FlatPartition, layout::ChunkRows, layout::ChunkCols>;

/// @brief A scalar reference of an algorithm and how closely the algorithm must match it.
///
/// `function(options, step, param, grad, state)` performs step `step` (1 for the first) of one
/// element: it updates `param` (a `T&`) and `state` (a `std::span<T>` with one value per entry of
/// `Algo::slot_names`, starting at `Algo::initial_value`) from `grad` (a `T`), for T = float and
/// double. A generic lambda (`auto` parameters) does both; a function of double only is run in
/// double and rounded for float parameters. For an algorithm with per-tensor scalar state
/// (`Algo::scalar_state_names`) the function takes a sixth argument, that state of the
/// one-element tensor as a `std::span<double>` (starting at `Algo::initial_scalar_state`), and
/// updates it too: it is compared with the optimizer's, bit for bit.
///
/// `tolerance` empty (the default) demands the same bits wherever the reference computes in the
/// parameter's own type: a policy that follows torch's formulas in torch's order matches them
/// exactly, and a tolerance of even a few ulps hides formula mistakes (a one-branch lerp, a bias
/// correction rounded to T). Only a double-only reference checked against float parameters gets 4
/// ulps (or 4 machine epsilons absolute, near zero) by default. Give a tolerance where the
/// difference is meant: a reference written in another order, or a GPU compiler that contracts
/// `a * b + c` into one fused multiply-add (nvcc does unless told `--fmad=false`).
template <class F>
struct ScalarReference {
  F function;                          ///< the scalar definition of one step of one element
  std::optional<Tolerance> tolerance;  ///< how closely update() must match it; empty: see above
};

/// @brief Wraps `f` as the scalar reference of an algorithm, matched with the same bits (see
/// ScalarReference for the one exception).
template <class F>
ScalarReference<F> scalar_reference(F f) {
  return {std::move(f), std::nullopt};
}

/// @brief Wraps `f` as the scalar reference of an algorithm matched within `tol`, e.g.
/// `{.ulps = 4, .eps = 4}`: 4 ulps, or 4 machine epsilons absolute for results near zero.
template <class F>
ScalarReference<F> scalar_reference(F f, Tolerance tol) {
  return {std::move(f), tol};
}

/// @brief "the same bits", "4 ulps or 4 eps", ...: a tolerance as the kit's messages say it.
inline std::string describe_tolerance(const Tolerance& t) {
  if (t.ulps == 0 && t.eps == 0) return "the same bits";
  std::string s = std::to_string(t.ulps) + (t.ulps == 1 ? " ulp" : " ulps");
  if (t.eps > 0) s += " or " + shardopt::detail::fmt(t.eps) + " eps absolute";
  return s;
}

namespace detail {
template <class Algo>
struct safe_options {
  using type = typename shardopt::detail::safe_algorithm_traits<Algo>::options_type;
};

template <class F>
struct is_scalar_reference : std::false_type {};
template <class F>
struct is_scalar_reference<ScalarReference<F>> : std::true_type {};

template <class F>
auto as_scalar_reference(F f) {
  if constexpr (is_scalar_reference<F>::value) return f;
  else return ScalarReference<F>{std::move(f), std::nullopt};
}

// A reference of an algorithm with per-tensor scalar state takes that state too, as a std::span<double>.
template <class F, class Algo, class T>
concept reference_for =
    (!shardopt::detail::has_scalar_state<Algo> && std::invocable<const F&, const typename Algo::Options&, std::int64_t, T&, T, std::span<T>>) ||
    (shardopt::detail::has_scalar_state<Algo> &&
     std::invocable<const F&, const typename Algo::Options&, std::int64_t, T&, T, std::span<T>, std::span<double>>);

template <class Algo, class F, class T>
void call_reference(const F& f, const typename Algo::Options& o, std::int64_t step, T& p, T g, std::span<T> state,
                    [[maybe_unused]] std::vector<double>& scalar_state) {
  if constexpr (shardopt::detail::has_scalar_state<Algo>) f(o, step, p, g, state, std::span<double>(scalar_state));
  else f(o, step, p, g, state);
}

// Counts the members of an aggregate by brace-initializing it with ever more arguments.
struct any_field {
  template <class U>
  constexpr operator U() const noexcept;  // never defined: used in unevaluated contexts only
};
template <class O, class Seq>
struct brace_initializable;
template <class O, std::size_t... I>
struct brace_initializable<O, std::index_sequence<I...>> {
  static constexpr bool value = requires { O{((void)I, any_field{})...}; };
};
template <class O, std::size_t N = 0>
constexpr std::size_t aggregate_members() {
  if constexpr (!std::is_aggregate_v<O> || N > 64) return std::numeric_limits<std::size_t>::max();
  else if constexpr (brace_initializable<O, std::make_index_sequence<N + 1>>::value) return aggregate_members<O, N + 1>();
  else return N;
}

inline bool identifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

template <class Algo>
bool has_option(std::string_view name) {
  typename Algo::Options o{};
  bool found = false;
  for_each_option<Algo>(o, [&](std::string_view n, auto&) { found = found || n == name; });
  return found;
}
}  // namespace detail

/// @brief `options` with the algorithm's defaults first, unless they are already in the list.
template <class Algo>
std::vector<typename detail::safe_options<Algo>::type> with_defaults(std::vector<typename detail::safe_options<Algo>::type> options) {
  if constexpr (Algorithm<Algo>) {
    const typename Algo::Options d{};
    bool present = false;
    for (const auto& o : options) present = present || option_values<Algo>(o) == option_values<Algo>(d);
    if (!present) options.insert(options.begin(), d);
  }
  return options;
}

/// @brief What an algorithm declares: a non-empty name; option names that are unique identifiers
/// naming distinct members, one for every member of `Options`; slot names that are unique, not empty
/// and free of '.' and spaces (checkpoint keys are `state.<param>.<slot>`); scalar state names
/// (if any) as well, other than `step` and the slot names; finite initial values; per-step scalars
/// that can be copied into a device kernel (trivially copyable).
template <class Algo>
Findings check_algorithm_declaration(std::span<const typename Algo::Options> options) {
  Findings f;
  const std::string a = std::string(Algo::name).empty() ? std::string("the algorithm") : std::string(Algo::name);
  if (std::string_view(Algo::name).empty()) f.add("Algo::name is empty: it names the algorithm in messages and state dicts.");
  for (char c : std::string_view(Algo::name))
    if (std::isspace(static_cast<unsigned char>(c))) {
      f.add(a + ": Algo::name contains white space.");
      break;
    }
  // Option fields.
  std::vector<std::string> names;
  std::apply([&](const auto&... fd) { (names.emplace_back(fd.name), ...); }, Algo::option_fields);
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!detail::identifier(names[i]))
      f.add(a + ": option_fields names an option '" + names[i] + "', which is not an identifier (letters, digits, '_').");
    for (std::size_t j = 0; j < i; ++j)
      if (names[i] == names[j]) f.add(a + ": option_fields lists the option '" + names[i] + "' twice.");
  }
  std::apply(
      [&](const auto&... x) {
        auto same_member = [&](const auto& p, const auto& q) {
          if constexpr (std::is_same_v<decltype(p.member), decltype(q.member)>)
            if (&p != static_cast<const void*>(&q) && p.member == q.member && p.name < q.name)
              f.add(a + ": option_fields names one member of Options twice, as '" + std::string(p.name) + "' and '" + std::string(q.name) + "'.");
        };
        auto against_all = [&](const auto& p) { (same_member(p, x), ...); };
        (against_all(x), ...);
      },
      Algo::option_fields);
  constexpr std::size_t members = detail::aggregate_members<typename Algo::Options>();
  constexpr std::size_t listed = std::tuple_size_v<std::remove_cvref_t<decltype(Algo::option_fields)>>;
  if (members != std::numeric_limits<std::size_t>::max() && members > listed)
    f.add(a + ": Options has " + std::to_string(members) + " members but option_fields lists " + std::to_string(listed) +
          ". List every option with shardopt::field(\"name\", &Options::member): options are saved in state dicts by name, "
          "compared across ranks and printed in messages; an unlisted one is silently lost by load_state_dict().");
  // Slots and per-tensor scalar state: saved as tensors state.<param>.<name> beside the step.
  auto check_names = [&](std::span<const std::string_view> names, const char* list, const std::string& noun, const char* short_noun,
                         const char* plural, const char* placeholder) {
    for (std::size_t k = 0; k < names.size(); ++k) {
      const std::string_view s = names[k];
      if (s.empty()) f.add(a + ": " + list + "[" + std::to_string(k) + "] is empty.");
      for (char c : s)
        if (c == '.' || std::isspace(static_cast<unsigned char>(c))) {
          f.add(a + ": the " + noun + " '" + std::string(s) + "' contains '" + std::string(1, c) + "': " + plural +
                " must not contain '.' or white space (checkpoints name tensors state.<param>.<" + placeholder + ">).");
          break;
        }
      for (std::size_t j = 0; j < k; ++j)
        if (s == names[j]) f.add(a + ": " + list + " lists the " + short_noun + " '" + std::string(s) + "' twice.");
    }
  };
  check_names(Algo::slot_names, "slot_names", "state slot", "slot", "slot names", "slot");
  const auto scalar_names = shardopt::detail::scalar_state_names_of<Algo>();
  check_names(scalar_names, "scalar_state_names", "scalar state", "scalar state", "scalar state names", "key");
  for (const std::string_view s : scalar_names) {
    if (s == "step") f.add(a + ": scalar_state_names lists 'step', the name of the step count every parameter keeps.");
    for (const auto& slot : Algo::slot_names)
      if (s == slot) f.add(a + ": '" + std::string(s) + "' is both a state slot and a scalar state.");
  }
  for (const auto& o : options)
    for (const double v : shardopt::detail::initial_scalar_state_of<Algo>(o))
      if (!std::isfinite(v))
        f.add(a + ": initial_scalar_state() is not finite for options {" + describe_options<Algo>(o) + "}.");
  for (const auto& o : options)
    for (std::size_t k = 0; k < Algo::slot_names.size(); ++k)
      if (Algo::slot_used(o, k) && !std::isfinite(Algo::initial_value(o, k)))
        f.add(a + ": initial_value(options, " + std::to_string(k) + ") is not finite for options {" + describe_options<Algo>(o) + "}.");
  using S32 = typename shardopt::detail::scalars_of<Algo, float>::type;
  using S64 = typename shardopt::detail::scalars_of<Algo, double>::type;
  if (!std::is_trivially_copyable_v<S32> || !std::is_trivially_copyable_v<S64>)
    f.add(a + ": the type prepare<T>() returns is not trivially copyable; it is copied into the update kernel (on a GPU "
              "too), so it may hold only numbers, bools and arrays of them.");
  return f;
}

/// @brief Options are validated: the defaults and every set in `options` pass `Algo::validate`, and,
/// if the algorithm has an option `lr`, a negative or NaN learning rate throws
/// shardopt::InvalidArgument, as torch.optim does (write the check as `0.0 <= o.lr` so NaN fails it).
template <class Algo>
Findings check_options_validated(std::span<const typename Algo::Options> options) {
  Findings f;
  const std::string a(Algo::name);
  auto valid = [&](const typename Algo::Options& o, const std::string& which) {
    try {
      Algo::validate(o);
    } catch (const std::exception& e) {
      f.add(a + ": validate() rejects " + which + " {" + describe_options<Algo>(o) + "}: " + e.what());
    }
  };
  valid(typename Algo::Options{}, "its default options");
  for (const auto& o : options) valid(o, "the options");
  if (detail::has_option<Algo>("lr")) {
    for (double bad : {-1.0, std::nan("")}) {
      typename Algo::Options o{};
      set_option<Algo>(o, "lr", bad);
      const std::string v = shardopt::detail::fmt(bad);
      try {
        Algo::validate(o);
        f.add(a + ": validate() accepts lr = " + v + ". Reject it as torch.optim does: shardopt::require(0.0 <= o.lr, "
                  "shardopt::invalid(\"Invalid learning rate\", o.lr)) (written this way NaN fails too).");
      } catch (const InvalidArgument&) {
      } catch (const std::exception& e) {
        f.add(a + ": validate() rejects lr = " + v + " with an exception that is not shardopt::InvalidArgument (" + e.what() +
              "); use shardopt::require() so that every rank reports it as an invalid argument.");
      }
    }
  }
  return f;
}

namespace detail {
// The one-element parameters of check_scalar_definition(): ordinary values, then the ones that find
// sign, range and NaN mistakes. `extremes` false leaves out the values near overflow (a reference in
// double does not overflow where float does).
template <class T>
std::vector<T> scalar_check_params(bool extremes) {
  using L = std::numeric_limits<T>;
  std::vector<T> v = {T(0.5), T(-1.25), T(0.0), T(2.0), T(-0.03125), T(1e-3), T(-3.5), T(0.75),
                      T(-0.0), L::denorm_min() * T(3), -L::min() / T(2), L::quiet_NaN(), T(1.5), T(-0.5), T(0.25)};
  if (extremes) {
    v.push_back(L::max() / T(4));
    v.push_back(-L::max() / T(2));
  }
  return v;
}
// The gradient of element `e` at step `k` (1-based).
template <class T>
T scalar_check_grad(std::size_t e, int k) {
  using L = std::numeric_limits<T>;
  const auto ordinary = [&] {
    if ((e + static_cast<std::size_t>(k)) % 5 == 2) return T(0.0);
    return T(unit(3, e, static_cast<std::uint64_t>(k), 0) * (e % 3 == 0 ? 4.0 : 1.0));
  };
  switch (e) {
    case 8: return k % 2 == 1 ? T(-0.0) : ordinary();                      // -0 param, -0 and ordinary gradients
    case 9: return L::denorm_min() * T(k);                                // subnormal param and gradients
    case 10: return k % 2 == 1 ? -L::min() / T(4) : ordinary();
    case 12: return k == 2 ? L::quiet_NaN() : ordinary();                 // a NaN gradient at step 2
    case 13: return k == 3 ? L::infinity() : ordinary();                  // an infinite gradient at step 3
    case 14: return k == 2 ? -L::infinity() : ordinary();
    case 15: return L::max() / T(8);                                      // near overflow: g * g is infinite
    case 16: return k % 2 == 0 ? -L::max() / T(2) : ordinary();
    default: return ordinary();                                           // 0-7 and the NaN param (11)
  }
}
}  // namespace detail

/// @brief Steps one-element parameters `steps` times with `ShardedOptimizer<Algo, Replicated,
/// Serial>` for every options set, float and double, and compares the parameter and every slot in
/// use after each step with `reference` (a ScalarReference, see scalar_reference(), or a bare
/// callable, matched with the same bits). The parameters hold ordinary values and gradients (zero
/// among them), and the ones that find sign, range and NaN mistakes: -0 with -0 gradients,
/// subnormals, a NaN parameter, NaN and infinite gradients, values near overflow whose squares are
/// infinite. NaN equals any NaN; +0 and -0 differ.
template <class Algo, class Ref>
Findings check_scalar_definition(const Ref& reference_or_function, std::span<const typename Algo::Options> options, int steps = 5) {
  const auto reference = detail::as_scalar_reference(reference_or_function);
  using F = decltype(reference.function);
  static_assert(detail::reference_for<F, Algo, double>,
                "shardopt::testing: the scalar reference must be callable as f(const Algo::Options&, std::int64_t step, T& param, "
                "T grad, std::span<T> state) with T = double (and ideally float too: a generic lambda with auto parameters); "
                "for an algorithm with scalar_state_names, with a sixth argument std::span<double> scalar_state.");
  Findings out = detail::not_run_if_unused_slots_touched<Algo>(options, "The comparison with the scalar reference");
  if (!out.empty()) return out;
  constexpr std::size_t n_slots = std::size(Algo::slot_names);
  auto run = [&]<class T>() {
    constexpr bool in_T = detail::reference_for<F, Algo, T>;
    const Tolerance tol = reference.tolerance ? *reference.tolerance : in_T ? Tolerance{} : Tolerance{.ulps = 4, .eps = 4};
    const std::string tolerance_said =
        describe_tolerance(tol) + (reference.tolerance ? std::string(" (given)")
                                  : in_T ? std::string(" (the default for a reference computing in T; shardopt::testing::scalar_reference(f, "
                                                       "{.ulps = 4, .eps = 4}) accepts rounding differences)")
                                         : std::string(" (the default for a reference of double only, rounded to float)"));
    const std::vector<T> initial = detail::scalar_check_params<T>(in_T);
    for (const auto& o : options) {
      const std::string context = std::string(Algo::name) + " with options {" + describe_options<Algo>(o) + "}, " +
                                  (std::is_same_v<T, float> ? "float" : "double");
      out.add(detail::guarded(context, [&](Findings& f) {
        std::vector<Kokkos::View<T*>> x, g;
        for (std::size_t e = 0; e < initial.size(); ++e) {
          x.emplace_back("x" + std::to_string(e), 1);
          g.emplace_back("g" + std::to_string(e), 1);
          detail::from_host(x[e], std::vector<T>{initial[e]});
        }
        ShardedOptimizer<Algo, layout::Replicated, comm::Serial> opt(comm::Serial{}, o);
        for (std::size_t e = 0; e < initial.size(); ++e) opt.add_param("x" + std::to_string(e), x[e], g[e]);
        std::vector<T> p(initial);
        std::vector<std::vector<T>> state(initial.size(), std::vector<T>(n_slots));
        for (std::size_t e = 0; e < initial.size(); ++e)
          for (std::size_t k = 0; k < n_slots; ++k) state[e][k] = T(Algo::initial_value(o, k));
        std::vector<std::vector<double>> scalar_state(initial.size(), shardopt::detail::initial_scalar_state_of<Algo>(o));
        const auto scalar_names = shardopt::detail::scalar_state_names_of<Algo>();
        for (int k = 1; k <= steps; ++k) {
          for (std::size_t e = 0; e < initial.size(); ++e) detail::from_host(g[e], std::vector<T>{detail::scalar_check_grad<T>(e, k)});
          opt.step();
          for (std::size_t e = 0; e < initial.size(); ++e) {
            const T before = p[e], ge = detail::scalar_check_grad<T>(e, k);
            if constexpr (in_T) {
              detail::call_reference<Algo>(reference.function, o, static_cast<std::int64_t>(k), p[e], ge, std::span<T>(state[e]), scalar_state[e]);
            } else {
              double pd = p[e];
              std::vector<double> sd(state[e].begin(), state[e].end());
              detail::call_reference<Algo>(reference.function, o, static_cast<std::int64_t>(k), pd, static_cast<double>(ge), std::span<double>(sd),
                                           scalar_state[e]);
              p[e] = T(pd);
              for (std::size_t s = 0; s < n_slots; ++s) state[e][s] = T(sd[s]);
            }
            const std::string name = "x" + std::to_string(e);
            std::string diff;
            auto apart = [](T a, T b) {
              const auto u = ulp_distance(a, b);
              return u == std::numeric_limits<std::uint64_t>::max() ? std::string("a NaN against a number")
                                                                      : std::to_string(u) + (u == 1 ? " ulp apart" : " ulps apart");
            };
            const T got = detail::to_host<T>(x[e])[0];
            if (!within(got, p[e], tol))
              diff += "\n    - param: got " + describe_value(got) + ", expected " + describe_value(p[e]) + " (" + apart(got, p[e]) + ")";
            for (std::size_t s = 0; s < n_slots; ++s) {
              if (!Algo::slot_used(o, s)) continue;
              const auto v = opt.template local_state<T>(name, Algo::slot_names[s]);
              if (v.size() != 1) {
                diff += "\n    - state '" + std::string(Algo::slot_names[s]) + "': slot_used() says it is kept, but the optimizer holds none";
              } else if (!within(v[0], state[e][s], tol)) {
                diff += "\n    - state '" + std::string(Algo::slot_names[s]) + "': got " + describe_value(v[0]) + ", expected " +
                        describe_value(state[e][s]) + " (" + apart(v[0], state[e][s]) + ")";
              }
            }
            for (std::size_t s = 0; s < scalar_names.size(); ++s) {
              const double v = opt.scalar_state(name, scalar_names[s]), want = scalar_state[e][s];
              if (!within(v, want, Tolerance{}))
                diff += "\n    - scalar state '" + std::string(scalar_names[s]) + "': got " + describe_value(v) + ", expected " +
                        describe_value(want) + " (advance_scalar_state() must compute what the scalar reference computes)";
            }
            if (diff.empty()) continue;
            f.add(context + ": step " + std::to_string(k) + " of the one-element parameter '" + name + "' (param " +
                  describe_value(before) + ", grad " + describe_value(ge) + ") differs from the scalar reference:" + diff +
                  "\n  update() must compute what the scalar reference computes, as torch does for these values (NaN in, NaN out; "
                  "the sign of a zero). Tolerance: " + tolerance_said + ".");
            return;  // the first difference says most
          }
        }
      }));
    }
  };
  run.template operator()<float>();
  run.template operator()<double>();
  return out;
}

namespace detail {
// The registered test cases call these; a wrong Algo stops at its one static_assert message.
enum class AlgorithmCase { declaration, options, slots, scalar, round_trip };

template <class Spec>
void run_algorithm_case(AlgorithmCase c) {
  using Algo = typename Spec::algorithm;
  if constexpr (Spec::valid) {
    if (!require_environment()) return;
    const auto options = Spec::options();
    const std::span<const typename Algo::Options> o(options);
    switch (c) {
      case AlgorithmCase::declaration: report_across_ranks(check_algorithm_declaration<Algo>(o)); break;
      case AlgorithmCase::options: report_across_ranks(check_options_validated<Algo>(o)); break;
      case AlgorithmCase::slots: report_across_ranks(check_unused_slots_not_touched<Algo>(o)); break;
      case AlgorithmCase::scalar: report_across_ranks(check_scalar_definition<Algo>(Spec::shardopt_reference(), o)); break;
      case AlgorithmCase::round_trip:
        report_across_ranks(check_state_round_trip<Algo, layout::FlatPartition, layout::ChunkCols, layout::DataParallel>(o));
        break;
    }
  }
}
template <class Spec, class Layout>
void run_algorithm_same_bits() {
  if constexpr (Spec::valid) {
    if (!require_environment()) return;
    const auto options = Spec::options();
    report_across_ranks(check_same_bits_as_one_process<typename Spec::algorithm, Layout>(options));
  }
}
}  // namespace detail

}  // namespace shardopt::testing

/// @brief Registers the conformance suite of the algorithm policy `Algo` as the Boost.Test suite `suite`.
///
/// @code
/// SHARDOPT_ALGORITHM_CONFORMANCE(lion_conformance, Lion, lion_reference,
///                                {.lr = 0.1, .weight_decay = 0.5}, {.beta1 = 0.5});
/// @endcode
///
/// - `Algo`: the algorithm (a type name without top-level commas; use an alias otherwise).
/// - `reference`: its scalar definition, a function or function object (e.g. a lambda held in a
///   variable) called as `reference(options, step, param, grad, state)`; see
///   shardopt::testing::ScalarReference. Wrap it in shardopt::testing::scalar_reference(f, tolerance)
///   to change how closely the algorithm must match it (by default the same bits).
/// - `...`: option sets (`Algo::Options` initializers) to run besides the defaults; list the ones
///   that switch each state slot and branch on.
///
/// The suite holds these test cases, each run on every process of the test executable:
/// - `declaration`: the policy satisfies shardopt::Algorithm (at compile time: one readable message
///   otherwise), and what it declares is sound (check_algorithm_declaration());
/// - `options_are_validated`: check_options_validated();
/// - `unused_slots_are_untouched`: check_unused_slots_not_touched() (the checks that step an
///   optimizer report themselves not run, instead of crashing, when it fails);
/// - `one_element_matches_the_scalar_reference`: check_scalar_definition();
/// - `same_bits_as_one_process<Layout>`, for every bundled layout: the same bits as one process at
///   the world size the test runs with (check_same_bits_as_one_process());
/// - `state_dict_round_trip`: check_state_round_trip() from FlatPartition to ChunkCols (local dicts)
///   and to DataParallel (full dict).
#define SHARDOPT_ALGORITHM_CONFORMANCE(suite, Algo, reference, ...)                                                   \
  BOOST_AUTO_TEST_SUITE(suite)                                                                                        \
  struct shardopt_algorithm_spec {                                                                                    \
    using algorithm = Algo;                                                                                           \
    static constexpr bool valid = ::shardopt::detail::check_algorithm<Algo>();                                        \
    static std::vector<typename ::shardopt::testing::detail::safe_options<Algo>::type> options() {                    \
      return ::shardopt::testing::with_defaults<Algo>({__VA_ARGS__});                                                 \
    }                                                                                                                 \
    static const auto& shardopt_reference() {                                                                         \
      static const auto r = ::shardopt::testing::detail::as_scalar_reference(reference);                             \
      return r;                                                                                                       \
    }                                                                                                                 \
  };                                                                                                                  \
  BOOST_AUTO_TEST_CASE(declaration) {                                                                                 \
    ::shardopt::testing::detail::run_algorithm_case<shardopt_algorithm_spec>(                                        \
        ::shardopt::testing::detail::AlgorithmCase::declaration);                                                     \
  }                                                                                                                   \
  BOOST_AUTO_TEST_CASE(options_are_validated) {                                                                       \
    ::shardopt::testing::detail::run_algorithm_case<shardopt_algorithm_spec>(                                        \
        ::shardopt::testing::detail::AlgorithmCase::options);                                                         \
  }                                                                                                                   \
  BOOST_AUTO_TEST_CASE(unused_slots_are_untouched) {                                                                  \
    ::shardopt::testing::detail::run_algorithm_case<shardopt_algorithm_spec>(                                        \
        ::shardopt::testing::detail::AlgorithmCase::slots);                                                           \
  }                                                                                                                   \
  BOOST_AUTO_TEST_CASE(one_element_matches_the_scalar_reference) {                                                    \
    ::shardopt::testing::detail::run_algorithm_case<shardopt_algorithm_spec>(                                        \
        ::shardopt::testing::detail::AlgorithmCase::scalar);                                                          \
  }                                                                                                                   \
  BOOST_AUTO_TEST_CASE_TEMPLATE(same_bits_as_one_process, shardopt_layout, ::shardopt::testing::bundled_layouts) {    \
    ::shardopt::testing::detail::run_algorithm_same_bits<shardopt_algorithm_spec, shardopt_layout>();                 \
  }                                                                                                                   \
  BOOST_AUTO_TEST_CASE(state_dict_round_trip) {                                                                       \
    ::shardopt::testing::detail::run_algorithm_case<shardopt_algorithm_spec>(                                        \
        ::shardopt::testing::detail::AlgorithmCase::round_trip);                                                      \
  }                                                                                                                   \
  BOOST_AUTO_TEST_SUITE_END()
