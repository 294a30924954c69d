// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Assertion helpers: a parameter compared with a reference or across ranks, with a message
/// that names the parameter, the rank, the index and both values. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <Kokkos_Core.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <shardopt/detail/format.hpp>
#include <shardopt/testing/environment.hpp>

namespace shardopt::testing {

/// @brief How far a value may be from the one expected: within `ulps` units in the last place, or
/// within `eps` machine epsilons of the element type in absolute terms (for results near zero).
/// The default, `{}`, accepts only the same bits (a NaN equals any NaN; +0 and -0 differ).
struct Tolerance {
  std::uint64_t ulps = 0;  ///< accepted distance in units in the last place
  double eps = 0.0;        ///< accepted absolute difference, in `std::numeric_limits<T>::epsilon()`
};

/// @brief Units in the last place between `a` and `b`: 0 for the same value and for two NaNs, 1
/// between +0 and -0 (as if -0 were the float just below +0), the largest value for a NaN against a
/// number. For integers: 0 if equal, else the largest value.
template <class T>
std::uint64_t ulp_distance(T a, T b) {
  constexpr std::uint64_t far = std::numeric_limits<std::uint64_t>::max();
  if constexpr (!std::is_floating_point_v<T>) {
    return a == b ? 0 : far;
  } else {
    if (a == b && std::signbit(a) == std::signbit(b)) return 0;
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : far;
    using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    auto key = [](T x) -> long double {  // monotonic in x, -0 below +0; long double holds every difference of two int64
      const I u = std::bit_cast<I>(x);
      return u < 0 ? static_cast<long double>(std::numeric_limits<I>::min()) - static_cast<long double>(u) - 1.0L
                   : static_cast<long double>(u);
    };
    const long double d = key(a) - key(b);
    const long double m = d < 0 ? -d : d;
    return m >= 1.8e19L ? far : static_cast<std::uint64_t>(m);
  }
}

/// @brief Whether `got` is within `tol` of `expected` (see Tolerance); integers must be equal.
template <class T>
bool within(T got, T expected, Tolerance tol = {}) {
  if (ulp_distance(got, expected) <= tol.ulps) return true;
  if constexpr (!std::is_floating_point_v<T>) {
    return false;
  } else {
    if (std::isnan(got) || std::isnan(expected)) return false;
    return tol.eps > 0 && std::abs(static_cast<double>(got) - static_cast<double>(expected)) <=
                              tol.eps * static_cast<double>(std::numeric_limits<T>::epsilon());
  }
}

/// @brief `v` in its shortest exact decimal form and its bit pattern, e.g. `0.1 (0x3dcccccd)`.
template <class T>
std::string describe_value(T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    char hex[32];
    std::snprintf(hex, sizeof hex, sizeof(T) == 4 ? " (0x%08llx)" : " (0x%016llx)",
                  static_cast<unsigned long long>(std::bit_cast<U>(v)));
    s += hex;
  }
  return s;
}

/// @brief "index 17 [3, 2]": a row-major flat index and, when `shape` has two or more dimensions,
/// the multi-index it stands for.
inline std::string describe_index(std::int64_t flat, std::span<const std::int64_t> shape = {}) {
  std::string s = "index " + std::to_string(flat);
  if (shape.size() < 2) return s;
  std::vector<std::int64_t> idx(shape.size());
  std::int64_t rem = flat;
  for (std::size_t d = shape.size(); d-- > 0;) {
    const std::int64_t e = shape[d] > 0 ? shape[d] : 1;
    idx[d] = rem % e;
    rem /= e;
  }
  return s + " " + shardopt::detail::fmt_shape(idx);
}

/// @brief Host values and shape of a Kokkos view, a std::vector or a std::span (what the helpers accept).
template <class T>
struct HostValues {
  std::vector<T> values;             ///< row-major
  std::vector<std::int64_t> shape;   ///< its extents (one for vectors and spans)
};

