// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::RAdam, as torch.optim.RAdam.

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algo/adam.hpp>
#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief RAdam (Liu et al.): Adam with its variance rectified, the formulas of torch.optim.RAdam
/// (foreach=False), step by step:
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: decoupled_weight_decay ? p = p * (1 - lr * weight_decay) : g = g + weight_decay * p
/// m = lerp(m, g, 1 - beta1)
/// v = v * beta2 + (1 - beta2) * g * g
/// rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)      (in double)
/// if rho_t > 5: p = p - m / (1 - beta1^t) * lr * ((1 - beta2^t)^0.5 / (sqrt(v) + eps)) * rect
///               with rect = ((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))^0.5
/// else:         p = p - m / (1 - beta1^t) * lr
/// @endcode
/// State slots: `exp_avg` and `exp_avg_sq`.
struct RAdam {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "RAdam";      ///< torch.optim class name

  /// @brief Options, with torch.optim.RAdam's names and defaults (`betas` split in beta1, beta2).
  struct Options {
    double lr = 1e-3;                     ///< learning rate
    double beta1 = 0.9;                   ///< betas[0]: decay of the first moment
    double beta2 = 0.999;                 ///< betas[1]: decay of the second moment
    double eps = 1e-8;                    ///< added to the denominator
    double weight_decay = 0.0;            ///< weight decay (L2 unless decoupled)
    bool decoupled_weight_decay = false;  ///< decay the parameter (AdamW-style) instead of adding to the gradient
    bool maximize = false;                ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("beta1", &Options::beta1), field("beta2", &Options::beta2),
                 field("eps", &Options::eps), field("weight_decay", &Options::weight_decay),
                 field("decoupled_weight_decay", &Options::decoupled_weight_decay), field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_avg_sq"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) { validate_adam_family(o); }
  /// Both slots are always kept.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;           ///< L2 penalty
    T decay;                  ///< 1 - lr * weight_decay, the decoupled parameter decay
    T one_minus_beta1;        ///< 1 - beta1, the lerp weight of exp_avg
    T beta2;                  ///< decay of exp_avg_sq
    T one_minus_beta2;        ///< 1 - beta2
    T bias_correction1;       ///< 1 - beta1^step
    T lr;                     ///< learning rate
    T bias_correction2_sqrt;  ///< (1 - beta2^step)^0.5
    T eps;                    ///< added to the denominator
    T rect;                   ///< the variance rectification term (when rectify)
    bool rectify;             ///< rho_t > 5: the adaptive step
    bool maximize;            ///< ascend instead of descend
    bool decoupled;           ///< decay the parameter instead of adding to the gradient
    bool has_weight_decay;    ///< weight_decay != 0
  };
  /// Scalars of step `step` (1 for the first step) under options `o`, in double as torch computes them.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double t = static_cast<double>(step);
    const double bc1 = 1.0 - std::pow(o.beta1, t), beta2_t = std::pow(o.beta2, t), bc2 = 1.0 - beta2_t;
    const double rho_inf = 2.0 / (1.0 - o.beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * beta2_t / bc2;
    const bool rectify = rho_t > 5.0;
    const double rect = rectify ? std::pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5) : 1.0;
    return {T(o.weight_decay), T(1.0 - o.lr * o.weight_decay), T(1.0 - o.beta1), T(o.beta2), T(1.0 - o.beta2), T(bc1), T(o.lr),
            T(std::pow(bc2, 0.5)), T(o.eps), T(rect), rectify, o.maximize, o.decoupled_weight_decay, o.weight_decay != 0.0};
  }
  /// The update of one element.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) {
      if (s.decoupled) p = p * s.decay;
      else g = g + s.weight_decay * p;
    }
    const T m = math::lerp(T(st[0]), g, s.one_minus_beta1);
    const T v = T(st[1]) * s.beta2 + (s.one_minus_beta2 * g) * g;
    st[0] = m;
    st[1] = v;
    const T corrected = m / s.bias_correction1;
    if (s.rectify) p = p - ((corrected * s.lr) * (s.bias_correction2_sqrt / (math::sqrt(v) + s.eps))) * s.rect;
    else p = p - corrected * s.lr;
  }
};

}  // namespace shardopt::algo
