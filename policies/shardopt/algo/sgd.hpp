// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::SGD, as torch.optim.SGD.

#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief Stochastic gradient descent with momentum, the formulas of torch.optim.SGD (foreach=False):
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p
/// if momentum != 0:
///   buf = first step ? g : buf * momentum + (1 - dampening) * g
///   g = nesterov ? g + momentum * buf : buf
/// p = p + (-lr) * g
/// @endcode
/// State slot: `momentum_buffer` when momentum != 0.
struct SGD {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "SGD";        ///< torch.optim class name

  /// @brief Options, with torch.optim.SGD's names and defaults.
  struct Options {
    double lr = 1e-3;            ///< learning rate
    double momentum = 0.0;       ///< momentum factor
    double dampening = 0.0;      ///< dampening of the momentum
    double weight_decay = 0.0;   ///< L2 penalty
    bool nesterov = false;       ///< Nesterov momentum
    bool maximize = false;       ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("momentum", &Options::momentum),
                 field("dampening", &Options::dampening), field("weight_decay", &Options::weight_decay),
                 field("nesterov", &Options::nesterov), field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 1> slot_names = {"momentum_buffer"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) {
    require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
    require(0.0 <= o.momentum, invalid("Invalid momentum value", o.momentum));
    require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
    require(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0),
            "Nesterov momentum requires a momentum and zero dampening");
  }
  /// Whether slot `k` is kept under options `o`.
  static constexpr bool slot_used(const Options& o, std::size_t) { return o.momentum != 0.0; }
  /// Initial value of slot `k` (overwritten by the first gradient).
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;  ///< L2 penalty added to the gradient
    T momentum;  ///< momentum factor
    T one_minus_dampening;  ///< 1 - dampening
    T neg_lr;  ///< minus the learning rate
    bool first;  ///< the first step (the buffer starts as the gradient)
    bool nesterov;  ///< Nesterov momentum
    bool maximize;  ///< ascend instead of descend
    bool has_weight_decay;  ///< weight_decay != 0
    bool use_momentum;  ///< momentum != 0
  };
  /// @brief Scalars whose flags are compile-time constants (see with_fixed_flags()).
  template <class T, bool First, bool Nesterov, bool Maximize, bool Decay, bool Momentum>
  struct FixedScalars : Scalars<T> {
    static constexpr bool first = First;             ///< fixed first
    static constexpr bool nesterov = Nesterov;       ///< fixed nesterov
    static constexpr bool maximize = Maximize;       ///< fixed maximize
    static constexpr bool has_weight_decay = Decay;  ///< fixed has_weight_decay
    static constexpr bool use_momentum = Momentum;   ///< fixed use_momentum
  };
  /// Calls `body(fixed)` with `s` as FixedScalars: the fused loop is compiled once per combination.
  template <class T, class Body>
  KOKKOS_INLINE_FUNCTION static void with_fixed_flags(const Scalars<T>& s, Body&& body) {
    with_constant_flags(
        [&](auto f, auto n, auto m, auto w, auto u) {
          body(FixedScalars<T, decltype(f)::value, decltype(n)::value, decltype(m)::value, decltype(w)::value, decltype(u)::value>{s});
        },
        s.first && s.use_momentum, s.nesterov && s.use_momentum, s.maximize, s.has_weight_decay, s.use_momentum);
  }
  /// Scalars of step `step` (1 for the first step).
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    return {T(o.weight_decay), T(o.momentum),  T(1.0 - o.dampening),     T(-o.lr),
            step == 1,         o.nesterov,     o.maximize,               o.weight_decay != 0.0,
            o.momentum != 0.0};
  }
  /// The update of one element.
  template <class T, class S = Scalars<T>>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const S& s, T& p, T g, StateSlots<T, 1> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) g = g + s.weight_decay * p;
    if (s.use_momentum) {
      T& buf = st[0];
      buf = s.first ? g : buf * s.momentum + s.one_minus_dampening * g;
      g = s.nesterov ? g + s.momentum * buf : buf;
    }
    p = p + s.neg_lr * g;
  }
};

}  // namespace shardopt::algo
