// An algorithm with a per-tensor sum: momentum whose step has the same length for every tensor,
// m = beta m + (1 - beta) g;  p = p - lr m / max(||m||, eps), ||m|| over the whole tensor.
#pragma once
#include <shardopt/algorithm.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>

struct NormalizedMomentum {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "NormalizedMomentum";
  struct Options {
    double lr = 0.01;
    double beta = 0.9;
    double eps = 1e-12;
  };
  static constexpr auto option_fields = std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("beta", &Options::beta),
                                                   shardopt::field("eps", &Options::eps)};
  static constexpr std::array<std::string_view, 1> slot_names = {"momentum_buffer"};
  // One sum over each whole tensor, whatever its sharding: of m^2.
  static constexpr std::array<std::string_view, 1> tensor_sum_names = {"momentum"};

  static void validate(const Options& o) {
    shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr));
    shardopt::require(0.0 <= o.beta && o.beta < 1.0, shardopt::invalid("Invalid beta value", o.beta));
    shardopt::require(0.0 < o.eps, shardopt::invalid("Invalid epsilon value", o.eps));
  }
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }

  template <class T>
  struct Scalars {
    T beta, one_minus_beta, neg_lr;
  };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t /*step*/) {
    return {T(o.beta), T(1.0 - o.beta), T(-o.lr)};
  }
  // Pass 1, every element: its term of the sum (in double), from the new momentum; it writes nothing.
  template <class T>
  KOKKOS_INLINE_FUNCTION static void accumulate(const Scalars<T>& s, const T& /*p*/, T g, shardopt::StateSlots<T, 1> st,
                                                double* terms) {
    const T m = s.beta * T(st[0]) + s.one_minus_beta * g;
    terms[0] = static_cast<double>(m) * static_cast<double>(m);
  }
  // Host, once per tensor and step: its sums, complete over every shard and rank, into one value.
  template <class T>
  static T tensor_factor(const Options& o, std::span<const double> sums) {
    return static_cast<T>(1.0 / std::max(std::sqrt(sums[0]), o.eps));
  }
  // Pass 2, every element: the new momentum again, kept, and the step with the tensor's value.
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 1> st, T inverse_norm) {
    const T m = s.beta * T(st[0]) + s.one_minus_beta * g;
    st[0] = m;
    p = p + s.neg_lr * (m * inverse_norm);
  }
};
