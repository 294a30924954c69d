// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The element types the optimizer steps, one lane each. A lane (ShardedOptimizer::Lane<T>)
/// holds everything of one element type: its plan, bucket buffers, device tables and state. The
/// engine never names a type: it visits a parameter's Dtype (visit_dtype) or every lane
/// (for_each_lane), so adding an element type is adding it to ElementTypes with its ElementType.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace shardopt::detail {

/// What the engine needs to know of an element type: its name in state dicts and messages, and
/// its dtype code in safetensors files.
template <class T>
struct ElementType;
/// float: "float32", safetensors "F32".
template <>
struct ElementType<float> {
  static constexpr std::string_view name = "float32";  ///< in state dicts and messages
  static constexpr std::string_view file = "F32";      ///< in safetensors headers
};
/// double: "float64", safetensors "F64".
template <>
struct ElementType<double> {
  static constexpr std::string_view name = "float64";  ///< in state dicts and messages
  static constexpr std::string_view file = "F64";      ///< in safetensors headers
};

/// The element types of parameters, in lane order.
using ElementTypes = std::tuple<float, double>;
/// How many there are.
inline constexpr std::size_t num_element_types = std::tuple_size_v<ElementTypes>;

/// A parameter's element type: its index in ElementTypes.
enum class Dtype : std::uint8_t {};

template <class T, class... Ts>
constexpr std::size_t index_in(std::tuple<Ts...>*) {
  constexpr bool same[] = {std::is_same_v<T, Ts>...};
  for (std::size_t i = 0; i < sizeof...(Ts); ++i)
    if (same[i]) return i;
  return sizeof...(Ts);
}

/// Whether T is one of ElementTypes.
template <class T>
inline constexpr bool is_element_type = index_in<T>(static_cast<ElementTypes*>(nullptr)) < num_element_types;

/// The Dtype of T.
template <class T>
constexpr Dtype dtype_of() {
  static_assert(is_element_type<T>, "shardopt: not an element type of detail::ElementTypes");
  return static_cast<Dtype>(index_in<T>(static_cast<ElementTypes*>(nullptr)));
}

template <class F, std::size_t... I>
void visit_dtype_impl(Dtype d, F& f, std::index_sequence<I...>) {
  (void)((static_cast<std::size_t>(d) == I ? (f(std::type_identity<std::tuple_element_t<I, ElementTypes>>{}), true) : false) || ...);
}
/// Calls `f(std::type_identity<T>{})` with T the element type of `d`.
template <class F>
void visit_dtype(Dtype d, F&& f) {
  visit_dtype_impl(d, f, std::make_index_sequence<num_element_types>{});
}

/// "float32", "float64", ...
inline std::string dtype_name(Dtype d) {
  std::string n;
  visit_dtype(d, [&](auto t) { n = ElementType<typename decltype(t)::type>::name; });
  return n;
}
/// Bytes per element.
inline std::size_t dtype_size(Dtype d) {
  std::size_t n = 0;
  visit_dtype(d, [&](auto t) { n = sizeof(typename decltype(t)::type); });
  return n;
}
/// The safetensors dtype code ("F32", ...).
inline std::string file_dtype(Dtype d) {
  std::string n;
  visit_dtype(d, [&](auto t) { n = ElementType<typename decltype(t)::type>::file; });
  return n;
}
/// The element type of a safetensors dtype code, if it is one of ElementTypes.
inline std::optional<Dtype> dtype_of_file(std::string_view code) {
  for (std::size_t i = 0; i < num_element_types; ++i)
    if (file_dtype(static_cast<Dtype>(i)) == code) return static_cast<Dtype>(i);
  return std::nullopt;
}

template <template <class> class Lane, class Types>
struct lanes_of_impl;
template <template <class> class Lane, class... Ts>
struct lanes_of_impl<Lane, std::tuple<Ts...>> {
  using type = std::tuple<Lane<Ts>...>;
};
/// `std::tuple<Lane<T>...>` over ElementTypes.
template <template <class> class Lane>
using lanes_of = typename lanes_of_impl<Lane, ElementTypes>::type;

/// Calls `f(lane)` for every lane of `lanes` (a lanes_of tuple), in lane order.
template <class Lanes, class F>
void for_each_lane(Lanes& lanes, F&& f) {
  std::apply([&](auto&... lane) { (f(lane), ...); }, lanes);
}

}  // namespace shardopt::detail
