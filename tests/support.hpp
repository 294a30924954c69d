// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// Helpers shared by the test files: inputs by formula, host copies, ulp distances.

#include <shardopt/shardopt.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace test {

// The input formulas of scripts/make_golden.py: tensor t, flat index i, step k.
inline double initial_value(std::int64_t t, std::int64_t i) { return static_cast<double>(((i + 17 * t) * 37 + 11) % 101) / 50.0 - 1.0; }
inline double gradient_value(std::int64_t t, std::int64_t i, std::int64_t k) {
  return (static_cast<double>(((i + 17 * t) * 53 + k * 29 + 7) % 97) / 48.0 - 1.0) * 0.5;
}

// Options that exercise each algorithm's state (momentum, amsgrad, centered, weight decay, lr decay,
// a non-zero initial accumulator).
template <class Algo>
typename Algo::Options rich_options() {
  typename Algo::Options o;
  shardopt::set_option<Algo>(o, "lr", 0.05);
  shardopt::set_option<Algo>(o, "weight_decay", 0.1);
  shardopt::set_option<Algo>(o, "momentum", 0.9);
  shardopt::set_option<Algo>(o, "amsgrad", 1);
  shardopt::set_option<Algo>(o, "centered", 1);
  shardopt::set_option<Algo>(o, "lr_decay", 0.01);
  shardopt::set_option<Algo>(o, "initial_accumulator_value", 0.1);
  return o;
}

template <class T, class View>
std::vector<T> to_host(const View& v) {
  std::vector<T> out(v.size());
  Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(out.data(), out.size()),
                    Kokkos::View<T*, typename View::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(const_cast<T*>(v.data()), v.size()));
  return out;
}

template <class T, class View>
void from_host(const View& v, const std::vector<T>& data) {
  Kokkos::deep_copy(Kokkos::View<T*, typename View::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(v.data(), v.size()),
                    Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(const_cast<T*>(data.data()), data.size()));
}

// Distance in units in the last place (0 for equal values, also +0/-0; huge for NaN vs number).
template <class T>
std::uint64_t ulps(T a, T b) {
  if (a == b) return 0;
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : UINT64_MAX;
  using U = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  auto key = [](T x) {
    const auto u = std::bit_cast<U>(x);
    return u < 0 ? static_cast<std::int64_t>(std::numeric_limits<U>::min()) - static_cast<std::int64_t>(u) : static_cast<std::int64_t>(u);
  };
  const std::int64_t d = key(a) - key(b);
  return static_cast<std::uint64_t>(d < 0 ? -d : d);
}

}  // namespace test
