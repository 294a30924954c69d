// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::RMSprop, as torch.optim.RMSprop.

#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief RMSprop (Hinton), the formulas of torch.optim.RMSprop (foreach=False):
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p
/// square_avg = square_avg * alpha + (1 - alpha) * g * g
/// if centered: grad_avg = lerp(grad_avg, g, 1 - alpha); avg = sqrt(square_avg - grad_avg^2) + eps
/// else:        avg = sqrt(square_avg) + eps
/// if momentum > 0: buf = buf * momentum + g / avg; p = p + (-lr) * buf
/// else:            p = p + (-lr) * g / avg
/// @endcode
/// State slots: `square_avg`, `momentum_buffer` when momentum > 0, `grad_avg` when centered.
struct RMSprop {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "RMSprop";    ///< torch.optim class name

  /// @brief Options, with torch.optim.RMSprop's names and defaults.
  struct Options {
    double lr = 1e-2;            ///< learning rate
    double alpha = 0.99;         ///< smoothing constant
    double eps = 1e-8;           ///< added to the denominator
    double weight_decay = 0.0;   ///< L2 penalty
    double momentum = 0.0;       ///< momentum factor
    bool centered = false;       ///< normalize by an estimate of the gradient's variance
    bool maximize = false;       ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr),       field("alpha", &Options::alpha),
                 field("eps", &Options::eps),     field("weight_decay", &Options::weight_decay),
                 field("momentum", &Options::momentum), field("centered", &Options::centered),
                 field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 3> slot_names = {"square_avg", "momentum_buffer", "grad_avg"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) {
    require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
    require(0.0 <= o.eps, invalid("Invalid epsilon value", o.eps));
    require(0.0 <= o.momentum, invalid("Invalid momentum value", o.momentum));
    require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
    require(0.0 <= o.alpha, invalid("Invalid alpha value", o.alpha));
  }
  /// Whether slot `k` is kept under options `o`.
  static constexpr bool slot_used(const Options& o, std::size_t k) {
    return k == 0 || (k == 1 && o.momentum > 0.0) || (k == 2 && o.centered);
  }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;  ///< L2 penalty added to the gradient
    T alpha;  ///< smoothing constant of square_avg
    T one_minus_alpha;  ///< 1 - alpha
    T eps;  ///< added to the denominator
    T momentum;  ///< momentum factor
    T neg_lr;  ///< minus the learning rate
    bool centered;  ///< normalize by the estimated variance
    bool use_momentum;  ///< momentum > 0
    bool maximize;  ///< ascend instead of descend
    bool has_weight_decay;  ///< weight_decay != 0
  };
  /// @brief Scalars whose flags are compile-time constants (see with_fixed_flags()).
  template <class T, bool Centered, bool Momentum, bool Maximize, bool Decay>
  struct FixedScalars : Scalars<T> {
    static constexpr bool centered = Centered;       ///< fixed centered
    static constexpr bool use_momentum = Momentum;   ///< fixed use_momentum
    static constexpr bool maximize = Maximize;       ///< fixed maximize
    static constexpr bool has_weight_decay = Decay;  ///< fixed has_weight_decay
  };
  /// Calls `body(fixed)` with `s` as FixedScalars: the fused loop is compiled once per combination.
  template <class T, class Body>
  KOKKOS_INLINE_FUNCTION static void with_fixed_flags(const Scalars<T>& s, Body&& body) {
    with_constant_flags([&](auto c, auto u, auto m, auto w) { body(FixedScalars<T, decltype(c)::value, decltype(u)::value, decltype(m)::value, decltype(w)::value>{s}); },
                        s.centered, s.use_momentum, s.maximize, s.has_weight_decay);
  }
  /// Scalars of a step.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) {
    return {T(o.weight_decay), T(o.alpha), T(1.0 - o.alpha), T(o.eps), T(o.momentum), T(-o.lr),
            o.centered,        o.momentum > 0.0, o.maximize, o.weight_decay != 0.0};
  }
  /// The update of one element.
  template <class T, class S = Scalars<T>>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const S& s, T& p, T g, StateSlots<T, 3> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) g = g + s.weight_decay * p;
    // Every state load before the first state store (the slots are not restrict: see Adam::update).
    const T square_avg = T(st[0]) * s.alpha + (s.one_minus_alpha * g) * g;
    const T grad_avg = s.centered ? math::lerp(T(st[2]), g, s.one_minus_alpha) : T(0);
    const T buf0 = s.use_momentum ? T(st[1]) : T(0);
    st[0] = square_avg;
    if (s.centered) st[2] = grad_avg;
    T avg = s.centered ? math::sqrt(square_avg + (T(-1) * grad_avg) * grad_avg) : math::sqrt(square_avg);
    avg = avg + s.eps;
    if (s.use_momentum) {
      const T buf = buf0 * s.momentum + (T(1) * g) / avg;
      st[1] = buf;
      p = p + s.neg_lr * buf;
    } else {
      p = p + (s.neg_lr * g) / avg;
    }
  }
};

}  // namespace shardopt::algo
