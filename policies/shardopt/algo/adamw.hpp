// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief algo::AdamW, as torch.optim.AdamW.

#include <shardopt/algo/adam.hpp>

namespace shardopt::algo {

/// @brief AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as torch.optim.AdamW:
/// `p = p * (1 - lr * weight_decay)` before the Adam update, whose gradient carries no L2 term.
/// Same options as Adam except the default `weight_decay = 0.01`; same state slots.
struct AdamW {
  using algorithm_category = elementwise_algorithm_tag;  ///< declares this type an algorithm
  static constexpr std::string_view name = "AdamW";      ///< torch.optim class name

  /// @brief Options, with torch.optim.AdamW's names and defaults.
  struct Options {
    double lr = 1e-3;            ///< learning rate
    double beta1 = 0.9;          ///< betas[0]
    double beta2 = 0.999;        ///< betas[1]
    double eps = 1e-8;           ///< added to the denominator
    double weight_decay = 1e-2;  ///< decoupled weight decay
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
  static constexpr auto slot_names = Adam::slot_names;
  /// The per-step scalars.
  template <class T>
  using Scalars = Adam::Scalars<T>;

  /// Throws InvalidArgument with torch's wording for an invalid option.
  static void validate(const Options& o) { Adam::validate(as_adam(o)); }
  /// Whether slot `k` is kept under options `o`.
  static constexpr bool slot_used(const Options& o, std::size_t k) { return Adam::slot_used(as_adam(o), k); }
  /// Initial value of slot `k`.
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  /// Scalars of step `step`.
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    return Adam::prepare<T>(as_adam(o), step, /*decoupled=*/true);
  }
  /// The update of one element.
  template <class T, class S = Scalars<T>>
  KOKKOS_FORCEINLINE_FUNCTION static void update(const S& s, T& p, T g, StateSlots<T, 3> st) {
    Adam::update<T>(s, p, g, st);
  }
  /// Calls `body` with the flags fixed at compile time (see Adam::with_fixed_flags()).
  template <class T, class Body>
  KOKKOS_INLINE_FUNCTION static void with_fixed_flags(const Scalars<T>& s, Body&& body) {
    Adam::with_fixed_flags<T>(s, static_cast<Body&&>(body));
  }

 private:
  static constexpr Adam::Options as_adam(const Options& o) {
    return {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize};
  }
};

}  // namespace shardopt::algo
