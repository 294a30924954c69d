// An algorithm policy: torch.optim.Adadelta (Zeiler, 2012), written as a user would.
#pragma once
#include <shardopt/algorithm.hpp>  // the tag, field(), StateSlots, math::, require(), invalid()

#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>

struct Adadelta {
  // What this type is, and its name in messages and state dicts (torch's class name).
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "Adadelta";

  // torch.optim.Adadelta's options, names and defaults.
  struct Options {
    double lr = 1.0;
    double rho = 0.9;
    double eps = 1e-6;
    double weight_decay = 0.0;
    bool maximize = false;
  };
  // Every option by name: saved in state dicts, compared across ranks, printed in messages.
  static constexpr auto option_fields =
      std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("rho", &Options::rho),
                 shardopt::field("eps", &Options::eps), shardopt::field("weight_decay", &Options::weight_decay),
                 shardopt::field("maximize", &Options::maximize)};

  // The state slots, named as torch names them in optimizer.state[p].
  static constexpr std::array<std::string_view, 2> slot_names = {"square_avg", "acc_delta"};
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  // torch's checks and wording; `0.0 <= x` is false for NaN, so NaN is rejected too.
  static void validate(const Options& o) {
    shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr));
    shardopt::require(0.0 <= o.rho && o.rho <= 1.0, shardopt::invalid("Invalid rho value", o.rho));
    shardopt::require(0.0 <= o.eps, shardopt::invalid("Invalid epsilon value", o.eps));
    shardopt::require(0.0 <= o.weight_decay, shardopt::invalid("Invalid weight_decay value", o.weight_decay));
  }

  // What a step needs besides the element, computed once per step on the host, in double and
  // rounded once to T as torch rounds Python floats. Plain numbers only: it is copied to the device.
  template <class T>
  struct Scalars {
    T rho, one_minus_rho, eps, weight_decay, neg_lr;
    bool maximize;
  };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t /*step*/) {
    return {T(o.rho), T(1.0 - o.rho), T(o.eps), T(o.weight_decay), T(-o.lr), o.maximize};
  }

  // One element, in the order of torch's single-tensor code. It runs inside the fused kernel
  // (on a GPU too): only this element's values, shardopt::math, no std:: calls.
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    if (s.weight_decay != T(0)) g = g + s.weight_decay * p;
    T& square_avg = st[0];
    T& acc_delta = st[1];
    square_avg = square_avg * s.rho + (s.one_minus_rho * g) * g;
    const T std_ = shardopt::math::sqrt(square_avg + s.eps);
    const T delta = shardopt::math::sqrt(acc_delta + s.eps) / std_ * g;
    acc_delta = acc_delta * s.rho + (s.one_minus_rho * delta) * delta;
    p = p + s.neg_lr * delta;
  }
};
