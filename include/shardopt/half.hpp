// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief 16-bit floating-point types: shardopt::bfloat16 and shardopt::float16.
///
/// Storage types with torch's conversions: explicit construction from `float` rounds to nearest,
/// ties to even, and explicit conversion to `float` is exact, with the same bits as
/// `tensor.to(torch.bfloat16)`, `tensor.to(torch.float16)` and `.to(torch.float32)` on torch's
/// default CPU kernels (tests/test_half.cpp against tests/golden/half.txt, made by
/// scripts/make_half_golden.py: every 16-bit value, every tie between two of them and its
/// neighbours, a sweep of a million float32 patterns, and specials). NaNs stay NaNs: a float32
/// NaN becomes bfloat16 0x7fc0 as in torch (c10::BFloat16), and float16 `sign | 0x7e00 | payload`
/// as the x86 and GPU conversion instructions do (the payload's top 9 bits); a float16 NaN becomes
/// the quiet float32 NaN of the same sign and payload. (torch's own NaN bits differ between its
/// kernels: its AVX2 kernels give 0xffff for a NaN to bfloat16.)
///
/// The conversions are integer operations, the same on a host and in a GPU kernel whatever the
/// floating-point mode (flush-to-zero included). There is no arithmetic on the types: convert to
/// `float`, compute, convert back.
///
/// @code
/// shardopt::bfloat16 b(3.14159f);      // 0x4049: 3.140625
/// float f = static_cast<float>(b);
/// auto h = shardopt::float16::from_bits(0x3c00);   // 1.0
/// @endcode

#include <Kokkos_Macros.hpp>

#include <cstdint>
#include <type_traits>

