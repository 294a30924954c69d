// SPDX-License-Identifier: BSD-3-Clause
// The consumer project's own algorithm: torch.optim.Rprop (Riedmiller and Braun), which shardopt does
// not bundle. Its step sizes start at lr: an initial value that depends on the options.
#pragma once
#include <shardopt/algorithm.hpp>

#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>

struct Rprop {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "Rprop";

  struct Options {  // torch.optim.Rprop's names, order and defaults; etas and step_sizes split in two
    double lr = 1e-2;
    double etaminus = 0.5;
    double etaplus = 1.2;
    double step_size_min = 1e-6;
    double step_size_max = 50.0;
    bool maximize = false;
  };
  static constexpr auto option_fields =
      std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("etaminus", &Options::etaminus),
                 shardopt::field("etaplus", &Options::etaplus), shardopt::field("step_size_min", &Options::step_size_min),
                 shardopt::field("step_size_max", &Options::step_size_max), shardopt::field("maximize", &Options::maximize)};
  static constexpr std::array<std::string_view, 2> slot_names = {"prev", "step_size"};
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options& o, std::size_t k) { return k == 1 ? o.lr : 0.0; }

  static void validate(const Options& o) {
    shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr));
    shardopt::require(0.0 < o.etaminus && o.etaminus < 1.0, shardopt::invalid("Invalid eta values (etaminus)", o.etaminus));
    shardopt::require(1.0 < o.etaplus, shardopt::invalid("Invalid eta values (etaplus)", o.etaplus));
  }

  template <class T>
  struct Scalars {
    T etaminus, etaplus, step_size_min, step_size_max;
    bool maximize;
  };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) {
    return {T(o.etaminus), T(o.etaplus), T(o.step_size_min), T(o.step_size_max), o.maximize};
  }

  // f = sign(g prev) > 0 ? etaplus : < 0 ? etaminus : 1; step_size = clamp(step_size f, min, max);
  // g = f == etaminus ? 0 : g; p = p - sign(g) step_size; prev = g  (torch.sign: 0 for NaN)
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    T& prev = st[0];
    T& step_size = st[1];
    const T sign = shardopt::math::sign(g * prev);
    const T factor = sign > T(0) ? s.etaplus : sign < T(0) ? s.etaminus : T(1);
    step_size = shardopt::math::minimum(shardopt::math::maximum(step_size * factor, s.step_size_min), s.step_size_max);
    if (factor == s.etaminus) g = T(0);
    p = p + (T(-1) * shardopt::math::sign(g)) * step_size;
    prev = g;
  }
};
