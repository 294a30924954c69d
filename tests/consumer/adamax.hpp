// SPDX-License-Identifier: BSD-3-Clause
// The consumer project's own algorithm: torch.optim.Adamax (Kingma and Ba), Adam with the infinity norm.
#pragma once
#include <shardopt/algorithm.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>

struct Adamax {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "Adamax";

  struct Options {  // torch.optim.Adamax's names and defaults; betas=(beta1, beta2)
    double lr = 2e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    bool maximize = false;
  };
  static constexpr auto option_fields =
      std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("beta1", &Options::beta1),
                 shardopt::field("beta2", &Options::beta2), shardopt::field("eps", &Options::eps),
                 shardopt::field("weight_decay", &Options::weight_decay), shardopt::field("maximize", &Options::maximize)};
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_inf"};
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  static void validate(const Options& o) {
    shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr));
    shardopt::require(0.0 <= o.eps, shardopt::invalid("Invalid epsilon value", o.eps));
    shardopt::require(0.0 <= o.beta1 && o.beta1 < 1.0, shardopt::invalid("Invalid beta parameter at index 0", o.beta1));
    shardopt::require(0.0 <= o.beta2 && o.beta2 < 1.0, shardopt::invalid("Invalid beta parameter at index 1", o.beta2));
    shardopt::require(0.0 <= o.weight_decay, shardopt::invalid("Invalid weight_decay value", o.weight_decay));
  }

  template <class T>
  struct Scalars {
    T one_minus_beta1, beta2, eps, weight_decay, neg_clr;
    bool maximize;
  };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double clr = o.lr / (1.0 - std::pow(o.beta1, static_cast<double>(step)));
    return {T(1.0 - o.beta1), T(o.beta2), T(o.eps), T(o.weight_decay), T(-clr), o.maximize};
  }

  // exp_avg = lerp(exp_avg, g, 1 - beta1); exp_inf = max(exp_inf * beta2, |g| + eps);
  // p = p - lr / (1 - beta1^t) * exp_avg / exp_inf
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    if (s.weight_decay != T(0)) g = g + s.weight_decay * p;
    T& exp_avg = st[0];
    T& exp_inf = st[1];
    exp_avg = shardopt::math::lerp(exp_avg, g, s.one_minus_beta1);
    exp_inf = shardopt::math::maximum(exp_inf * s.beta2, (g < T(0) ? -g : g) + s.eps);
    p = p + (s.neg_clr * exp_avg) / exp_inf;
  }
};
