// SPDX-License-Identifier: BSD-3-Clause
// The test kit (<shardopt/testing.hpp>) on our own policies, run at world sizes 1 to 4: the
// algorithm conformance suite on every bundled algorithm and on examples/lion.hpp's Lion, the
// layout suite on a layout written here, the communicator suite on comm::Serial and comm::Mpi; and
// deliberately wrong policies, whose checks must fail with a message that says what is wrong.
#include <shardopt/testing.hpp>

#include "../examples/lion.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace so = shardopt;
namespace st = shardopt::testing;

namespace {

// ---- scalar definitions, written from torch.optim's single-tensor code (foreach=False) --------------

template <class T>
T lerp(T start, T end, T weight) {  // torch's two-branch lerp
  return weight < T(0.5) ? start + weight * (end - start) : end - (end - start) * (T(1) - weight);
}

template <class T>
T maximum(T a, T b) {  // torch.maximum: NaN in, NaN out
  return std::isnan(a) || std::isnan(b) ? a + b : std::fmax(a, b);
}

const auto sgd_reference = [](const so::algo::SGD::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  if (o.momentum != 0) {
    T& buf = state[0];
    buf = step == 1 ? g : buf * T(o.momentum) + T(1 - o.dampening) * g;
    g = o.nesterov ? g + T(o.momentum) * buf : buf;
  }
  p = p + T(-o.lr) * g;
};

const auto adagrad_reference = [](const so::algo::Adagrad::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  const double clr = o.lr / (1 + double(step - 1) * o.lr_decay);
  state[0] = state[0] + g * g;
  p = p + (T(-clr) * g) / (std::sqrt(state[0]) + T(o.eps));
};

template <bool decoupled>
auto adam_reference() {
  return [](const auto& o, std::int64_t step, auto& p, auto grad, auto state) {
    using T = std::remove_reference_t<decltype(p)>;
    T g = o.maximize ? -grad : grad;
    if (o.weight_decay != 0) {
      if (decoupled) p = p * T(1 - o.lr * o.weight_decay);
      else g = g + T(o.weight_decay) * p;
    }
    const double bc1 = 1 - std::pow(o.beta1, double(step)), bc2 = 1 - std::pow(o.beta2, double(step));
    state[0] = lerp(state[0], g, T(1 - o.beta1));
    state[1] = state[1] * T(o.beta2) + (T(1 - o.beta2) * g) * g;
    T second = state[1];
    if (o.amsgrad) second = state[2] = maximum(state[2], state[1]);
    const T denom = std::sqrt(second) / T(std::sqrt(bc2)) + T(o.eps);
    p = p + (T(-(o.lr / bc1)) * state[0]) / denom;
  };
}

const auto rmsprop_reference = [](const so::algo::RMSprop::Options& o, std::int64_t, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  state[0] = state[0] * T(o.alpha) + (T(1 - o.alpha) * g) * g;
  T avg;
  if (o.centered) {
    state[2] = lerp(state[2], g, T(1 - o.alpha));
    avg = std::sqrt(state[0] + (T(-1) * state[2]) * state[2]);
  } else {
    avg = std::sqrt(state[0]);
  }
  avg = avg + T(o.eps);
  if (o.momentum > 0) {
    state[1] = state[1] * T(o.momentum) + g / avg;
    p = p + T(-o.lr) * state[1];
  } else {
    p = p + (T(-o.lr) * g) / avg;
  }
};

const auto adamax_reference = [](const so::algo::Adamax::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  state[0] = lerp(state[0], g, T(1 - o.beta1));
  state[1] = maximum(state[1] * T(o.beta2), std::fabs(g) + T(o.eps));
  p = p + (T(-(o.lr / (1 - std::pow(o.beta1, double(step))))) * state[0]) / state[1];
};

const auto radam_reference = [](const so::algo::RAdam::Options& o, std::int64_t step, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) {
    if (o.decoupled_weight_decay) p = p * T(1 - o.lr * o.weight_decay);
    else g = g + T(o.weight_decay) * p;
  }
  state[0] = lerp(state[0], g, T(1 - o.beta1));
  state[1] = state[1] * T(o.beta2) + (T(1 - o.beta2) * g) * g;
  const double t = double(step), bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
  const double rho_inf = 2 / (1 - o.beta2) - 1, rho_t = rho_inf - 2 * t * std::pow(o.beta2, t) / bc2;
  const T corrected = state[0] / T(bc1);
  if (rho_t > 5) {
    const double rect = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
    p = p - ((corrected * T(o.lr)) * (T(std::sqrt(bc2)) / (std::sqrt(state[1]) + T(o.eps)))) * T(rect);
  } else {
    p = p - corrected * T(o.lr);
  }
};

