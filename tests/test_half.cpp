// SPDX-License-Identifier: BSD-3-Clause
// shardopt::bfloat16 and shardopt::float16 against torch's conversions (tests/golden/half.txt, made by
// scripts/make_half_golden.py, whose docstring defines the input sets rebuilt here), on the host and
// in a kernel of the default execution space; shardopt::GradScaler's scales against torch's
// (tests/golden/grad_scaler.txt, made by scripts/make_grad_scaler_golden.py).
#include <boost/test/unit_test.hpp>

#include <shardopt/grad_scaler.hpp>
#include <shardopt/half.hpp>
#include <shardopt/detail/consensus.hpp>  // fnv1a

#include <Kokkos_Core.hpp>

#include <cmath>
#include <bit>
#include <cstdint>
#include <optional>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

namespace so = shardopt;

struct Golden {
  std::map<std::string, std::pair<std::size_t, std::uint64_t>> hashes;  // "conv set" -> (count, fnv)
  std::map<std::string, std::vector<std::pair<std::uint32_t, std::uint32_t>>> pairs;  // conv -> (in, out)
};

const Golden& golden() {
  static const Golden g = [] {
    Golden g;
    std::ifstream in(SHARDOPT_GOLDEN_DIR "/half.txt");
    BOOST_REQUIRE_MESSAGE(in, "cannot open " SHARDOPT_GOLDEN_DIR "/half.txt");
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string kind, conv;
      ls >> kind >> conv;
      if (kind == "hash") {
        std::string set, fnv;
        std::size_t count = 0;
        ls >> set >> count >> fnv;
        g.hashes[conv + " " + set] = {count, std::stoull(fnv, nullptr, 16)};
      } else if (kind == "pair") {
        std::string a, b;
        ls >> a >> b;
        g.pairs[conv].emplace_back(std::stoul(a, nullptr, 16), std::stoul(b, nullptr, 16));
      }
    }
    BOOST_REQUIRE(!g.hashes.empty() && !g.pairs.empty());
    return g;
  }();
  return g;
}

template <class W>
std::uint64_t fnv_of(const std::vector<W>& words) {  // the words' bytes, little-endian
  std::string bytes;
  for (const W w : words)
    for (std::size_t i = 0; i < sizeof(W); ++i) bytes.push_back(static_cast<char>((w >> (8 * i)) & 0xffu));
  return so::detail::fnv1a(bytes);
}

template <class W>
void check_hash(const std::string& key, const std::vector<W>& outputs) {
  const auto it = golden().hashes.find(key);
  BOOST_REQUIRE_MESSAGE(it != golden().hashes.end(), "tests/golden/half.txt has no hash " << key);
  BOOST_TEST(outputs.size() == it->second.first, key << ": " << outputs.size() << " outputs, torch's " << it->second.first);
  BOOST_TEST(fnv_of(outputs) == it->second.second, key << ": the outputs differ from torch's");
}

// Per 16-bit type: its name in the golden file, its largest finite pattern, the conversions.
struct BF16 {
  using type = so::bfloat16;
  static constexpr const char* name = "bf16";
  static constexpr std::uint16_t max_finite = 0x7f7f;
};
struct F16 {
  using type = so::float16;
  static constexpr const char* name = "f16";
  static constexpr std::uint16_t max_finite = 0x7bff;
};
using Types = std::tuple<BF16, F16>;

template <class K>
float widen(std::uint16_t h) {
  return static_cast<float>(K::type::from_bits(h));
}
template <class K>
std::uint16_t narrow(std::uint32_t f) {
  return typename K::type(so::detail::float_of(f)).bits();
}

// The float32 -> 16-bit inputs: for each finite h but the largest of its sign, v, the tie m with
// the next value away from zero, and m's float32 neighbours towards and away from zero.
struct Inputs {
  std::vector<std::uint32_t> values, ties, below, above, interleaved, sweep;
};

