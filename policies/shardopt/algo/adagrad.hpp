// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::Adagrad, as torch.optim.Adagrad.

#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief Adagrad (Duchi et al.), the formulas of torch.optim.Adagrad (foreach=False):
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p
/// clr = lr / (1 + (t - 1) * lr_decay)
/// sum = sum + g * g                       (sum starts at initial_accumulator_value)
/// p = p + (-clr) * g / (sqrt(sum) + eps)
/// @endcode
/// State slot: `sum`.
struct Adagrad {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "Adagrad";    ///< torch.optim class name

  /// @brief Options, with torch.optim.Adagrad's names and defaults.
  struct Options {
    double lr = 1e-2;                         ///< learning rate
    double lr_decay = 0.0;                    ///< learning-rate decay per step
    double weight_decay = 0.0;                ///< L2 penalty
    double initial_accumulator_value = 0.0;   ///< initial value of `sum`
    double eps = 1e-10;                       ///< added to the denominator
    bool maximize = false;                    ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("lr_decay", &Options::lr_decay),
                 field("weight_decay", &Options::weight_decay),
                 field("initial_accumulator_value", &Options::initial_accumulator_value),
                 field("eps", &Options::eps), field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 1> slot_names = {"sum"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) {
    require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
    require(0.0 <= o.lr_decay, invalid("Invalid lr_decay value", o.lr_decay));
    require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
    require(0.0 <= o.initial_accumulator_value,
            invalid("Invalid initial_accumulator_value value", o.initial_accumulator_value));
    require(0.0 <= o.eps, invalid("Invalid epsilon value", o.eps));
  }
  /// Whether slot `k` is kept: always.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// Initial value of `sum`.
  static constexpr double initial_value(const Options& o, std::size_t) { return o.initial_accumulator_value; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;  ///< L2 penalty added to the gradient
    T neg_clr;  ///< minus the decayed learning rate lr / (1 + (step - 1) lr_decay)
    T eps;  ///< added to the square root of the sum
    bool maximize;  ///< ascend instead of descend
    bool has_weight_decay;  ///< weight_decay != 0
  };
  /// @brief Scalars whose flags are compile-time constants (see with_fixed_flags()).
  template <class T, bool Maximize, bool Decay>
  struct FixedScalars : Scalars<T> {
    static constexpr bool maximize = Maximize;       ///< fixed maximize
    static constexpr bool has_weight_decay = Decay;  ///< fixed has_weight_decay
  };
  /// Calls `body(fixed)` with `s` as FixedScalars: the fused loop is compiled once per combination.
  template <class T, class Body>
  KOKKOS_INLINE_FUNCTION static void with_fixed_flags(const Scalars<T>& s, Body&& body) {
    with_constant_flags([&](auto m, auto w) { body(FixedScalars<T, decltype(m)::value, decltype(w)::value>{s}); }, s.maximize,
                        s.has_weight_decay);
  }
  /// Scalars of step `step` (1 for the first step).
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double clr = o.lr / (1.0 + static_cast<double>(step - 1) * o.lr_decay);
    return {T(o.weight_decay), T(-clr), T(o.eps), o.maximize, o.weight_decay != 0.0};
  }
  /// The update of one element.
  template <class T, class S = Scalars<T>>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const S& s, T& p, T g, StateSlots<T, 1> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) g = g + s.weight_decay * p;
    T& sum = st[0];
    sum = sum + g * g;
    const T std_ = math::sqrt(sum) + s.eps;
    p = p + (s.neg_clr * g) / std_;
  }
};

}  // namespace shardopt::algo
