// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What an algorithm policy is built from: the category tag, option fields, device-safe math
/// and torch-worded option checks. Include this to write your own algorithm.

#include <Kokkos_Core.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/error.hpp>
#include <shardopt/options.hpp>

namespace shardopt {

/// @brief Calls `f` with one `std::bool_constant` per runtime flag (2^n instantiations), so that
/// code inside `f` sees the flags as compile-time constants: an algorithm's `with_fixed_flags`
/// uses it to take its option branches out of the fused loop, which then vectorizes.
template <class F>
KOKKOS_FORCEINLINE_FUNCTION void with_constant_flags(F&& f) {
  f();
}
/// @brief See with_constant_flags(F&&).
template <class F, class... B>
KOKKOS_FORCEINLINE_FUNCTION void with_constant_flags(F&& f, bool first, B... rest) {
  if (first) with_constant_flags([&](auto... c) { f(std::true_type{}, c...); }, rest...);
  else with_constant_flags([&](auto... c) { f(std::false_type{}, c...); }, rest...);
}

/// @brief Device-safe math for algorithm updates (Kokkos' functions, on every backend).
namespace math {
#if KOKKOS_VERSION >= 30700
using Kokkos::exp;
using Kokkos::log;
using Kokkos::pow;
using Kokkos::sqrt;
#else
using Kokkos::Experimental::exp;
using Kokkos::Experimental::log;
using Kokkos::Experimental::pow;
using Kokkos::Experimental::sqrt;
#endif

/// @brief |x| like torch.abs: |-0| is +0, NaN stays NaN.
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T abs(T x) {
#if KOKKOS_VERSION >= 30700
  return Kokkos::fabs(x);
#else
  return Kokkos::Experimental::fabs(x);
#endif
}

/// @brief min(a, b) that propagates NaN like torch.minimum.
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T minimum(T a, T b) {
  return a != a ? a : (b != b ? b : (a < b ? a : b));
}

/// @brief max(a, b) that propagates NaN like torch.maximum.
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T maximum(T a, T b) {
  return a != a ? a : (b != b ? b : (a > b ? a : b));
}

/// @brief torch's lerp: start + weight * (end - start), computed as torch does for weight >= 0.5 too.
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T lerp(T start, T end, T weight) {
  return weight < T(0.5) ? start + weight * (end - start) : end - (end - start) * (T(1) - weight);
}

/// @brief -1, 0 or 1 like torch.sign: +0 for 0, -0 and NaN (measured with torch 2.15).
template <class T>
KOKKOS_FORCEINLINE_FUNCTION T sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}
}  // namespace math

/// @brief Throws InvalidArgument with `message` unless `ok`; for `Algo::validate`.
///
/// Write the condition as torch does, `0.0 <= lr`, so that NaN fails it.
inline void require(bool ok, const std::string& message) {
  if (!ok) throw InvalidArgument(message);
}

/// @brief "<what>: <value>" with the value printed as Python prints a float's shortest form.
inline std::string invalid(std::string_view what, double value) {
  return std::string(what) + ": " + detail::fmt(value);
}

}  // namespace shardopt
