// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Named option fields: how an algorithm's `Options` struct is listed, compared and printed.

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <shardopt/detail/format.hpp>

namespace shardopt {

/// @brief One named member of an algorithm's `Options` struct.
/// @tparam Options the algorithm's options struct.
/// @tparam V the member's type: `double` or `bool`.
template <class Options, class V>
struct OptionField {
  static_assert(std::is_same_v<V, double> || std::is_same_v<V, bool>,
                "shardopt::OptionField: an option must be a double or a bool.");
  /// A pointer to a member of `Options` of type `V` (an alias: nvcc's host code would otherwise
  /// spell the declaration with parentheses, which g++ -Wall warns about).
  using member_pointer = V Options::*;
  std::string_view name;  ///< torch.optim's name of the option, e.g. "lr".
  member_pointer member;  ///< the member it names.
};

/// @brief Names the member `m` of `Options` as the option `name`; use in `Algo::option_fields`.
template <class Options, class V>
constexpr OptionField<Options, V> field(std::string_view name, V Options::*m) {
  return {name, m};
}

/// @brief Calls `f(name, value)` for every option of `o`, in the algorithm's declared order.
/// @tparam Algo an algorithm policy with `option_fields`.
template <class Algo, class Options, class F>
void for_each_option(Options& o, F&& f) {
  std::apply([&](const auto&... fd) { (f(fd.name, o.*(fd.member)), ...); }, Algo::option_fields);
}

/// @brief The options of `o` as (name, value) pairs, booleans as 0 and 1.
template <class Algo>
std::vector<std::pair<std::string, double>> option_values(const typename Algo::Options& o) {
  std::vector<std::pair<std::string, double>> out;
  for_each_option<Algo>(o, [&](std::string_view n, auto v) { out.emplace_back(std::string(n), double(v)); });
  return out;
}

/// @brief Sets the option called `name` of `o` to `value`.
/// @return false if the algorithm has no option of that name.
template <class Algo>
bool set_option(typename Algo::Options& o, std::string_view name, double value) {
  bool found = false;
  for_each_option<Algo>(o, [&](std::string_view n, auto& v) {
    if (n == name) {
      v = static_cast<std::remove_reference_t<decltype(v)>>(value);
      found = true;
    }
  });
  return found;
}

/// @brief "lr=0.001 amsgrad=1 ..." for messages and digests.
template <class Algo>
std::string describe_options(const typename Algo::Options& o) {
  std::string s;
  for (const auto& [n, v] : option_values<Algo>(o)) s += (s.empty() ? "" : " ") + n + "=" + detail::fmt(v);
  return s;
}

}  // namespace shardopt
