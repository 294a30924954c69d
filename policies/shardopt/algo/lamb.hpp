// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::LAMB, as optax.lamb: Adam's update scaled per tensor by the trust ratio of two norms.

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>

#include <shardopt/algorithm.hpp>

namespace shardopt::algo {

/// @brief LAMB (You et al.), the formulas of optax.lamb (eps_root = 0, no mask), step by step:
/// @code
/// m = (1 - beta1) g + beta1 m
/// v = (1 - beta2) g^2 + beta2 v
/// u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay p
/// r = ||p|| / ||u||, or 1 where either norm is 0        (norms over the whole tensor)
/// p = p + (-lr) (u r)
/// @endcode
/// The norms are over the whole tensor whatever the sharding: LAMB declares the per-tensor sums
/// `param` (sum of p^2) and `update` (sum of u^2), so the step runs in two passes (pass 1 computes
/// m, v and u for each element's terms and keeps nothing; pass 2 computes them again, keeps m and v
/// and steps p).
/// State slots: `exp_avg` (optax's mu) and `exp_avg_sq` (nu).
struct LAMB {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "LAMB";       ///< the algorithm's name

  /// @brief Options, with optax.lamb's defaults (`learning_rate`, `b1`, `b2` named lr, beta1, beta2).
  struct Options {
    double lr = 1e-3;           ///< learning rate
    double beta1 = 0.9;         ///< decay of the first moment
    double beta2 = 0.999;       ///< decay of the second moment
    double eps = 1e-6;          ///< added to the denominator
    double weight_decay = 0.0;  ///< decoupled weight decay, added to the update before the trust ratio
  };
  /// The options by name, in order.
  static constexpr auto option_fields =
      std::tuple{field("lr", &Options::lr), field("beta1", &Options::beta1), field("beta2", &Options::beta2),
                 field("eps", &Options::eps), field("weight_decay", &Options::weight_decay)};
  /// State slot names.
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_avg_sq"};
  /// The per-tensor sums: of p^2 and of u^2.
  static constexpr std::array<std::string_view, 2> tensor_sum_names = {"param", "update"};

  /// Throws InvalidArgument for an invalid option (torch's wording for Adam's options).
  static void validate(const Options& o) {
    require(0.0 <= o.lr, invalid("Invalid learning rate", o.lr));
    require(0.0 <= o.eps, invalid("Invalid epsilon value", o.eps));
    require(0.0 <= o.beta1 && o.beta1 < 1.0, invalid("Invalid beta parameter at index 0", o.beta1));
    require(0.0 <= o.beta2 && o.beta2 < 1.0, invalid("Invalid beta parameter at index 1", o.beta2));
    require(0.0 <= o.weight_decay, invalid("Invalid weight_decay value", o.weight_decay));
  }
  /// Both slots are always kept.
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  /// Both start at 0.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  /// @brief The per-step scalars, computed once on the host.
  template <class T>
  struct Scalars {
    T one_minus_beta1;   ///< 1 - beta1
    T beta1;             ///< beta1
    T one_minus_beta2;   ///< 1 - beta2
    T beta2;             ///< beta2
    T bias_correction1;  ///< 1 - beta1^step
    T bias_correction2;  ///< 1 - beta2^step
    T eps;               ///< eps
    T weight_decay;      ///< weight_decay
    T neg_lr;            ///< -lr
  };
  /// Scalars of step `step` (1 for the first step) under options `o`.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double t = static_cast<double>(step);
    return {T(1.0 - o.beta1), T(o.beta1), T(1.0 - o.beta2), T(o.beta2), T(1.0 - std::pow(o.beta1, t)), T(1.0 - std::pow(o.beta2, t)),
            T(o.eps), T(o.weight_decay), T(-o.lr)};
  }
  /// The update direction u from the new moments.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T direction(const Scalars<T>& s, T p, T m, T v) {
    return (m / s.bias_correction1) / (math::sqrt(v / s.bias_correction2) + s.eps) + s.weight_decay * p;
  }
  /// The new moments of one element: pass 1 computes them for its terms, pass 2 again to keep them.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void moments(const Scalars<T>& s, T g, StateSlots<T, 2> st, T& m, T& v) {
    m = s.one_minus_beta1 * g + s.beta1 * T(st[0]);
    v = s.one_minus_beta2 * (g * g) + s.beta2 * T(st[1]);
  }
  /// Pass 1: the element's terms p^2 and u^2 (the state is left as it is).
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void accumulate(const Scalars<T>& s, const T& p, T g, StateSlots<T, 2> st, double* terms) {
    T m, v;
    moments(s, g, st, m, v);
    const T u = direction(s, p, m, v);
    terms[0] = static_cast<double>(p) * static_cast<double>(p);
    terms[1] = static_cast<double>(u) * static_cast<double>(u);
  }
  /// The trust ratio ||p|| / ||u|| of a tensor from its sums (each norm in T, as optax), 1 where either is 0.
  template <class T>
  static T tensor_factor(const Options&, std::span<const double> sums) {
    const T pn = static_cast<T>(std::sqrt(sums[0])), un = static_cast<T>(std::sqrt(sums[1]));
    return pn == T(0) || un == T(0) ? T(1) : pn / un;
  }
  /// Pass 2: the moments and u again, the moments kept, u scaled by the tensor's trust ratio.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, StateSlots<T, 2> st, T ratio) {
    T m, v;
    moments(s, g, st, m, v);
    st[0] = m;
    st[1] = v;
    const T u = direction(s, p, m, v);
    p = p + s.neg_lr * (u * ratio);
  }
};

}  // namespace shardopt::algo