namespace detail {
template <class X>
struct value_of {
  using type = std::remove_cv_t<typename X::value_type>;
};
template <class X>
  requires Kokkos::is_view<X>::value
struct value_of<X> {
  using type = typename X::non_const_value_type;
};
}  // namespace detail

/// @brief A host copy of `x` (a contiguous Kokkos view of any memory space, a std::vector or a
/// std::span) with its shape. Views are copied in their memory order: row-major for LayoutRight.
template <class X>
auto host_values(const X& x) {
  using T = typename detail::value_of<X>::type;
  HostValues<T> out;
  if constexpr (Kokkos::is_view<X>::value) {
    for (unsigned d = 0; d < X::rank; ++d) out.shape.push_back(static_cast<std::int64_t>(x.extent(d)));
    out.values.resize(x.size());
    if (x.size() > 0) {
      Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> dst(out.values.data(), out.values.size());
      Kokkos::View<const T*, typename X::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> src(x.data(), x.size());
      Kokkos::deep_copy(dst, src);
    }
  } else {
    out.values.assign(x.begin(), x.end());
    out.shape.push_back(static_cast<std::int64_t>(out.values.size()));
  }
  return out;
}

/// @brief Compares `got` with `expected` element by element within `tol`. Returns "" if they
/// agree, otherwise a message naming `what` (e.g. "parameter 'fc.weight'"), the rank, the first
/// differing indices with both values and how many elements differ.
/// @param what what is compared, e.g. "parameter 'fc.weight'"
/// @param got the values found
/// @param expected the reference values
/// @param tol how close each value must be
/// @param rank the rank to name in the message (-1: none)
/// @param shape the global shape, to print multi-indices (empty: flat indices only)
/// @param offset row-major flat index of the first element of `got` in that shape
template <class T>
std::string compare_values(std::string_view what, std::span<const T> got, std::span<const T> expected, Tolerance tol = {},
                           int rank = -1, std::span<const std::int64_t> shape = {}, std::int64_t offset = 0) {
  const std::string where = std::string(what) + (rank >= 0 ? " on rank " + std::to_string(rank) : std::string());
  if (got.size() != expected.size())
    return where + " has " + std::to_string(got.size()) + " elements, the reference " + std::to_string(expected.size());
  std::size_t differ = 0;
  std::string first;
  constexpr std::size_t shown = 3;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (within(got[i], expected[i], tol)) continue;
    if (differ < shown) {
      const auto u = ulp_distance(got[i], expected[i]);
      first += std::string(differ ? "; " : "") + describe_index(offset + static_cast<std::int64_t>(i), shape) + ": got " +
               describe_value(got[i]) + ", expected " + describe_value(expected[i]);
      if (u != std::numeric_limits<std::uint64_t>::max()) first += ", " + std::to_string(u) + (u == 1 ? " ulp" : " ulps") + " apart";
    }
    ++differ;
  }
  if (differ == 0) return {};
  return where + " differs at " + first + " (" + std::to_string(differ) + " of " + std::to_string(got.size()) +
         " elements differ" + (tol.ulps || tol.eps ? ", tolerance " + std::to_string(tol.ulps) + " ulps or " +
                                                           shardopt::detail::fmt(tol.eps) + " eps"
                                                     : std::string(", bitwise")) +
         ")";
}

