// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::Adamax, as torch.optim.Adamax.

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>

#include <shardopt/algo/adam.hpp>
#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief Adamax (Kingma & Ba): Adam with the infinity norm, the formulas of torch.optim.Adamax
/// (foreach=False), step by step:
/// @code
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p
/// m = lerp(m, g, 1 - beta1)
/// u = maximum(u * beta2, |g| + eps)                       (NaN-propagating, as torch.maximum)
/// p = p + (-lr / (1 - beta1^t)) * m / u
/// @endcode
/// State slots: `exp_avg` and `exp_inf`.
struct Adamax {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "Adamax";     ///< torch.optim class name

  /// @brief Options, with torch.optim.Adamax's names and defaults (`betas` split in beta1, beta2).
  struct Options {
    double lr = 2e-3;           ///< learning rate
    double beta1 = 0.9;         ///< betas[0]: decay of the first moment
    double beta2 = 0.999;       ///< betas[1]: decay of the infinity norm
    double eps = 1e-8;          ///< added to |g|
    double weight_decay = 0.0;  ///< L2 penalty added to the gradient
    bool maximize = false;      ///< maximize the objective
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("beta1", &Options::beta1), field("beta2", &Options::beta2),
                 field("eps", &Options::eps), field("weight_decay", &Options::weight_decay),
                 field("maximize", &Options::maximize)};
  /// State slot names (torch's state keys).
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_inf"};

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) { validate_adam_family(o); }
  /// Both slots are always kept.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;     ///< L2 penalty
    T one_minus_beta1;  ///< 1 - beta1, the lerp weight of exp_avg
    T beta2;            ///< decay of exp_inf
    T eps;              ///< added to |g|
    T neg_clr;          ///< -lr / (1 - beta1^step), in double, rounded once
    bool maximize;      ///< ascend instead of descend
    bool has_weight_decay;  ///< weight_decay != 0
  };
  /// Scalars of step `step` (1 for the first step) under options `o`.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double clr = o.lr / (1.0 - std::pow(o.beta1, static_cast<double>(step)));
    return {T(o.weight_decay), T(1.0 - o.beta1), T(o.beta2), T(o.eps), T(-clr), o.maximize, o.weight_decay != 0.0};
  }
  /// The update of one element.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    if (s.has_weight_decay) g = g + s.weight_decay * p;
    const T m = math::lerp(T(st[0]), g, s.one_minus_beta1);
    const T u = math::maximum(T(st[1]) * s.beta2, math::abs(g) + s.eps);
    st[0] = m;
    st[1] = u;
    p = p + (s.neg_clr * m) / u;
  }
};

}  // namespace shardopt::algo
