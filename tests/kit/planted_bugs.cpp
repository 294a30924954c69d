// SPDX-License-Identifier: BSD-3-Clause
// Bugs a user planted in their own Adamax to try the test kit, each as a deliberately wrong policy
// whose conformance suite must fail saying what is wrong (ctest kit.planted_bugs.np1 and .np3,
// through tests/kit/expect_failure.cmake):
// - update() reads a slot that slot_used() says is not kept: a message naming the slot, not a crash;
// - torch's lerp written with one branch, and the bias correction rounded to T: caught only because
//   the kit demands the same bits by default;
// - a max that swallows NaN: caught only with NaN among the inputs.
// Last, a test case that crashes: the test cases after it did not run and must not be reported passed.
#define BOOST_TEST_MODULE planted_bugs
#include <shardopt/testing.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>

SHARDOPT_TESTING_GLOBAL_FIXTURE();

namespace {

// torch.optim.Adamax, right (the base of the wrong ones).
struct Adamax {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "Adamax";
  struct Options {
    double lr = 2e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    bool maximize = false;
  };
  static constexpr auto option_fields =
      std::tuple{shardopt::field("lr", &Options::lr), shardopt::field("beta1", &Options::beta1),
                 shardopt::field("beta2", &Options::beta2), shardopt::field("eps", &Options::eps),
                 shardopt::field("weight_decay", &Options::weight_decay), shardopt::field("maximize", &Options::maximize)};
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_inf"};
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  static void validate(const Options& o) { shardopt::require(0.0 <= o.lr, shardopt::invalid("Invalid learning rate", o.lr)); }
  template <class T>
  struct Scalars {
    T one_minus_beta1, beta2, eps, weight_decay, neg_clr;
    bool maximize;
  };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    const double clr = o.lr / (1.0 - std::pow(o.beta1, static_cast<double>(step)));
    return {T(1.0 - o.beta1), T(o.beta2), T(o.eps), T(o.weight_decay), T(-clr), o.maximize};
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static T maximum(T a, T b) {
    return shardopt::math::maximum(a, b);
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static T lerp(T a, T b, T w) {
    return shardopt::math::lerp(a, b, w);
  }
  template <class A, class T>
  KOKKOS_INLINE_FUNCTION static void adamax(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    if (s.maximize) g = -g;
    if (s.weight_decay != T(0)) g = g + s.weight_decay * p;
    st[0] = A::lerp(st[0], g, s.one_minus_beta1);
    st[1] = A::maximum(st[1] * s.beta2, shardopt::math::abs(g) + s.eps);
    p = p + (s.neg_clr * st[0]) / st[1];
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    adamax<Adamax>(s, p, g, st);
  }
};

// WRONG: says exp_inf is not kept, and reads it.
struct UnusedSlotAdamax : Adamax {
  static constexpr std::string_view name = "UnusedSlotAdamax";
  static constexpr bool slot_used(const Options&, std::size_t k) { return k == 0; }
};

// WRONG: torch's lerp has two branches (start + w (end - start) for w < 0.5, end - (end - start) (1 - w) otherwise).
struct OneBranchLerpAdamax : Adamax {
  static constexpr std::string_view name = "OneBranchLerpAdamax";
  template <class T>
  KOKKOS_INLINE_FUNCTION static T lerp(T a, T b, T w) {
    return a + w * (b - a);
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    adamax<OneBranchLerpAdamax>(s, p, g, st);
  }
};

// WRONG: torch computes the bias correction in double (Python floats) and rounds once.
struct FloatBiasCorrectionAdamax : Adamax {
  static constexpr std::string_view name = "FloatBiasCorrectionAdamax";
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    Scalars<T> s = Adamax::prepare<T>(o, step);
    s.neg_clr = -(T(o.lr) / (T(1) - std::pow(T(o.beta1), T(step))));
    return s;
  }
};

// WRONG: torch.maximum propagates NaN; this max returns its first argument when the second is NaN.
struct NanSwallowingAdamax : Adamax {
  static constexpr std::string_view name = "NanSwallowingAdamax";
  template <class T>
  KOKKOS_INLINE_FUNCTION static T maximum(T a, T b) {
    return a < b ? b : a;
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 2> st) {
    adamax<NanSwallowingAdamax>(s, p, g, st);
  }
};

// Adamax for one element, as torch.optim.Adamax computes it.
const auto adamax_reference = [](const Adamax::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  const T w = T(1 - o.beta1);
  state[0] = w < T(0.5) ? state[0] + w * (g - state[0]) : g - (g - state[0]) * (T(1) - w);
  const T a = state[1] * T(o.beta2), b = std::fabs(g) + T(o.eps);
  state[1] = std::isnan(a) || std::isnan(b) ? a + b : std::fmax(a, b);
  const double clr = o.lr / (1 - std::pow(o.beta1, double(step)));
  p = p + (T(-clr) * state[0]) / state[1];
};

}  // namespace

// The right one passes (the suites below fail for their bug, not for the reference).
SHARDOPT_ALGORITHM_CONFORMANCE(adamax_conformance, Adamax, adamax_reference, {.lr = 0.01, .beta1 = 0.3, .weight_decay = 0.1},
                               {.beta1 = 0.5, .beta2 = 0.9, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(unused_slot_conformance, UnusedSlotAdamax, adamax_reference);
SHARDOPT_ALGORITHM_CONFORMANCE(one_branch_lerp_conformance, OneBranchLerpAdamax, adamax_reference, {.beta1 = 0.3});
SHARDOPT_ALGORITHM_CONFORMANCE(float_bias_correction_conformance, FloatBiasCorrectionAdamax, adamax_reference);
SHARDOPT_ALGORITHM_CONFORMANCE(nan_swallowing_conformance, NanSwallowingAdamax, adamax_reference);

// A crash the kit cannot catch: Boost.Test stops the run here.
BOOST_AUTO_TEST_CASE(crashes) {
  volatile int* volatile nowhere = nullptr;  // volatile twice: the compiler neither sees the null nor drops the store
  *nowhere = 1;
}
BOOST_AUTO_TEST_SUITE(never_runs)
BOOST_AUTO_TEST_CASE(after_the_crash) { BOOST_TEST(true); }
BOOST_AUTO_TEST_SUITE_END()