template <class K>
Inputs inputs() {
  Inputs in;
  for (std::uint32_t h = 0; h < (1u << 16); ++h) {
    const float v = widen<K>(static_cast<std::uint16_t>(h));
    if (!std::isfinite(v) || (h & 0x7fffu) == K::max_finite) continue;
    const double m = (static_cast<double>(v) + static_cast<double>(widen<K>(static_cast<std::uint16_t>(h + 1)))) / 2;
    BOOST_REQUIRE(static_cast<double>(static_cast<float>(m)) == m);  // a tie, exact in float32
    const std::uint32_t mb = so::detail::bits_of(static_cast<float>(m));
    for (const std::uint32_t b : {so::detail::bits_of(v), mb, mb - 1, mb + 1}) in.interleaved.push_back(b);
    in.values.push_back(so::detail::bits_of(v));
    in.ties.push_back(mb);
    in.below.push_back(mb - 1);
    in.above.push_back(mb + 1);
  }
  for (std::uint32_t i = 0; i < (1u << 20); ++i) in.sweep.push_back(i * 2654435761u);
  return in;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(half)

BOOST_AUTO_TEST_CASE_TEMPLATE(every_16_bit_value_widens_as_in_torch, K, Types) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t h = 0; h < (1u << 16); ++h) out.push_back(so::detail::bits_of(widen<K>(static_cast<std::uint16_t>(h))));
  check_hash(std::string(K::name) + "_to_f32 all", out);
  for (const auto& [h, want] : golden().pairs.at(std::string(K::name) + "_to_f32"))
    BOOST_TEST(out[h] == want, K::name << " 0x" << std::hex << h << " -> 0x" << out[h] << ", torch 0x" << want);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(float32_narrows_as_in_torch, K, Types) {
  const Inputs in = inputs<K>();
  const std::string conv = std::string("f32_to_") + K::name;
  const auto narrowed = [](const std::vector<std::uint32_t>& bits) {
    std::vector<std::uint16_t> out;
    for (const auto b : bits) out.push_back(narrow<K>(b));
    return out;
  };
  check_hash(conv + " values", narrowed(in.values));
  check_hash(conv + " ties", narrowed(in.ties));
  check_hash(conv + " below", narrowed(in.below));
  check_hash(conv + " above", narrowed(in.above));
  check_hash(conv + " sweep", narrowed(in.sweep));
  std::vector<std::uint32_t> all = in.interleaved;
  all.insert(all.end(), in.sweep.begin(), in.sweep.end());
  for (const auto& [b, want] : golden().pairs.at(conv)) {
    all.push_back(b);
    const std::uint16_t got = narrow<K>(b);
    BOOST_TEST(got == want, conv << " 0x" << std::hex << b << " -> 0x" << got << ", torch 0x" << want);
  }
  check_hash(conv + " all", narrowed(all));
}

// Round trips, ties to even and the specials, without torch: what the golden hashes stand for.
BOOST_AUTO_TEST_CASE(rounding_by_hand) {
  // 1 + 2^-8 lies halfway between bfloat16's 1 and 1 + 2^-7: to even (1). 1 + 3 * 2^-8 goes up.
  BOOST_TEST(so::bfloat16(1.0f + 0x1p-8f).bits() == 0x3f80);
  BOOST_TEST(so::bfloat16(1.0f + 3 * 0x1p-8f).bits() == 0x3f82);
  BOOST_TEST(so::float16(1.0f + 0x1p-11f).bits() == 0x3c00);
  BOOST_TEST(so::float16(1.0f + 3 * 0x1p-11f).bits() == 0x3c02);
  BOOST_TEST(so::float16(65504.0f).bits() == 0x7bff);
  BOOST_TEST(so::float16(65519.996f).bits() == 0x7bff);
  BOOST_TEST(so::float16(65520.0f).bits() == 0x7c00);   // the tie with 65536 goes to even: infinity
  BOOST_TEST(so::float16(0x1p-24f).bits() == 0x0001);   // the smallest subnormal
  BOOST_TEST(so::float16(0x1p-25f).bits() == 0x0000);   // half of it: to even, zero
  BOOST_TEST(so::float16(-0x1.8p-25f).bits() == 0x8001);
  BOOST_TEST(static_cast<float>(so::float16::from_bits(0x0001)) == 0x1p-24f);
  BOOST_TEST(static_cast<float>(so::float16::from_bits(0x03ff)) == 1023 * 0x1p-24f);
  BOOST_TEST(std::isnan(static_cast<float>(so::bfloat16(std::nanf("")))));
  BOOST_TEST(std::isnan(static_cast<float>(so::float16(-std::nanf("")))));
  BOOST_TEST(std::signbit(static_cast<float>(so::float16(-std::nanf("")))));
  BOOST_TEST(static_cast<float>(so::bfloat16(-INFINITY)) == -INFINITY);
  BOOST_TEST(std::signbit(static_cast<float>(so::bfloat16(-0.0f))));
  for (std::uint32_t h = 0; h < (1u << 16); ++h) {  // every non-NaN value survives the round trip
    const auto b = static_cast<std::uint16_t>(h);
    const float fb = widen<BF16>(b), fh = widen<F16>(b);
    if (!std::isnan(fb) && narrow<BF16>(so::detail::bits_of(fb)) != b) BOOST_FAIL("bfloat16 0x" << std::hex << h << " does not round-trip");
    if (!std::isnan(fh) && narrow<F16>(so::detail::bits_of(fh)) != b) BOOST_FAIL("float16 0x" << std::hex << h << " does not round-trip");
  }
}

