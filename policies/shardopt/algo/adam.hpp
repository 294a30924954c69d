// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::Adam, as torch.optim.Adam.

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief The checks torch.optim's Adam, AdamW, Adamax and RAdam share, with torch's wording: `lr`,
/// `eps` and `weight_decay` at least 0 (NaN fails), `beta1` and `beta2` in [0, 1).
template <class O>
void validate_adam_family(const O& o) {
  require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
  require(0.0 <= o.eps, invalid("Invalid epsilon value", o.eps));
  require(0.0 <= o.beta1 && o.beta1 < 1.0, invalid("Invalid beta parameter at index 0", o.beta1));
  require(0.0 <= o.beta2 && o.beta2 < 1.0, invalid("Invalid beta parameter at index 1", o.beta2));
  require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
}

/// @brief Adam (Kingma & Ba), the formulas of torch.optim.Adam (foreach=False), step by step:
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p          (L2; AdamW decouples it instead)
/// m = lerp(m, g, 1 - beta1)
/// v = v * beta2 + (1 - beta2) * g * g
/// if amsgrad: vmax = max(vmax, v)
/// denom = sqrt(amsgrad ? vmax : v) / (1 - beta2^t)^0.5 + eps
/// p = p + (-lr / (1 - beta1^t)) * m / denom
/// @endcode
/// State slots: `exp_avg`, `exp_avg_sq`, and `max_exp_avg_sq` when amsgrad.
struct Adam {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "Adam";       ///< torch.optim class name

  /// @brief Options, with torch.optim.Adam's names and defaults (`betas` split in beta1, beta2).
  struct Options {
    double lr = 1e-3;            ///< learning rate
    double beta1 = 0.9;          ///< betas[0]: decay of the first moment
    double beta2 = 0.999;        ///< betas[1]: decay of the second moment
    double eps = 1e-8;           ///< added to the denominator
    double weight_decay = 0.0;   ///< L2 penalty added to the gradient
    bool amsgrad = false;        ///< keep the maximum of the second moment
    bool maximize = false;       ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr),     field("beta1", &Options::beta1),
                 field("beta2", &Options::beta2), field("eps", &Options::eps),
                 field("weight_decay", &Options::weight_decay), field("amsgrad", &Options::amsgrad),
                 field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 3> slot_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) { validate_adam_family(o); }
  /// Whether slot `k` is kept under options `o`.
  static constexpr bool slot_used(const Options& o, std::size_t k) { return k < 2 || o.amsgrad; }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;  ///< L2 penalty (Adam) or decoupled decay factor input (AdamW)
    T one_minus_beta1;  ///< 1 - beta1, the lerp weight of exp_avg
    T beta2;  ///< decay of exp_avg_sq
    T one_minus_beta2;  ///< 1 - beta2
    T bias_correction2_sqrt;  ///< sqrt(1 - beta2^step)
    T eps;  ///< added to the denominator
    T neg_step_size;  ///< -lr / (1 - beta1^step)
    T decay;  ///< 1 - lr * weight_decay, AdamW's parameter decay
    bool amsgrad;  ///< keep the maximum of exp_avg_sq
    bool maximize;  ///< ascend instead of descend
    bool decoupled;  ///< AdamW: decay the parameter instead of adding to the gradient
    bool has_weight_decay;  ///< weight_decay != 0
  };
  /// @brief Scalars whose flags are compile-time constants (see with_fixed_flags()).
  template <class T, bool Amsgrad, bool Maximize, bool Decoupled, bool Decay>
  struct FixedScalars : Scalars<T> {
    static constexpr bool amsgrad = Amsgrad;         ///< fixed amsgrad
    static constexpr bool maximize = Maximize;       ///< fixed maximize
    static constexpr bool decoupled = Decoupled;     ///< fixed decoupled
    static constexpr bool has_weight_decay = Decay;  ///< fixed has_weight_decay
  };
  /// Calls `body(fixed)` with `s` as FixedScalars: the fused loop is compiled once per combination.
  template <class T, class Body>
  KOKKOS_INLINE_FUNCTION static void with_fixed_flags(const Scalars<T>& s, Body&& body) {
    with_constant_flags([&](auto a, auto m, auto d, auto w) { body(FixedScalars<T, decltype(a)::value, decltype(m)::value, decltype(d)::value, decltype(w)::value>{s}); },
                        s.amsgrad, s.maximize, s.decoupled, s.has_weight_decay);
  }
  /// Scalars of step `step` (1 for the first step) under options `o`; `decoupled` selects AdamW.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step, bool decoupled = false) {
    const double t = static_cast<double>(step);
    const double bc1 = 1.0 - std::pow(o.beta1, t), bc2 = 1.0 - std::pow(o.beta2, t);
    return {T(o.weight_decay), T(1.0 - o.beta1), T(o.beta2), T(1.0 - o.beta2), T(std::pow(bc2, 0.5)), T(o.eps),
            T(-(o.lr / bc1)), T(1.0 - o.lr * o.weight_decay), o.amsgrad, o.maximize, decoupled, o.weight_decay != 0.0};
  }
  /// The update of one element.
  template <class T, class S = Scalars<T>>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const S& s, T& p, T g, StateSlots<T, 3> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) {
      if (s.decoupled) p = p * s.decay;
      else g = g + s.weight_decay * p;
    }
    // Every state load before the first state store: the slots are not restrict, so otherwise the
    // compiler must load v after storing m and load m again after storing v (the same arithmetic).
    const T m = math::lerp(T(st[0]), g, s.one_minus_beta1);
    const T v = T(st[1]) * s.beta2 + (s.one_minus_beta2 * g) * g;
    const T second = s.amsgrad ? math::maximum(T(st[2]), v) : v;
    st[0] = m;
    st[1] = v;
    if (s.amsgrad) st[2] = second;
    const T denom = math::sqrt(second) / s.bias_correction2_sqrt + s.eps;
    p = p + (s.neg_step_size * m) / denom;
  }
};

}  // namespace shardopt::algo
