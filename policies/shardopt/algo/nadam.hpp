// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::NAdam, as torch.optim.NAdam.

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>

#include <shardopt/algo/adam.hpp>
#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief NAdam (Dozat): Adam with Nesterov momentum, the formulas of torch.optim.NAdam
/// (foreach=False), step by step:
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: decoupled_weight_decay ? p = p * (1 - lr * weight_decay) : g = g + weight_decay * p
/// mu      = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))             (in double)
/// mu_next = beta1 * (1 - 0.5 * 0.96^((t + 1) * momentum_decay))
/// mu_product = mu_product * mu                                          (per tensor, a float32 scalar)
/// m = lerp(m, g, 1 - beta1)
/// v = v * beta2 + (1 - beta2) * g * g
/// denom = sqrt(v / (1 - beta2^t)) + eps
/// p = p + (-lr * (1 - mu) / (1 - mu_product)) * g / denom
/// p = p + (-lr * mu_next / (1 - mu_product * mu_next)) * m / denom
/// @endcode
/// State slots: `exp_avg` and `exp_avg_sq`; per-tensor scalar state: `mu_product` (starting at 1),
/// kept as torch keeps it under its default dtype, a float32 0-d tensor: each product is rounded to
/// float32, whatever the parameter's type.
struct NAdam {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "NAdam";      ///< torch.optim class name

  /// @brief Options, with torch.optim.NAdam's names and defaults (`betas` split in beta1, beta2).
  struct Options {
    double lr = 2e-3;                     ///< learning rate
    double beta1 = 0.9;                   ///< betas[0]: decay of the first moment
    double beta2 = 0.999;                 ///< betas[1]: decay of the second moment
    double eps = 1e-8;                    ///< added to the denominator
    double weight_decay = 0.0;            ///< weight decay (L2 unless decoupled)
    double momentum_decay = 4e-3;         ///< the decay of mu (psi in the paper)
    bool decoupled_weight_decay = false;  ///< decay the parameter (AdamW-style) instead of adding to the gradient
    bool maximize = false;                ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr),
                 field("beta1", &Options::beta1),
                 field("beta2", &Options::beta2),
                 field("eps", &Options::eps),
                 field("weight_decay", &Options::weight_decay),
                 field("momentum_decay", &Options::momentum_decay),
                 field("decoupled_weight_decay", &Options::decoupled_weight_decay),
                 field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_avg_sq"};
  /// The per-tensor scalar state (torch's state key).
  static constexpr std::array<std::string_view, 1> scalar_state_names = {"mu_product"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) {
    validate_adam_family(o);
    require(0.0 <= o.momentum_decay, invalid("Invalid momentum_decay value", o.momentum_decay));
  }
  /// Both slots are always kept.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  /// `mu_product` starts at 1.
  static constexpr double initial_scalar_state(const Options&, std::size_t) { return 1.0; }

  /// mu of step `t`: beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)).
  static double mu(const Options& o, double t) { return o.beta1 * (1.0 - 0.5 * std::pow(0.96, t * o.momentum_decay)); }
  /// Step `step` multiplies `mu_product` by mu, in float32 as torch's `mu_product *= mu`.
  static void advance_scalar_state(const Options& o, std::int64_t step, std::span<double> state) {
    state[0] = static_cast<double>(static_cast<float>(state[0]) * static_cast<float>(mu(o, static_cast<double>(step))));
  }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;       ///< L2 penalty
    T decay;              ///< 1 - lr * weight_decay, the decoupled parameter decay
    T one_minus_beta1;    ///< 1 - beta1, the lerp weight of exp_avg
    T beta2;              ///< decay of exp_avg_sq
    T one_minus_beta2;    ///< 1 - beta2
    T bias_correction2;   ///< 1 - beta2^step
    T eps;                ///< added to the denominator
    T grad_coefficient;   ///< -lr * (1 - mu) / (1 - mu_product)
    T avg_coefficient;    ///< -lr * mu_next / (1 - mu_product * mu_next)
    bool maximize;        ///< ascend instead of descend
    bool decoupled;       ///< decay the parameter instead of adding to the gradient
    bool has_weight_decay;  ///< weight_decay != 0
  };
  /// Scalars of step `step` (1 for the first step) under options `o`, with the tensor's
  /// `mu_product` after this step's advance_scalar_state(), in double as torch computes them.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step, std::span<const double> state) {
    const double t = static_cast<double>(step), mu_t = mu(o, t), mu_next = mu(o, t + 1.0);
    const double mu_product = state[0], mu_product_next = mu_product * mu_next;
    return {T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay),
            T(1.0 - o.beta1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(1.0 - std::pow(o.beta2, t)),
            T(o.eps),
            T(-o.lr * (1.0 - mu_t) / (1.0 - mu_product)),
            T((-o.lr * mu_next) / (1.0 - mu_product_next)),
            o.maximize,
            o.decoupled_weight_decay,
            o.weight_decay != 0.0};
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
    const T denom = math::sqrt(v / s.bias_correction2) + s.eps;
    p = p + (s.grad_coefficient * g) / denom;
    p = p + (s.avg_coefficient * m) / denom;
  }
};

}  // namespace shardopt::algo