// The conversions in a kernel of the default execution space give the host's bits.
BOOST_AUTO_TEST_CASE(conversions_in_a_kernel_give_the_host_bits) {
  constexpr std::size_t n = 1u << 16;
  Kokkos::View<std::uint32_t*> to_f32_b("to_f32_b", n), to_f32_h("to_f32_h", n);
  Kokkos::View<std::uint16_t*> from_f32_b("from_f32_b", n), from_f32_h("from_f32_h", n);
  Kokkos::parallel_for(
      "half_conversions", Kokkos::RangePolicy<>(0, n), KOKKOS_LAMBDA(const std::size_t i) {
        const auto bits = static_cast<std::uint16_t>(i);
        to_f32_b(i) = so::detail::bits_of(static_cast<float>(so::bfloat16::from_bits(bits)));
        to_f32_h(i) = so::detail::bits_of(static_cast<float>(so::float16::from_bits(bits)));
        const float x = so::detail::float_of(static_cast<std::uint32_t>(i) * 2654435761u);
        from_f32_b(i) = so::bfloat16(x).bits();
        from_f32_h(i) = so::float16(x).bits();
      });
  const auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), to_f32_b);
  const auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), to_f32_h);
  const auto fb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), from_f32_b);
  const auto fh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), from_f32_h);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto bits = static_cast<std::uint16_t>(i);
    const std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u;
    wrong += b(i) != so::detail::bits_of(widen<BF16>(bits)) || h(i) != so::detail::bits_of(widen<F16>(bits)) ||
             fb(i) != narrow<BF16>(x) || fh(i) != narrow<F16>(x);
  }
  BOOST_TEST(wrong == 0u);
}

BOOST_AUTO_TEST_CASE(views_of_16_bit_types_start_at_zero) {
  Kokkos::View<so::bfloat16*> b("b", 3);
  Kokkos::View<so::float16*> h("h", 3);
  const auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  const auto hh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), h);
  for (int i = 0; i < 3; ++i) {
    BOOST_TEST(hb(i).bits() == 0);
    BOOST_TEST(hh(i).bits() == 0);
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- GradScaler ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(grad_scaler)

// The scale (its float32 bits) and growth tracker after each update, as torch.amp.GradScaler's,
// for patterns of overflows, factors that are not powers of two and a growth that would overflow.
BOOST_AUTO_TEST_CASE(scales_follow_torch) {
  std::ifstream in(SHARDOPT_GOLDEN_DIR "/grad_scaler.txt");
  BOOST_REQUIRE_MESSAGE(in, "cannot open " SHARDOPT_GOLDEN_DIR "/grad_scaler.txt");
  std::optional<so::GradScaler> scaler;
  int cases = 0, steps = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "case") {
      so::GradScaler::Options o;
      ls >> o.init_scale >> o.growth_factor >> o.backoff_factor >> o.growth_interval;
      scaler.emplace(o);
      ++cases;
    } else if (kind == "step") {
      int overflow = 0;
      std::string bits;
      std::int64_t tracker = 0;
      ls >> overflow >> bits >> tracker;
      scaler->update(overflow != 0);
      const float s = static_cast<float>(scaler->scale());
      BOOST_TEST(std::bit_cast<std::uint32_t>(s) == std::stoul(bits, nullptr, 16), "case " << cases << " step " << steps << ": " << s);
      BOOST_TEST(scaler->growth_tracker() == tracker);
      ++steps;
    }
  }
  BOOST_TEST(cases == 4);
  BOOST_TEST(steps > 40);
}

BOOST_AUTO_TEST_CASE(defaults_and_errors) {
  so::GradScaler s;
  BOOST_TEST(s.scale() == 65536.0);
  BOOST_TEST(s.inv_scale() == 1.0f / 65536.0f);
  BOOST_TEST((s.state_dict() == so::GradScaler::State{65536.0, 2.0, 0.5, 2000, 0}));
  auto fails = [](so::GradScaler::Options o, const std::string& fragment) {
    try {
      so::GradScaler bad(o);
      BOOST_ERROR("no error for " << fragment);
    } catch (const so::InvalidArgument& e) {
      BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  fails({.growth_factor = 1.0}, "growth_factor=1");
  fails({.backoff_factor = 1.0}, "backoff_factor=1");
  fails({.backoff_factor = 0.0}, "backoff_factor=0");
  fails({.growth_interval = 0}, "growth_interval=0");
  fails({.init_scale = 0.0}, "init_scale=0");
  fails({.init_scale = 1e39}, "init_scale=1e+39");
  so::GradScaler off({.growth_factor = 0.5, .enabled = false});  // disabled: nothing checked, as torch
  BOOST_TEST(off.scale() == 1.0);
  off.update(true);
  BOOST_TEST(off.scale() == 1.0);
  // load_state_dict: all or nothing.
  BOOST_CHECK_THROW(s.load_state_dict({1024.0, 2.0, 0.5, 10, 10}), so::InvalidArgument);
  BOOST_TEST(s.scale() == 65536.0);
  s.load_state_dict({1024.0, 4.0, 0.25, 10, 9});
  BOOST_TEST((s.state_dict() == so::GradScaler::State{1024.0, 4.0, 0.25, 10, 9}));
  s.update(false);
  BOOST_TEST(s.scale() == 4096.0);
  // set_scale (torch's update(new_scale)): a finite float32 > 0, or an error that changes nothing.
  BOOST_CHECK_THROW(s.set_scale(1e39), so::InvalidArgument);
  BOOST_CHECK_THROW(s.set_scale(-2.0), so::InvalidArgument);
  BOOST_TEST(s.scale() == 4096.0);
  s.set_scale(3.0);
  BOOST_TEST(s.scale() == 3.0);
  BOOST_TEST(s.inv_scale() == static_cast<float>(1.0 / 3.0));
}

BOOST_AUTO_TEST_SUITE_END()
