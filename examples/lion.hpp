// SPDX-License-Identifier: BSD-3-Clause
// A user-defined algorithm: Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").
// Everything ShardedOptimizer needs of an Algo; it then works with every layout and communicator.
#pragma once
#include <shardopt/algorithm.hpp>

struct Lion {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "Lion";
  struct Options {
    double lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0.0;
  };
  static constexpr auto option_fields =
      std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("beta1", &Options::beta1),
                 shardopt::field("beta2", &Options::beta2), shardopt::field("weight_decay", &Options::weight_decay)};
  static constexpr std::array<std::string_view, 1> slot_names = {"exp_avg"};
  static void validate(const Options& o) {
    shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr));
    shardopt::require(0.0 <= o.beta1 && o.beta1 < 1.0, shardopt::invalid("Invalid beta parameter at index 0", o.beta1));
    shardopt::require(0.0 <= o.beta2 && o.beta2 < 1.0, shardopt::invalid("Invalid beta parameter at index 1", o.beta2));
  }
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  template <class T>
  struct Scalars { T decay, neg_lr, beta1, one_minus_beta1, beta2, one_minus_beta2; };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) {
    return {T(1 - o.lr * o.weight_decay), T(-o.lr), T(o.beta1), T(1 - o.beta1), T(o.beta2), T(1 - o.beta2)};
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 1> st) {
    T& m = st[0];
    const T c = s.beta1 * m + s.one_minus_beta1 * g;  // interpolate, take the sign, decay
    p = p * s.decay + s.neg_lr * shardopt::math::sign(c);
    m = s.beta2 * m + s.one_minus_beta2 * g;
  }
};