// NAdam, with its per-tensor scalar state mu_product (a float32 scalar in torch) as the sixth argument.
const auto nadam_reference = [](const so::algo::NAdam::Options& o, std::int64_t step, auto& p, auto grad, auto state,
                                std::span<double> mu_product) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) {
    if (o.decoupled_weight_decay) p = p * T(1 - o.lr * o.weight_decay);
    else g = g + T(o.weight_decay) * p;
  }
  const double t = double(step);
  const double mu = o.beta1 * (1 - 0.5 * std::pow(0.96, t * o.momentum_decay));
  const double mu_next = o.beta1 * (1 - 0.5 * std::pow(0.96, (t + 1) * o.momentum_decay));
  mu_product[0] = static_cast<float>(static_cast<float>(mu_product[0]) * static_cast<float>(mu));
  state[0] = lerp(state[0], g, T(1 - o.beta1));
  state[1] = state[1] * T(o.beta2) + (T(1 - o.beta2) * g) * g;
  const T denom = std::sqrt(state[1] / T(1 - std::pow(o.beta2, t))) + T(o.eps);
  p = p + (T(-o.lr * (1 - mu) / (1 - mu_product[0])) * g) / denom;
  p = p + (T((-o.lr * mu_next) / (1 - mu_product[0] * mu_next)) * state[0]) / denom;
};

// LAMB and LARS on a one-element tensor, whose norms are |p| and |u| (as the optimizer computes a
// norm: the square root in double of the square in double, rounded to T).
template <class T>
T one_element_norm(T x) {
  return static_cast<T>(std::sqrt(static_cast<double>(x) * static_cast<double>(x)));
}
const auto lamb_reference = [](const so::algo::LAMB::Options& o, std::int64_t step, auto& p, auto g, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  const double t = double(step);
  state[0] = T(1 - o.beta1) * g + T(o.beta1) * state[0];
  state[1] = T(1 - o.beta2) * (g * g) + T(o.beta2) * state[1];
  const T u = (state[0] / T(1 - std::pow(o.beta1, t))) / (std::sqrt(state[1] / T(1 - std::pow(o.beta2, t))) + T(o.eps)) +
              T(o.weight_decay) * p;
  const T pn = one_element_norm(p), un = one_element_norm(u);
  const T r = pn == T(0) || un == T(0) ? T(1) : pn / un;
  p = p + T(-o.lr) * (u * r);
};
const auto lars_reference = [](const so::algo::LARS::Options& o, std::int64_t, auto& p, auto g, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  const T u0 = g + T(o.weight_decay) * p;
  const T pn = one_element_norm(p), un = one_element_norm(u0);
  const T r = pn == T(0) || un == T(0) ? T(1) : T(o.trust_coefficient) * pn / (un + T(o.eps));
  const T u = T(-o.lr) * (u0 * r);
  state[0] = u + T(o.momentum) * state[0];
  p = p + (o.nesterov ? u + T(o.momentum) * state[0] : state[0]);
};

