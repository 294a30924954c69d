// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::LARS, as optax.lars: the update scaled per tensor by a trust ratio, then momentum.

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief LARS (You et al.), the formulas of optax.lars (no masks), step by step:
/// @code
/// u = g + weight_decay p
/// r = trust_coefficient ||p|| / (||u|| + eps), or 1 where either norm is 0   (whole tensor)
/// u = -lr (u r)
/// trace = u + momentum trace
/// p = p + (nesterov ? u + momentum trace : trace)
/// @endcode
/// The norms are over the whole tensor whatever the sharding (the per-tensor sums `param` and
/// `update`); pass 1 only gives the terms, pass 2 steps. State slot: `momentum_buffer` (optax's trace).
struct LARS {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "LARS";       ///< the algorithm's name

  /// @brief Options, with optax.lars's defaults (`learning_rate` named lr; lr has no default there).
  struct Options {
    double lr = 1e-3;                  ///< learning rate
    double weight_decay = 0.0;         ///< added to the gradient as weight_decay * p
    double trust_coefficient = 0.001;  ///< multiplies the trust ratio
    double eps = 0.0;                  ///< added to the update's norm
    double momentum = 0.9;             ///< decay of the trace
    bool nesterov = false;             ///< Nesterov momentum
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("weight_decay", &Options::weight_decay),
                 field("trust_coefficient", &Options::trust_coefficient), field("eps", &Options::eps),
                 field("momentum", &Options::momentum), field("nesterov", &Options::nesterov)};
  /// State slot names.
  static constexpr std::array<std::string_view, 1> slot_names = {"momentum_buffer"};
  /// The per-tensor sums: of p^2 and of u^2.
  static constexpr std::array<std::string_view, 2> tensor_sum_names = {"param", "update"};

  /// Throws InvalidArgument for an invalid option (torch's wording where torch has the option).
  static void validate(const Options& o) {
    require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
    require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
    require(0.0 <= o.trust_coefficient, invalid("Invalid trust_coefficient value", o.trust_coefficient));
    require(0.0 <= o.eps, invalid("Invalid epsilon value", o.eps));
    require(0.0 <= o.momentum, invalid("Invalid momentum value", o.momentum));
  }
  /// The trace is always kept.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// It starts at 0.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T weight_decay;  ///< weight_decay
    T neg_lr;        ///< -lr
    T momentum;      ///< momentum
    bool nesterov;   ///< Nesterov momentum
  };
  /// Scalars of any step under options `o`.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) {
    return {T(o.weight_decay), T(-o.lr), T(o.momentum), o.nesterov};
  }
  /// Pass 1: the element's terms p^2 and u^2 (no state changes).
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void accumulate(const Scalars<T>& s, const T& p, T g, StateSlots<T, 1>, double* terms) {
    const T u = g + s.weight_decay * p;
    terms[0] = static_cast<double>(p) * static_cast<double>(p);
    terms[1] = static_cast<double>(u) * static_cast<double>(u);
  }
  /// The trust ratio trust_coefficient ||p|| / (||u|| + eps) of a tensor from its sums (in T, as optax), 1 where either norm is 0.
  template <class T>
  static T tensor_factor(const Options& o, std::span<const double> sums) {
    const T pn = static_cast<T>(std::sqrt(sums[0])), un = static_cast<T>(std::sqrt(sums[1]));
    return pn == T(0) || un == T(0) ? T(1) : T(o.trust_coefficient) * pn / (un + T(o.eps));
  }
  /// Pass 2: the scaled update through the trace.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, StateSlots<T, 1> st, T ratio) {
    const T u = s.neg_lr * ((g + s.weight_decay * p) * ratio);
    const T trace = u + s.momentum * T(st[0]);
    st[0] = trace;
    p = p + (s.nesterov ? u + s.momentum * trace : trace);
  }
};

}  // namespace shardopt::algo