namespace shardopt {

namespace detail {

// __builtin_memcpy, not std::memcpy: HIP's clang has std::memcpy host-only (nvcc, g++ and clang
// take the builtin anywhere). C++20's std::bit_cast is not device code under every toolchain.
KOKKOS_FORCEINLINE_FUNCTION std::uint32_t bits_of(float f) {
  std::uint32_t u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}

KOKKOS_FORCEINLINE_FUNCTION float float_of(std::uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

/// float32 -> bfloat16 bits: round to nearest even; any NaN -> 0x7fc0 (torch's c10::BFloat16).
KOKKOS_FORCEINLINE_FUNCTION std::uint16_t bfloat16_bits(float f) {
  const std::uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  // Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry out of the mantissa
  // moves the exponent up, to infinity beyond the largest finite value.
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/// bfloat16 bits -> float32: exact (the top half of the float32 pattern).
KOKKOS_FORCEINLINE_FUNCTION float float_from_bfloat16_bits(std::uint16_t b) {
  return float_of(static_cast<std::uint32_t>(b) << 16);
}

/// float32 -> float16 bits (IEEE binary16): round to nearest even, overflow to infinity, float16
/// subnormals rounded like the rest; a NaN keeps its sign and the top 9 bits of its payload and
/// becomes quiet. Without branches (every case computed, one selected) so that loops of it
/// vectorize: float16 parameters step at the speed of bfloat16 ones.
KOKKOS_FORCEINLINE_FUNCTION std::uint16_t float16_bits(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  // >= 2^-14, a normal float16: the exponent rebiased from 127 to 15, the 13 dropped bits rounded
  // to nearest even by an addition whose carry may move the exponent up (to infinity above 65504).
  const std::uint32_t m = a - 0x38000000u;
  const std::uint32_t normal = (m + 0xfffu + ((m >> 13) & 1u)) >> 13;
  // Below 2^-14, a subnormal (or zero): added to 0.5, whose ulp is 2^-24, the float16 subnormals'
  // unit, the float32 addition rounds |f| to nearest even in that unit; the low bits of the sum are
  // the result. (Inputs below 2^-25 give 0, so flushing float32 subnormals to zero changes nothing.)
  const std::uint32_t subnormal = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  const std::uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  // Selected by masks (see float_from_float16_bits); >= 65520 is infinity.
  const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(a < 0x38800000u);
  const std::uint32_t is_infinite = 0u - static_cast<std::uint32_t>(a >= 0x477ff000u && a <= 0x7f800000u);
  const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>(a > 0x7f800000u);
  const std::uint32_t r = (subnormal & is_subnormal) | (0x7c00u & is_infinite) | (nan & is_nan) |
                          (normal & ~(is_subnormal | is_infinite | is_nan));
  return static_cast<std::uint16_t>(sign | r);
}

/// float16 bits -> float32: exact; a NaN becomes the quiet NaN with the same sign and payload.
/// Without branches, like float16_bits.
KOKKOS_FORCEINLINE_FUNCTION float float_from_float16_bits(std::uint16_t h) {
  const std::uint32_t sign = (static_cast<std::uint32_t>(h) & 0x8000u) << 16;
  const std::uint32_t exponent = (static_cast<std::uint32_t>(h) >> 10) & 0x1fu;
  const std::uint32_t mantissa = static_cast<std::uint32_t>(h) & 0x3ffu;
  // A normal: the exponent rebiased from 15 to 127. A subnormal or zero: mantissa * 2^-24, exact in
  // float32 (and a normal float32, so flushing subnormals to zero changes nothing). Infinity, NaN:
  // all exponent bits, the payload kept, a NaN made quiet.
  const std::uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
  const std::uint32_t subnormal = bits_of(static_cast<float>(static_cast<std::int32_t>(mantissa)) * 0x1p-24f);
  const std::uint32_t special = 0x7f800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0u);
  // Selected by masks, not branches: the conversion above must not become conditional (a
  // conditional float operation keeps the loop from vectorizing under -ftrapping-math).
  const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(exponent == 0), is_special = 0u - static_cast<std::uint32_t>(exponent == 0x1fu);
  const std::uint32_t r = (subnormal & is_subnormal) | (special & is_special) | (normal & ~(is_subnormal | is_special));
  return float_of(sign | r);
}

/// The storage of a 16-bit floating-point format: Format's narrow(float) and widen(bits).
template <class Format>
class Half16 {
 public:
  Half16() = default;
  /// Rounds to nearest, ties to even (Format::narrow).
  KOKKOS_INLINE_FUNCTION explicit Half16(float f) : bits_(Format::narrow(f)) {}
  /// Exact (Format::widen).
  KOKKOS_INLINE_FUNCTION explicit operator float() const { return Format::widen(bits_); }
  /// The value with this bit pattern.
  KOKKOS_INLINE_FUNCTION static constexpr Half16 from_bits(std::uint16_t bits) {
    Half16 h{};
    h.bits_ = bits;
    return h;
  }
  /// The bit pattern (torch: `tensor.view(torch.int16)`).
  KOKKOS_INLINE_FUNCTION constexpr std::uint16_t bits() const { return bits_; }

 private:
  std::uint16_t bits_;
};

struct BFloat16Format {
  KOKKOS_INLINE_FUNCTION static std::uint16_t narrow(float f) { return bfloat16_bits(f); }
  KOKKOS_INLINE_FUNCTION static float widen(std::uint16_t b) { return float_from_bfloat16_bits(b); }
};
struct Float16Format {
  KOKKOS_INLINE_FUNCTION static std::uint16_t narrow(float f) { return float16_bits(f); }
  KOKKOS_INLINE_FUNCTION static float widen(std::uint16_t h) { return float_from_float16_bits(h); }
};

}  // namespace detail

/// bfloat16 (1 sign, 8 exponent, 7 mantissa bits): float32's range at 8 bits of precision; a NaN
/// narrows to 0x7fc0. Trivially copyable; default construction leaves it uninitialized, like
/// `float` (a value-initialized one, as in a new `Kokkos::View`, is +0).
using bfloat16 = detail::Half16<detail::BFloat16Format>;

/// float16, IEEE 754 binary16 (1 sign, 5 exponent, 10 mantissa bits; largest finite 65504,
/// subnormals down to 2^-24; 65520 and above narrow to infinity). Trivially copyable; default
/// construction leaves it uninitialized.
using float16 = detail::Half16<detail::Float16Format>;

/// @brief Declares a 16-bit floating-point type of the user's with the bits of shardopt::bfloat16
/// or shardopt::float16: specialize it with `using type = shardopt::bfloat16;` (or `float16`), and
/// views and ShardedTensors of that type are parameters like those of shardopt's type (the memory
/// is read and written as shardopt's type; the type must be 2 bytes, trivially destructible).
/// shardopt specializes it for `Kokkos::Experimental::half_t` and `bhalf_t` where the user's
/// Kokkos makes them 16-bit types (CUDA, HIP, SYCL builds; elsewhere they are `float`).
template <class T>
struct element_alias {};

static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2);
static_assert(sizeof(float16) == 2 && alignof(float16) == 2);
static_assert(std::is_trivially_copyable_v<bfloat16> && std::is_trivially_default_constructible_v<bfloat16>);
static_assert(std::is_trivially_copyable_v<float16> && std::is_trivially_default_constructible_v<float16>);
static_assert(std::is_standard_layout_v<bfloat16> && std::is_standard_layout_v<float16>);

}  // namespace shardopt