/// @brief Boost.Test assertion: `got` has the same bits as `expected`, element by element.
///
/// `BOOST_TEST(shardopt::testing::same_bits("fc.weight", w, expected));` fails with a message naming
/// the parameter, the rank, the first differing indices (and multi-indices) and both values.
/// `got` and `expected` are Kokkos views (any memory space), std::vectors or std::spans.
/// @param name the parameter's name, as registered
/// @param got what the optimizer computed
/// @param expected the reference
/// @param rank the rank to name in the message (default: this process's rank in MPI_COMM_WORLD)
template <class Got, class Expected>
boost::test_tools::assertion_result same_bits(std::string_view name, const Got& got, const Expected& expected,
                                              int rank = world_rank()) {
  const auto g = host_values(got);
  const auto e = host_values(expected);
  using T = typename decltype(g.values)::value_type;
  static_assert(std::is_same_v<T, typename decltype(e.values)::value_type>,
                "shardopt::testing::same_bits: got and expected must have the same element type");
  const std::string msg = compare_values<T>("parameter '" + std::string(name) + "'", g.values, e.values, {}, rank, g.shape);
  boost::test_tools::assertion_result r(msg.empty());
  if (!msg.empty()) r.message() << msg;
  return r;
}

/// @brief Boost.Test assertion: every element of `got` is within `tol` of `expected` (see same_bits()).
template <class Got, class Expected>
boost::test_tools::assertion_result within_tolerance(std::string_view name, const Got& got, const Expected& expected,
                                                     Tolerance tol, int rank = world_rank()) {
  const auto g = host_values(got);
  const auto e = host_values(expected);
  using T = typename decltype(g.values)::value_type;
  static_assert(std::is_same_v<T, typename decltype(e.values)::value_type>,
                "shardopt::testing::within_tolerance: got and expected must have the same element type");
  const std::string msg = compare_values<T>("parameter '" + std::string(name) + "'", g.values, e.values, tol, rank, g.shape);
  boost::test_tools::assertion_result r(msg.empty());
  if (!msg.empty()) r.message() << msg;
  return r;
}

/// @brief The message of same_on_all_ranks(): "" when every rank of `comm` holds the same bits in
/// `local`, otherwise where rank r first differs from rank 0 (collective; the same text on every rank).
template <class Comm, class T>
std::string differences_across_ranks(Comm& comm, std::string_view what, std::span<const T> local,
                                     std::span<const std::int64_t> shape = {}) {
  const auto p = static_cast<std::size_t>(comm.size());
  std::vector<std::int64_t> sizes(p, 0);
  const std::int64_t n = static_cast<std::int64_t>(local.size());
  comm.all_gather(std::span<const std::int64_t>(&n, 1), std::span<std::int64_t>(sizes));
  std::string out;
  for (std::size_t r = 1; r < p; ++r)
    if (sizes[r] != sizes[0])
      out += std::string(out.empty() ? "" : "; ") + std::string(what) + " has " + std::to_string(sizes[r]) + " elements on rank " +
             std::to_string(r) + " but " + std::to_string(sizes[0]) + " on rank 0";
  if (!out.empty()) return out;
  std::vector<T> all(p * local.size());
  comm.all_gather(local, std::span<T>(all));
  const std::span<const T> zero(all.data(), local.size());
  for (std::size_t r = 1; r < p; ++r) {
    const std::span<const T> theirs(all.data() + r * local.size(), local.size());
    const std::string m = compare_values<T>(what, theirs, zero, {}, static_cast<int>(r), shape);
    if (!m.empty()) out += std::string(out.empty() ? "" : "; ") + m;
  }
  if (!out.empty()) out += " (compared with rank 0's values: 'expected' is rank 0's)";
  return out;
}

/// @brief Boost.Test assertion, collective over `comm` (any shardopt communicator): every rank
/// holds the same bits in `values` (a Kokkos view, std::vector or std::span). On a difference every
/// rank fails with the same message naming the parameter, the rank that differs from rank 0, the
/// index and both values.
template <class Comm, class Values>
boost::test_tools::assertion_result same_on_all_ranks(Comm& comm, std::string_view name, const Values& values) {
  const auto v = host_values(values);
  using T = typename decltype(v.values)::value_type;
  const std::string msg = differences_across_ranks<Comm, T>(comm, "parameter '" + std::string(name) + "'", v.values, v.shape);
  boost::test_tools::assertion_result r(msg.empty());
  if (!msg.empty()) r.message() << msg;
  return r;
}

}  // namespace shardopt::testing
