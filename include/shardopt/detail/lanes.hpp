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

#include <shardopt/half.hpp>

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

/// bfloat16: "bfloat16", safetensors "BF16" (stepped in the float32 lane, with float32 masters).
template <>
struct ElementType<bfloat16> {
  static constexpr std::string_view name = "bfloat16";  ///< in state dicts and messages
  static constexpr std::string_view file = "BF16";      ///< in safetensors headers
};
/// float16: "float16", safetensors "F16" (stepped in the float32 lane, with float32 masters).
template <>
struct ElementType<float16> {
  static constexpr std::string_view name = "float16";  ///< in state dicts and messages
  static constexpr std::string_view file = "F16";      ///< in safetensors headers
};

/// The element types of parameters: the lanes' types first, in lane order, then the 16-bit types.
using ElementTypes = std::tuple<float, double, bfloat16, float16>;
/// The lanes' types: the types of state, buckets and master weights.
using LaneTypes = std::tuple<float, double>;
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

/// The element type a parameter of type T is stepped as: T, or element_alias<T>::type.
template <class T, class = void>
struct element_of {
  using type = T;
};
template <class T>
struct element_of<T, std::void_t<typename element_alias<T>::type>> {
  using type = typename element_alias<T>::type;
  static_assert(std::is_same_v<type, bfloat16> || std::is_same_v<type, float16>,
                "shardopt::element_alias<T>::type must be shardopt::bfloat16 or shardopt::float16");
  static_assert(sizeof(T) == 2 && alignof(T) <= 2 && std::is_trivially_destructible_v<T>,
                "shardopt::element_alias<T>: T must be a 2-byte type (its memory is read and written as shardopt's)");
};
/// T, or the shardopt type it is an alias of (element_alias).
template <class T>
using element_t = typename element_of<T>::type;

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

/// The type a parameter of type T is stepped in (its lane's, its state's and its master weights'):
/// float for the 16-bit types, T itself otherwise.
template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>, float, T>;

/// How a parameter's elements are stored in memory, as the kernels of its lane read and write them:
/// as the lane's type (0), or as bfloat16 (1) or float16 (2) around a float32 lane.
enum class Storage : std::uint8_t { lane = 0, bfloat16 = 1, float16 = 2 };

/// The storage of element type T.
template <class T>
constexpr Storage storage_of() {
  if constexpr (std::is_same_v<T, bfloat16>) return Storage::bfloat16;
  else if constexpr (std::is_same_v<T, float16>) return Storage::float16;
  else return Storage::lane;
}

/// Whether parameters of `d` keep master weights (16-bit types).
inline Storage storage_of(Dtype d) {
  Storage s = Storage::lane;
  visit_dtype(d, [&](auto t) { s = storage_of<typename decltype(t)::type>(); });
  return s;
}

/// The Dtype of the lane a parameter of `d` is stepped in.
inline Dtype lane_dtype(Dtype d) {
  Dtype out{};
  visit_dtype(d, [&](auto t) { out = dtype_of<compute_t<typename decltype(t)::type>>(); });
  return out;
}

/// Calls `f(std::type_identity<T>{})` with T the type of the lane of `d` (its state's type).
template <class F>
void visit_lane(Dtype d, F&& f) {
  visit_dtype(d, [&](auto t) { f(std::type_identity<compute_t<typename decltype(t)::type>>{}); });
}

/// `base + offset` elements of storage `s` around lane type T (byte arithmetic: `base` may hold 16-bit elements).
template <class T>
KOKKOS_INLINE_FUNCTION void* element_at(void* base, Storage s, std::size_t offset) {
  return static_cast<char*>(base) + offset * (s == Storage::lane ? sizeof(T) : 2);
}
template <class T>
KOKKOS_INLINE_FUNCTION const void* element_at(const void* base, Storage s, std::size_t offset) {
  return static_cast<const char*>(base) + offset * (s == Storage::lane ? sizeof(T) : 2);
}
/// Element j of `p` (storage `s`) as lane type T.
template <class T>
KOKKOS_INLINE_FUNCTION T load_element(const void* p, Storage s, std::size_t j) {
  if (s == Storage::bfloat16) return static_cast<T>(float_from_bfloat16_bits(static_cast<const std::uint16_t*>(p)[j]));
  if (s == Storage::float16) return static_cast<T>(float_from_float16_bits(static_cast<const std::uint16_t*>(p)[j]));
  return static_cast<const T*>(p)[j];
}
/// Stores `v` as element j of `p` (storage `s`), rounded to nearest even for the 16-bit types.
template <class T>
KOKKOS_INLINE_FUNCTION void store_element(void* p, Storage s, std::size_t j, T v) {
  if (s == Storage::bfloat16) static_cast<std::uint16_t*>(p)[j] = bfloat16_bits(static_cast<float>(v));
  else if (s == Storage::float16) static_cast<std::uint16_t*>(p)[j] = float16_bits(static_cast<float>(v));
  else static_cast<T*>(p)[j] = v;
}

template <template <class> class Lane, class Types>
struct lanes_of_impl;
template <template <class> class Lane, class... Ts>
struct lanes_of_impl<Lane, std::tuple<Ts...>> {
  using type = std::tuple<Lane<Ts>...>;
};
/// `std::tuple<Lane<T>...>` over LaneTypes.
template <template <class> class Lane>
using lanes_of = typename lanes_of_impl<Lane, LaneTypes>::type;

/// Calls `f(lane)` for every lane of `lanes` (a lanes_of tuple), in lane order.
template <class Lanes, class F>
void for_each_lane(Lanes& lanes, F&& f) {
  std::apply([&](auto&... lane) { (f(lane), ...); }, lanes);
}

}  // namespace shardopt::detail