// Lion (examples/lion.hpp): c = b1 m + (1 - b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1 - b2) g,
// with torch.sign (0 for 0, -0 and NaN).
const auto lion_reference = [](const Lion::Options& o, std::int64_t, auto& p, auto g, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T& m = state[0];
  const T c = T(o.beta1) * m + T(1 - o.beta1) * g;
  p = p * T(1 - o.lr * o.weight_decay) + T(-o.lr) * (c > 0 ? T(1) : c < 0 ? T(-1) : T(0));
  m = T(o.beta2) * m + T(1 - o.beta2) * g;
};

}  // namespace

// ---- the algorithm suite on every bundled algorithm and on Lion ---------------------------------------

SHARDOPT_ALGORITHM_CONFORMANCE(kit_sgd, so::algo::SGD, sgd_reference, {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.1},
                               {.lr = 0.05, .momentum = 0.9, .nesterov = true},
                               {.lr = 0.1, .momentum = 0.5, .dampening = 0.3, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_adagrad, so::algo::Adagrad, adagrad_reference,
                               {.lr = 0.05, .lr_decay = 0.01, .weight_decay = 0.1, .initial_accumulator_value = 0.1},
                               {.maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_adam, so::algo::Adam, adam_reference<false>(), {.lr = 0.05, .weight_decay = 0.1, .amsgrad = true},
                               {.lr = 0.02, .beta1 = 0.5, .beta2 = 0.9, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_adamw, so::algo::AdamW, adam_reference<true>(), {.lr = 0.05, .amsgrad = true},
                               {.weight_decay = 0.0});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_rmsprop, so::algo::RMSprop, rmsprop_reference,
                               {.lr = 0.01, .weight_decay = 0.1, .momentum = 0.9, .centered = true}, {.momentum = 0.5},
                               {.centered = true, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_adamax, so::algo::Adamax, adamax_reference, {.lr = 0.05, .weight_decay = 0.1},
                               {.beta1 = 0.3, .beta2 = 0.9, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_radam, so::algo::RAdam, radam_reference, {.lr = 0.05, .beta2 = 0.9, .weight_decay = 0.1},
                               {.beta1 = 0.3, .weight_decay = 0.1, .decoupled_weight_decay = true, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_nadam, so::algo::NAdam, nadam_reference, {.lr = 0.05, .weight_decay = 0.1, .momentum_decay = 0.3},
                               {.beta1 = 0.3, .weight_decay = 0.1, .decoupled_weight_decay = true, .maximize = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_lamb, so::algo::LAMB, lamb_reference, {.lr = 0.05, .eps = 0.1, .weight_decay = 0.1});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_lars, so::algo::LARS, lars_reference, {.lr = 0.05, .weight_decay = 0.1, .trust_coefficient = 0.5, .eps = 0.1},
                               {.momentum = 0.5, .nesterov = true});
SHARDOPT_ALGORITHM_CONFORMANCE(kit_lion, Lion, lion_reference, {.lr = 0.1, .weight_decay = 0.5}, {.beta1 = 0.5, .beta2 = 0.9});

// RAdam's rectified step starts at step 7 (rho_t > 5), after the suite's five steps: run it longer.
BOOST_AUTO_TEST_CASE(radam_rectified_steps_match_the_reference_and_every_layout) {
  const std::vector<so::algo::RAdam::Options> o = {{.lr = 0.05}, {.lr = 0.02, .beta2 = 0.99, .weight_decay = 0.1, .maximize = true}};
  st::report_across_ranks(st::check_scalar_definition<so::algo::RAdam>(radam_reference, o, 9));
  st::report_across_ranks(st::check_same_bits_as_one_process<so::algo::RAdam, so::layout::FlatPartition>(o, 8));
  st::report_across_ranks(st::check_same_bits_as_one_process<so::algo::RAdam, so::layout::ChunkRows>(o, 8));
}

// ---- the communicator suite on the bundled communicators ----------------------------------------------

SHARDOPT_COMM_CONFORMANCE(kit_mpi, [](MPI_Comm c) { return so::comm::Mpi(c); });
SHARDOPT_COMM_CONFORMANCE(kit_serial, [](MPI_Comm) { return so::comm::Serial{}; }, {.spans = {st::Span::self}});

// ---- deliberately wrong policies: the checks must fail, and say what is wrong -----------------------

namespace {

// Lion as declared, with one mistake each.
struct RankScaledLion : Lion {  // its learning rate depends on the rank
  static constexpr std::string_view name = "RankScaledLion";
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    Options scaled = o;
    scaled.lr = o.lr * (1.0 + 0.5 * st::world_rank());
    return Lion::prepare<T>(scaled, step);
  }
};
struct UncheckedLion : Lion {  // validates nothing
  static void validate(const Options&) {}
};
struct DottedLion : Lion {  // a slot name a checkpoint key cannot hold
  static constexpr std::array<std::string_view, 1> slot_names = {"exp.avg"};
};
struct HiddenOptionLion : Lion {  // an option option_fields does not list
  struct Options {
    double lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0.0, eps = 0.0;
  };
  static constexpr auto option_fields =
      std::tuple{so::field("lr", &Options::lr), so::field("beta1", &Options::beta1), so::field("beta2", &Options::beta2),
                 so::field("weight_decay", &Options::weight_decay)};
  static void validate(const Options&) {}
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t step) {
    return Lion::prepare<T>({o.lr, o.beta1, o.beta2, o.weight_decay}, step);
  }
};

// NAdam whose mu_product is kept in double, not rounded to float32 as torch keeps it.
struct DoubleMuProductNAdam : so::algo::NAdam {
  static constexpr std::string_view name = "DoubleMuProductNAdam";
  static void advance_scalar_state(const Options& o, std::int64_t step, std::span<double> state) {
    state[0] *= mu(o, static_cast<double>(step));
  }
};
// NAdam whose scalar state a checkpoint could not name.
struct StepNamedNAdam : so::algo::NAdam {
  static constexpr std::array<std::string_view, 1> scalar_state_names = {"step"};
};

// Packs every tensor but forgets its last element.
struct ForgetfulLayout : so::layout::FlatPartition {
  static constexpr std::string_view name = "Forgetful";
  static so::Packing pack(std::span<const so::TensorInfo> tensors, int p) {
    auto out = so::concatenated(tensors, p);
    if (!out.runs.empty()) out.runs.back().length -= 1;
    return out;
  }
};

// Ignores the MPI communicator it is given and talks over MPI_COMM_WORLD.
struct WorldBoundComm : so::comm::Mpi {
  static constexpr std::string_view name = "WorldBound";
  explicit WorldBoundComm(MPI_Comm) : so::comm::Mpi(MPI_COMM_WORLD) {}
};

int world_size() {
  int p = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

// Requires `fragment` in one of the findings, and shows them all otherwise.
void expect_mention(const st::Findings& f, const std::string& fragment) {
  BOOST_CHECK_MESSAGE(f.mentions(fragment), "'" << fragment << "' is not in the findings:\n" << (f.empty() ? "(none)" : f.str()));
}

template <class Algo>
std::vector<typename Algo::Options> lion_options() {
  return {typename Algo::Options{.lr = 0.1, .weight_decay = 0.5}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(kit_catches_wrong_policies)

BOOST_AUTO_TEST_CASE(a_rank_dependent_update_differs_from_one_process) {
  const auto o = lion_options<RankScaledLion>();
  const auto flat = st::check_same_bits_as_one_process<RankScaledLion, so::layout::FlatPartition>(o);
  const auto dp = st::check_same_bits_as_one_process<RankScaledLion, so::layout::DataParallel>(o);
  if (world_size() == 1) {  // on one process there is no other rank to differ from
    BOOST_CHECK_MESSAGE(flat.empty(), flat.str());
    BOOST_CHECK_MESSAGE(dp.empty(), dp.str());
    return;
  }
  expect_mention(flat, "RankScaledLion under layout FlatPartition at world size " + std::to_string(world_size()));
  expect_mention(flat, ": after step 1, this rank");
  expect_mention(flat, "differs from one process (layout Replicated, comm Serial) stepping the gradients of all ranks summed in rank order");
  expect_mention(flat, "update() may read only its own element's parameter, gradient and state slots");
  expect_mention(dp, "the ranks hold different whole tensors:\n    - parameter 't0'");
  expect_mention(dp, "the update must not depend on the rank");
}

BOOST_AUTO_TEST_CASE(an_update_that_is_not_its_scalar_definition) {
  // The reference forgets Lion's weight decay.
  const auto no_decay = [](const Lion::Options& o, std::int64_t step, auto& p, auto g, auto state) {
    Lion::Options o2 = o;
    o2.weight_decay = 0;
    lion_reference(o2, step, p, g, state);
  };
  const auto f = st::check_scalar_definition<Lion>(no_decay, lion_options<Lion>());
  expect_mention(f, "Lion with options {lr=0.1 beta1=0.9 beta2=0.99 weight_decay=0.5}, float: step 1 of the one-element parameter 'x0'");
  expect_mention(f, "differs from the scalar reference:\n    - param: got ");
  const auto right = st::check_scalar_definition<Lion>(lion_reference, lion_options<Lion>());
  BOOST_CHECK_MESSAGE(right.empty(), right.str());
  // Lion matches its definition bit for bit: demand that through scalar_reference().
  const auto exact = st::check_scalar_definition<Lion>(st::scalar_reference(lion_reference, {}), lion_options<Lion>());
  BOOST_CHECK_MESSAGE(exact.empty(), exact.str());
}

BOOST_AUTO_TEST_CASE(a_scalar_state_that_is_not_its_scalar_definition) {
  const std::vector<so::algo::NAdam::Options> o = {{.momentum_decay = 0.3}};
  const auto f = st::check_scalar_definition<DoubleMuProductNAdam>(nadam_reference, o);
  expect_mention(f, "DoubleMuProductNAdam with options {lr=0.002 beta1=0.9 beta2=0.999 eps=1e-08 weight_decay=0 momentum_decay=0.3 "
                    "decoupled_weight_decay=0 maximize=0}, float: step 1 of the one-element parameter 'x0'");
  expect_mention(f, "- scalar state 'mu_product': got ");
  const auto right = st::check_scalar_definition<so::algo::NAdam>(nadam_reference, o);
  BOOST_CHECK_MESSAGE(right.empty(), right.str());
  const auto named = st::check_algorithm_declaration<StepNamedNAdam>(o);
  expect_mention(named, "NAdam: scalar_state_names lists 'step', the name of the step count every parameter keeps.");
}

BOOST_AUTO_TEST_CASE(declarations_and_options) {
  const auto unchecked = st::check_options_validated<UncheckedLion>(lion_options<UncheckedLion>());
  expect_mention(unchecked, "Lion: validate() accepts lr = -1. Reject it as torch.optim does");
  expect_mention(unchecked, "validate() accepts lr = nan");
  const auto dotted = st::check_algorithm_declaration<DottedLion>(lion_options<DottedLion>());
  expect_mention(dotted, "the state slot 'exp.avg' contains '.'");
  const auto hidden = st::check_algorithm_declaration<HiddenOptionLion>(std::vector<HiddenOptionLion::Options>{{}});
  expect_mention(hidden, "Options has 5 members but option_fields lists 4");
  const auto right = st::check_algorithm_declaration<Lion>(lion_options<Lion>());
  BOOST_CHECK_MESSAGE(right.empty(), right.str());
}

BOOST_AUTO_TEST_CASE(a_packing_that_loses_an_element) {
  const auto f = st::check_layout_declaration_and_packing<ForgetfulLayout>();
  expect_mention(f, "layout Forgetful: pack() of the tensors [[1]] at world size 1 is not a packing: 1 of the 1 elements of tensor 0 are in no run");
  const auto right = st::check_layout_declaration_and_packing<so::layout::ChunkCols>();
  BOOST_CHECK_MESSAGE(right.empty(), right.str());
}

BOOST_AUTO_TEST_CASE(a_communicator_that_ignores_its_mpi_communicator) {
  const auto f = st::check_collectives([](MPI_Comm c) { return WorldBoundComm(c); }, {.spans = {st::Span::halves}});
  if (world_size() == 1) {  // the half of one process is the world
    BOOST_CHECK_MESSAGE(f.empty(), f.str());
    return;
  }
  expect_mention(f, "comm WorldBound over the half of MPI_COMM_WORLD");
  expect_mention(f, "a communicator must span the ranks it was made for, not MPI_COMM_WORLD");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the assertion helpers' messages ----------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(kit_assertions)

BOOST_AUTO_TEST_CASE(a_reference_mismatch_names_parameter_rank_index_and_values) {
  Kokkos::View<float**> w("w", 3, 4);
  std::vector<float> expected(12, 0.0f);
  expected[6] = 0.5f;  // index 6 is [1, 2]
  auto r = st::same_bits("fc.weight", w, expected, 2);
  BOOST_TEST(!r);
  const std::string m = r.message().str();
  BOOST_TEST_INFO(m);
  BOOST_TEST(m.find("parameter 'fc.weight' on rank 2 differs at index 6 [1, 2]: got 0 (0x00000000), expected 0.5 (0x3f000000)") !=
             std::string::npos);
  BOOST_TEST(m.find("1 of 12 elements differ, bitwise") != std::string::npos);
  // +0 and -0 differ (the sign of a zero is a result too), by one ulp; a NaN equals any NaN.
  auto zeros = st::same_bits("fc.weight", w, std::vector<float>(12, -0.0f));
  BOOST_TEST(!zeros);
  const std::string zm = zeros.message().str();
  BOOST_TEST(zm.find("expected -0 (0x80000000), 1 ulp apart") != std::string::npos, zm);
  BOOST_TEST(st::within_tolerance("fc.weight", w, std::vector<float>(12, -0.0f), {.ulps = 1}));
  BOOST_TEST(st::ulp_distance(-0.0, 0.0) == 1u);
  BOOST_TEST(st::ulp_distance(-std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::denorm_min()) == 3u);
  BOOST_TEST(st::same_bits("nan", std::vector<double>{std::nan("1")}, std::vector<double>{-std::nan("2")}));
  BOOST_TEST(st::within_tolerance("fc.weight", std::vector<double>{1.0}, std::vector<double>{1.0 + 2e-16}, {.ulps = 1}));
}

BOOST_AUTO_TEST_CASE(a_difference_across_ranks_names_the_rank_that_differs) {
  so::comm::Mpi comm(MPI_COMM_WORLD);
  const int p = comm.size(), r = comm.rank();
  std::vector<double> same(5, 1.5), differ(5, 1.5);
  if (r == p - 1 && p > 1) differ[3] = 2.0;
  BOOST_TEST(st::same_on_all_ranks(comm, "b", same));
  auto res = st::same_on_all_ranks(comm, "b", differ);
  if (p == 1) {
    BOOST_TEST(res);
    return;
  }
  BOOST_TEST(!res);
  BOOST_TEST_INFO(res.message().str());
  BOOST_TEST(res.message().str().find("parameter 'b' on rank " + std::to_string(p - 1) +
                                      " differs at index 3: got 2 (0x4000000000000000), expected 1.5 (0x3ff8000000000000)") !=
             std::string::npos);
  BOOST_TEST(res.message().str().find("'expected' is rank 0's") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
