// SPDX-License-Identifier: BSD-3-Clause
// The API on one process: options and their errors, registration errors, gradient presence,
// param groups, closures, element types and ranks, policy traits.
#include <boost/test/unit_test.hpp>

#include "support.hpp"

#include "../examples/lion.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <tuple>

namespace so = shardopt;

// Users' 16-bit types (a struct of the bits), declared the bits of shardopt's.
namespace test_alias {
struct Bf16 {
  std::uint16_t bits;
};
struct F16 {
  std::uint16_t bits;
};
}  // namespace test_alias
template <>
struct shardopt::element_alias<test_alias::Bf16> {
  using type = shardopt::bfloat16;
};
template <>
struct shardopt::element_alias<test_alias::F16> {
  using type = shardopt::float16;
};
using so::comm::Serial;
using so::layout::Replicated;

namespace {

template <class Algo>
using SerialOpt = so::ShardedOptimizer<Algo, Replicated, Serial>;

// Runs f, requires it to throw E whose message contains every fragment.
template <class E, class F>
void require_throw(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& frag : fragments) BOOST_CHECK_MESSAGE(what.find(frag) != std::string::npos, "'" << what << "' lacks '" << frag << "'");
    return;
  } catch (const std::exception& e) {
    BOOST_ERROR("wrong exception type: " << e.what());
    return;
  }
  BOOST_ERROR("no exception; expected one containing '" << *fragments.begin() << "'");
}

template <class T>
Kokkos::View<T*> filled(const char* label, std::size_t n, double start, double step) {
  Kokkos::View<T*> v(std::string(label), n);
  std::vector<T> h(n);
  for (std::size_t i = 0; i < n; ++i) h[i] = static_cast<T>(start + step * double(i));
  test::from_host(v, h);
  return v;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(options)

BOOST_AUTO_TEST_CASE(torch_wording_at_construction) {
  using namespace so::algo;
  require_throw<so::InvalidArgument>([] { SerialOpt<Adam>(Serial{}, {.lr = -1}); }, {"Invalid learning rate: -1"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adam>(Serial{}, {.lr = std::nan("")}); }, {"Invalid learning rate: nan"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adam>(Serial{}, {.beta1 = 1.0}); }, {"Invalid beta parameter at index 0: 1"});
  require_throw<so::InvalidArgument>([] { SerialOpt<AdamW>(Serial{}, {.beta2 = -0.5}); }, {"Invalid beta parameter at index 1: -0.5"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adam>(Serial{}, {.eps = -1e-8}); }, {"Invalid epsilon value: -1e-08"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adam>(Serial{}, {.weight_decay = -0.1}); }, {"Invalid weight_decay value: -0.1"});
  require_throw<so::InvalidArgument>([] { SerialOpt<SGD>(Serial{}, {.momentum = -0.9}); }, {"Invalid momentum value: -0.9"});
  require_throw<so::InvalidArgument>([] { SerialOpt<SGD>(Serial{}, {.nesterov = true}); },
                                     {"Nesterov momentum requires a momentum and zero dampening"});
  require_throw<so::InvalidArgument>([] { SerialOpt<SGD>(Serial{}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
                                     {"Nesterov momentum requires a momentum and zero dampening"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adagrad>(Serial{}, {.lr_decay = -1}); }, {"Invalid lr_decay value: -1"});
  require_throw<so::InvalidArgument>([] { SerialOpt<Adagrad>(Serial{}, {.initial_accumulator_value = -1}); },
                                     {"Invalid initial_accumulator_value value: -1"});
  require_throw<so::InvalidArgument>([] { SerialOpt<RMSprop>(Serial{}, {.alpha = -0.99}); }, {"Invalid alpha value: -0.99"});
  require_throw<so::InvalidArgument>([] { SerialOpt<RMSprop>(Serial{}, {.eps = -1}); }, {"Invalid epsilon value: -1"});
}

BOOST_AUTO_TEST_CASE(torch_defaults) {
  using namespace so::algo;
  BOOST_TEST(SGD::Options{}.lr == 1e-3);
  BOOST_TEST(Adagrad::Options{}.lr == 1e-2);
  BOOST_TEST(Adagrad::Options{}.eps == 1e-10);
  BOOST_TEST(Adam::Options{}.lr == 1e-3);
  BOOST_TEST(Adam::Options{}.beta2 == 0.999);
  BOOST_TEST(Adam::Options{}.weight_decay == 0.0);
  BOOST_TEST(AdamW::Options{}.weight_decay == 1e-2);
  BOOST_TEST(RMSprop::Options{}.alpha == 0.99);
  BOOST_TEST(RMSprop::Options{}.lr == 1e-2);
}

BOOST_AUTO_TEST_CASE(add_param_group_validates_and_changes_nothing) {
  SerialOpt<so::algo::Adam> opt(Serial{}, {.lr = 0.1});
  require_throw<so::InvalidArgument>([&] { opt.add_param_group({.lr = -2}); }, {"Invalid learning rate: -2"});
  BOOST_TEST(opt.param_groups().size() == 1u);
  // The callable form starts from this optimizer's defaults, like torch's missing keys.
  const int g = opt.add_param_group([](auto& o) { o.amsgrad = true; });
  BOOST_TEST(g == 1);
  BOOST_TEST(opt.param_groups()[1].options.lr == 0.1);
  BOOST_TEST(opt.param_groups()[1].options.amsgrad);
  // The aggregate form takes torch's defaults for what it leaves out.
  const int h = opt.add_param_group({.eps = 1e-6});
  BOOST_TEST(opt.param_groups()[h].options.lr == 1e-3);
}

BOOST_AUTO_TEST_CASE(invalid_group_options_fail_the_step_and_change_nothing) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.5});
  auto p = filled<double>("p", 4, 1.0, 1.0), g = filled<double>("g", 4, 1.0, 0.0);
  opt.add_param("p", p, g);
  opt.param_groups()[0].options.lr = -0.5;
  require_throw<so::InvalidArgument>([&] { opt.step(); }, {"param group 0", "Invalid learning rate: -0.5"});
  BOOST_TEST(test::to_host<double>(p)[0] == 1.0);
  BOOST_TEST(opt.step_count("p") == 0);
  opt.param_groups()[0].options.lr = 0.5;
  opt.step();
  BOOST_TEST(test::to_host<double>(p)[0] == 0.5);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(registration)

BOOST_AUTO_TEST_CASE(bad_input_is_named_and_changes_nothing) {
  SerialOpt<so::algo::Adam> opt(Serial{});
  Kokkos::View<float**> w("w", 8, 4), gw("gw", 8, 4), bad("bad", 8, 5);
  opt.add_param("fc.weight", w, gw);
  require_throw<so::InvalidArgument>([&] { opt.add_param("fc.other", w, bad); },
                                     {"fc.other", "gradient's shape [8, 5] differs from the parameter's shape [8, 4]"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("fc.weight", w, gw); }, {"fc.weight", "already registered"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("fc.bias", w, gw, 3); }, {"fc.bias", "unknown param group 3"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("fc.neg", w, gw, -1); }, {"unknown param group -1"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("", w, gw); }, {"non-empty"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("self", w, w); }, {"self", "is the parameter view itself"});
  Kokkos::View<float**, Kokkos::LayoutStride> strided = Kokkos::subview(w, Kokkos::ALL, Kokkos::pair<int, int>(0, 2));
  Kokkos::View<float**, Kokkos::LayoutStride> gstrided = Kokkos::subview(gw, Kokkos::ALL, Kokkos::pair<int, int>(0, 2));
  require_throw<so::InvalidArgument>([&] { opt.add_param("cols", strided, gstrided); }, {"cols", "not contiguous"});
  require_throw<so::InvalidArgument>([&] { opt.step_count("nope"); }, {"nope", "no parameter"});
  BOOST_TEST(opt.param_names() == std::vector<std::string>{"fc.weight"});
  BOOST_TEST(opt.param_groups()[0].params() == std::vector<std::string>{"fc.weight"});
}

BOOST_AUTO_TEST_CASE(sharded_tensor_tiling_errors) {
  using ST = so::ShardedTensor<float>;
  Serial c;
  require_throw<so::InvalidArgument>([&] { ST::chunk(c, {4, 3}, 2); }, {"dim 2 is not a dimension of shape [4, 3]"});
  require_throw<so::InvalidArgument>([&] { ST::enumerable(c, {4, 3}, {{{0, 0}, {3, 3}, 0}, {{2, 0}, {2, 3}, 0}}); },
                                     {"shard 1", "overlaps shard 0"});
  require_throw<so::InvalidArgument>([&] { ST::enumerable(c, {4, 3}, {{{0, 0}, {3, 3}, 0}}); },
                                     {"cover 9 of its 12 elements"});
  require_throw<so::InvalidArgument>([&] { ST::enumerable(c, {4, 3}, {{{0, 0}, {5, 3}, 0}}); }, {"outside the tensor"});
  require_throw<so::InvalidArgument>([&] { ST::enumerable(c, {4, 3}, {{{0, 0}, {4, 3}, 1}}); }, {"rank 1", "size 1"});
  require_throw<so::InvalidArgument>([&] { ST::enumerable(c, {4, 3}, {{{0}, {4}, 0}}); }, {"1 offsets", "2 dimensions"});
  auto ok = ST::enumerable(c, {4, 3}, {{{0, 0}, {4, 1}, 0}, {{0, 1}, {4, 2}, 0}});
  BOOST_TEST(ok.local_shards().size() == 2u);
  BOOST_TEST(ok.local_shards()[1].value.size() == 8u);
}

BOOST_AUTO_TEST_CASE(views_of_rank_one_to_four_and_both_dtypes) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.5});
  Kokkos::View<float*> a("a", 3), ga("ga", 3);
  Kokkos::View<double**> b("b", 2, 3), gb("gb", 2, 3);
  Kokkos::View<float***> c("c", 2, 2, 2), gc("gc", 2, 2, 2);
  // LayoutLeft whose memory is in row-major order (one dimension above 1).
  Kokkos::View<double****, Kokkos::LayoutLeft> d("d", 1, 4, 1, 1), gd("gd", 1, 4, 1, 1);
  opt.add_param("a", a, ga);
  opt.add_param("b", b, gb);
  opt.add_param("c", c, gc);
  opt.add_param("d", d, gd);
  Kokkos::deep_copy(ga, 2.0f);
  Kokkos::deep_copy(gb, 2.0);
  Kokkos::deep_copy(gc, 2.0f);
  Kokkos::deep_copy(gd, 2.0);
  opt.step();
  BOOST_TEST(test::to_host<float>(a)[2] == -1.0f);
  BOOST_TEST(test::to_host<double>(b)[5] == -1.0);
  BOOST_TEST(test::to_host<float>(c)[7] == -1.0f);
  BOOST_TEST(test::to_host<double>(d)[3] == -1.0);
}

// Memory that two registrations share would be stepped twice (and split the ranks under a
// partitioned layout): tied weights, subviews of a parameter, a gradient that is a parameter.
BOOST_AUTO_TEST_CASE(overlapping_memory_is_rejected_and_changes_nothing) {
  SerialOpt<so::algo::Adam> opt(Serial{});
  Kokkos::View<float**> w("w", 8, 4), gw("gw", 8, 4), g2("g2", 8, 4), g3("g3", 2, 4);
  opt.add_param("embed.weight", w, gw);
  require_throw<so::InvalidArgument>([&] { opt.add_param("head.weight", w, g2); },
                                     {"add_param('head.weight')", "overlaps the parameter of 'embed.weight'", "tied"});
  auto rows = Kokkos::subview(w, Kokkos::pair<int, int>(6, 8), Kokkos::ALL);
  require_throw<so::InvalidArgument>([&] { opt.add_param("rows", rows, g3); }, {"'rows'", "overlaps the parameter of 'embed.weight'"});
  Kokkos::View<float*> x("x", 4);
  Kokkos::View<float*, Kokkos::MemoryTraits<Kokkos::Unmanaged>> in_gw(gw.data() + 8, 4), in_w(w.data() + 30, 4);
  require_throw<so::InvalidArgument>([&] { opt.add_param("x", x, in_gw); }, {"'x'", "its gradient overlaps the gradient of 'embed.weight'"});
  require_throw<so::InvalidArgument>([&] { opt.add_param("x", x, in_w); }, {"'x'", "its gradient overlaps the parameter of 'embed.weight'"});
  Kokkos::View<float*> y("y", 8);
  Kokkos::View<float*, Kokkos::MemoryTraits<Kokkos::Unmanaged>> tail_of_y(y.data() + 2, 4), head_of_y(y.data(), 4);
  require_throw<so::InvalidArgument>([&] { opt.add_param("yy", head_of_y, tail_of_y); }, {"'yy'", "overlaps"});
  auto sharded = so::ShardedTensor<float>::chunk(Serial{}, {4, 2}, 0);
  Kokkos::View<float**, Kokkos::MemoryTraits<Kokkos::Unmanaged>> shard_value(sharded.local_shards()[0].value.data(), 4, 2);
  Kokkos::View<float**> gs("gs", 4, 2);
  opt.add_param("sharded", sharded);
  require_throw<so::InvalidArgument>([&] { opt.add_param("alias", shard_value, gs); }, {"overlaps the parameter of 'sharded'"});
  BOOST_TEST((opt.param_names() == std::vector<std::string>{"embed.weight", "sharded"}));
  // Adjacent memory is fine: a parameter that ends where another begins.
  Kokkos::View<float*> big("big", 8), gbig("gbig", 8);
  Kokkos::View<float*, Kokkos::MemoryTraits<Kokkos::Unmanaged>> lo(big.data(), 4), hi(big.data() + 4, 4), glo(gbig.data(), 4),
      ghi(gbig.data() + 4, 4);
  opt.add_param("lo", lo, glo);
  opt.add_param("hi", hi, ghi);
  opt.step();
  BOOST_TEST(opt.step_count("hi") == 1);
}

// State is kept in the logical row-major order of the tensor: views whose memory is in another
// order are rejected (state dicts and files would be permuted otherwise).
BOOST_AUTO_TEST_CASE(views_not_in_row_major_order_are_rejected) {
  SerialOpt<so::algo::Adam> opt(Serial{});
  Kokkos::View<float**, Kokkos::LayoutLeft> l("l", 3, 4), gl("gl", 3, 4);
  require_throw<so::InvalidArgument>([&] { opt.add_param("l", l, gl); }, {"add_param('l')", "parameter view is not in row-major order", "LayoutRight"});
  Kokkos::View<float**> r("r", 3, 4), gr("gr", 3, 4);
  Kokkos::View<float**, Kokkos::LayoutStride> rs = r, transposed(gr.data(), Kokkos::LayoutStride(3, 1, 4, 3));
  require_throw<so::InvalidArgument>([&] { opt.add_param("t", rs, transposed); }, {"'t'", "gradient view is not in row-major order"});
  // Row-major memory in any layout type is accepted: rank 1, one dimension above 1, a LayoutStride of rows.
  Kokkos::View<float*, Kokkos::LayoutLeft> v("v", 5), gv("gv", 5);
  Kokkos::View<float**, Kokkos::LayoutLeft> col("col", 6, 1), gcol("gcol", 6, 1);
  Kokkos::View<float**, Kokkos::LayoutStride> grs = gr;
  opt.add_param("v", v, gv);
  opt.add_param("col", col, gcol);
  opt.add_param("rs", rs, grs);
  BOOST_TEST(opt.param_names().size() == 3u);
}

// Every option must be finite: an infinite learning rate (which torch's checks let through) turns
// the parameters into NaN, and no checkpoint could hold it.
BOOST_AUTO_TEST_CASE(non_finite_options_are_rejected) {
  require_throw<so::InvalidArgument>([&] { SerialOpt<so::algo::Adam>(Serial{}, {.lr = INFINITY}); }, {"option lr is not finite (inf)"});
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.5});
  require_throw<so::InvalidArgument>([&] { opt.add_param_group({.lr = 0.1, .weight_decay = INFINITY}); }, {"option weight_decay is not finite"});
  BOOST_TEST(opt.param_groups().size() == 1u);
  auto p = filled<float>("p", 2, 1.0, 0.0), g = filled<float>("g", 2, 1.0, 0.0);
  opt.add_param("p", p, g);
  opt.param_groups()[0].options.lr = INFINITY;
  require_throw<so::InvalidArgument>([&] { opt.step(); }, {"param group 0: option lr is not finite"});
  require_throw<so::InvalidArgument>([&] { opt.save("/tmp/never-written.safetensors"); }, {"save(): param group 0: option lr is not finite"});
  BOOST_TEST(!std::filesystem::exists("/tmp/never-written.safetensors"));
  BOOST_TEST(test::to_host<float>(p)[0] == 1.0f);
}

// The collective timeout from the environment: a value that is not a number of seconds is an error
// at construction, naming the variable.
BOOST_AUTO_TEST_CASE(collective_timeout_from_the_environment) {
  ::setenv("SHARDOPT_COLLECTIVE_TIMEOUT", "12.5", 1);
  BOOST_TEST(SerialOpt<so::algo::SGD>(Serial{}).collective_timeout() == 12.5);
  for (const char* bad : {"soon", "-1", "inf", "5s"}) {
    ::setenv("SHARDOPT_COLLECTIVE_TIMEOUT", bad, 1);
    require_throw<so::InvalidArgument>([&] { SerialOpt<so::algo::SGD>{Serial{}}; },
                                       {"SHARDOPT_COLLECTIVE_TIMEOUT='" + std::string(bad) + "' is not a number of seconds"});
  }
  ::unsetenv("SHARDOPT_COLLECTIVE_TIMEOUT");
  BOOST_TEST(SerialOpt<so::algo::SGD>(Serial{}).collective_timeout() == 1800.0);
}

// A moved-from optimizer says so instead of crashing.
BOOST_AUTO_TEST_CASE(moved_from_optimizer_throws) {
  SerialOpt<so::algo::Adam> opt(Serial{});
  auto p = filled<float>("p", 2, 1.0, 0.0), g = filled<float>("g", 2, 1.0, 0.0);
  opt.add_param("p", p, g);
  SerialOpt<so::algo::Adam> moved(std::move(opt));
  require_throw<so::Error>([&] { opt.step(); }, {"step()", "moved from"});
  require_throw<so::Error>([&] { opt.state_dict(); }, {"state_dict()", "moved from"});
  require_throw<so::Error>([&] { opt.save("/tmp/x"); }, {"save()", "moved from"});
  require_throw<so::Error>([&] { opt.add_param("q", p, g); }, {"add_param()", "moved from"});
  moved.step();
  BOOST_TEST(moved.step_count("p") == 1);
  opt = std::move(moved);  // assigned to: alive again
  opt.step();
  BOOST_TEST(opt.step_count("p") == 2);
  require_throw<so::Error>([&] { moved.zero_grad(); }, {"zero_grad()", "moved from"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE(absent_gradient_skips_the_parameter) {
  SerialOpt<so::algo::Adam> opt(Serial{}, {.lr = 0.1});
  auto p = filled<float>("p", 5, 1.0, 0.5), q = filled<float>("q", 5, 1.0, 0.5);
  Kokkos::View<float*> gp("gp", 5), gq("gq", 5);
  opt.add_param("p", p, gp);
  opt.add_param("q", q, gq);
  BOOST_TEST(opt.has_grad("p"));
  Kokkos::deep_copy(gp, 1.0f);
  Kokkos::deep_copy(gq, 1.0f);
  opt.step();
  Kokkos::deep_copy(gq, 0.0f);
  const auto q_after_one = test::to_host<float>(q);
  const auto q_state = opt.local_state<float>("q", "exp_avg");
  opt.zero_grad();  // set_to_none: both absent
  BOOST_TEST(!opt.has_grad("p"));
  BOOST_TEST(test::to_host<float>(gp)[0] == 0.0f);
  Kokkos::deep_copy(gp, 1.0f);
  opt.mark_grad_present("p");
  opt.step();
  BOOST_TEST(opt.step_count("p") == 2);
  BOOST_TEST(opt.step_count("q") == 1);
  BOOST_TEST(test::to_host<float>(q) == q_after_one);
  BOOST_TEST(opt.local_state<float>("q", "exp_avg") == q_state);
}

BOOST_AUTO_TEST_CASE(written_but_absent_gradient_is_an_error_and_changes_nothing) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.1, .momentum = 0.9});
  auto p = filled<double>("p", 4, 1.0, 1.0), q = filled<double>("q", 4, 1.0, 1.0);
  Kokkos::View<double*> gp("gp", 4), gq("gq", 4);
  opt.add_param("p", p, gp);
  opt.add_param("q", q, gq);
  opt.zero_grad(true);
  Kokkos::deep_copy(gp, 1.0);
  Kokkos::deep_copy(gq, 1.0);
  opt.mark_grad_present("p");  // forgot q
  require_throw<so::InvalidArgument>([&] { opt.step(); }, {"'q'", "marked absent", "mark_grad_present"});
  BOOST_TEST(test::to_host<double>(p)[0] == 1.0);
  BOOST_TEST(opt.step_count("p") == 0);
  BOOST_TEST(opt.state_bytes() == 0u);
  opt.mark_grad_present();
  opt.step();
  BOOST_TEST(opt.step_count("q") == 1);
  BOOST_TEST(opt.state_bytes() == 2 * 4 * sizeof(double));
}

// Counts the kernels launched while it lives (Kokkos Tools begin_parallel_for callback).
struct LaunchCounter {
  static inline int launches = 0;
  static void begin(const char*, std::uint32_t, std::uint64_t*) { ++launches; }
  Kokkos::Tools::Experimental::EventSet prev = Kokkos::Tools::Experimental::get_callbacks();
  LaunchCounter() {
    launches = 0;
    Kokkos::Tools::Experimental::set_begin_parallel_for_callback(&LaunchCounter::begin);
  }
  ~LaunchCounter() { Kokkos::Tools::Experimental::set_callbacks(prev); }
};

BOOST_AUTO_TEST_CASE(zero_grad_is_one_launch_per_element_type_however_many_tensors) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.1});
  std::vector<Kokkos::View<float*>> fp, fg;
  std::vector<Kokkos::View<double*>> dp, dg;
  for (int i = 0; i < 50; ++i) {
    fp.push_back(filled<float>("p", 3, 1.0, 0.0)), fg.push_back(filled<float>("g", 3, 7.0, 0.0));
    dp.push_back(filled<double>("p", 2, 1.0, 0.0)), dg.push_back(filled<double>("g", 2, 5.0, 0.0));
    opt.add_param("f" + std::to_string(i), fp.back(), fg.back());
    opt.add_param("d" + std::to_string(i), dp.back(), dg.back());
  }
  {
    LaunchCounter count;
    opt.zero_grad(false);
    BOOST_TEST(LaunchCounter::launches == 2);
  }
  for (int i = 0; i < 50; ++i) {
    BOOST_TEST(test::to_host<float>(fg[i]) == std::vector<float>(3, 0.0f));
    BOOST_TEST(test::to_host<double>(dg[i]) == std::vector<double>(2, 0.0));
  }
  // A parameter added later is zeroed too.
  auto late = filled<float>("p", 4, 1.0, 0.0), late_g = filled<float>("g", 4, 3.0, 0.0);
  opt.add_param("late", late, late_g);
  opt.zero_grad();
  BOOST_TEST(test::to_host<float>(late_g) == std::vector<float>(4, 0.0f));
  BOOST_TEST(!opt.has_grad("late"));
}

BOOST_AUTO_TEST_CASE(zero_grad_false_keeps_gradients_present) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 1.0});
  auto p = filled<float>("p", 3, 1.0, 0.0), g = filled<float>("g", 3, 7.0, 0.0);
  opt.add_param("p", p, g);
  opt.zero_grad(false);
  BOOST_TEST(opt.has_grad("p"));
  BOOST_TEST(test::to_host<float>(g) == std::vector<float>(3, 0.0f));
  opt.step();  // a zero gradient is a gradient: the step counts
  BOOST_TEST(opt.step_count("p") == 1);
}

BOOST_AUTO_TEST_CASE(closure_is_called_once_and_its_loss_returned) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.25});
  auto p = filled<double>("p", 2, 2.0, 0.0);
  Kokkos::View<double*> g("g", 2);
  opt.add_param("p", p, g);
  int calls = 0;
  const double loss = opt.step([&] {
    ++calls;
    opt.zero_grad(false);
    Kokkos::deep_copy(g, p);  // d/dp of 0.5 p^2
    return 4.0;
  });
  BOOST_TEST(calls == 1);
  BOOST_TEST(loss == 4.0);
  BOOST_TEST(test::to_host<double>(p)[0] == 1.5);
  // A closure that throws: its own exception comes out, nothing is stepped.
  struct Custom {
    int code;
  };
  BOOST_CHECK_EXCEPTION(opt.step([]() -> double { throw Custom{7}; }), Custom, [](const Custom& c) { return c.code == 7; });
  BOOST_CHECK_THROW(opt.step([] { throw std::out_of_range("x"); }), std::out_of_range);
  BOOST_TEST(opt.step_count("p") == 1);
  BOOST_TEST(test::to_host<double>(p)[0] == 1.5);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(clipping)

BOOST_AUTO_TEST_CASE(bad_settings_are_named_and_change_nothing) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.1});
  require_throw<so::Error>([&] { (void)opt.last_grad_norm(); }, {"last_grad_norm()", "no step has clipped"});
  opt.clip_grad_norm(2.0, 1.0);
  const double nan = std::nan(""), inf = INFINITY;
  require_throw<so::InvalidArgument>([&] { opt.clip_grad_norm(-1.0); }, {"clip_grad_norm(max_norm=-1, norm_type=2)", "max_norm must be >= 0"});
  require_throw<so::InvalidArgument>([&] { opt.clip_grad_norm(nan); }, {"max_norm=nan", "max_norm must be >= 0"});
  for (const double p : {0.0, -1.0, -inf, nan})
    require_throw<so::InvalidArgument>([&] { opt.clip_grad_norm(1.0, p); }, {"norm_type must be a p > 0 or inf"});
  BOOST_TEST((opt.clip_grad_norm_setting() == so::ClipGradNorm{2.0, 1.0, false}));  // unchanged
  opt.no_clip_grad_norm();
  BOOST_TEST(!opt.clip_grad_norm_setting().has_value());
}

// As torch: the norm of the per-tensor norms (float64 when any tensor is), each gradient times
// min(1, max_norm / (norm + 1e-6)) in the fused step; max_norm = inf only measures.
BOOST_AUTO_TEST_CASE(the_norm_of_float_and_double_tensors_scales_every_gradient) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 1.0});
  Kokkos::View<float*> a("a", 2), ga("ga", 2);
  Kokkos::View<double*> b("b", 1), gb("gb", 1);
  opt.add_param("a", a, ga);
  opt.add_param("b", b, gb);
  test::from_host(ga, std::vector<float>{3, 4});
  test::from_host(gb, std::vector<double>{12});
  opt.clip_grad_norm(6.5);
  opt.step();
  BOOST_TEST(opt.last_grad_norm() == 13.0);
  const double coef = (1.0 / (13.0 + 1e-6)) * 6.5;
  BOOST_TEST(test::to_host<double>(b)[0] == -12 * coef);
  BOOST_TEST(test::to_host<float>(a)[1] == -(4.0f * static_cast<float>(coef)));
  // Only measured: the step is the unclipped one.
  opt.clip_grad_norm(INFINITY, INFINITY);
  opt.step();
  BOOST_TEST(opt.last_grad_norm() == 12.0);
  BOOST_TEST(test::to_host<double>(b)[0] == -12 * coef - 12);
  // Off: the norm of the last clipped step stays.
  opt.no_clip_grad_norm();
  opt.step();
  BOOST_TEST(opt.last_grad_norm() == 12.0);
  BOOST_TEST(test::to_host<double>(b)[0] == -12 * coef - 24);
  // All float32: the norm is float32's.
  SerialOpt<so::algo::SGD> f(Serial{}, {.lr = 1.0});
  Kokkos::View<float*> c("c", 3), gc("gc", 3);
  f.add_param("c", c, gc);
  test::from_host(gc, std::vector<float>{0.1f, 0.2f, 0.3f});
  f.clip_grad_norm(0.1);
  f.step();
  BOOST_TEST(f.last_grad_norm() == static_cast<double>(static_cast<float>(f.last_grad_norm())));
  BOOST_TEST(std::abs(f.last_grad_norm() - std::sqrt(0.14)) < 1e-7);
}

BOOST_AUTO_TEST_CASE(a_non_finite_norm_is_an_error_if_asked_and_changes_nothing) {
  SerialOpt<so::algo::Adam> opt(Serial{}, {.lr = 0.1});
  auto w = filled<float>("w", 4, 1.0, 0.5);
  Kokkos::View<float*> gw("gw", 4);
  opt.add_param("w", w, gw);
  test::from_host(gw, std::vector<float>{1, INFINITY, 2, 3});
  const auto before = test::to_host<float>(w);
  opt.clip_grad_norm(1.0, 2.0, true);
  require_throw<so::Error>([&] { opt.step(); }, {"total norm of order 2", "is inf", "error_if_nonfinite"});
  BOOST_TEST(test::to_host<float>(w) == before);
  BOOST_TEST(opt.step_count("w") == 0);
  BOOST_TEST(opt.local_state<float>("w", "exp_avg").empty());
  BOOST_TEST(std::isinf(opt.last_grad_norm()));
  // Without the error, torch scales by the non-finite norm's coefficient: 0 for inf, NaN for NaN.
  opt.clip_grad_norm(1.0);
  test::from_host(gw, std::vector<float>{1, NAN, 2, 3});
  opt.step();
  BOOST_TEST(std::isnan(opt.last_grad_norm()));
  for (float v : test::to_host<float>(w)) BOOST_TEST(std::isnan(v));
}

// set_skip_nonfinite: a non-finite gradient skips the step (it never raises, error_if_nonfinite or
// not); a norm that overflows float32 from finite gradients is not a skip: it raises if asked, or
// clips as torch does (a coefficient of 0).
BOOST_AUTO_TEST_CASE(skip_nonfinite_skips_what_error_if_nonfinite_would_raise) {
  SerialOpt<so::algo::Adam> opt(Serial{}, {.lr = 0.1});
  auto w = filled<float>("w", 4, 1.0, 0.5);
  Kokkos::View<float*> gw("gw", 4);
  opt.add_param("w", w, gw);
  BOOST_TEST(!opt.skip_nonfinite());
  opt.set_skip_nonfinite(true);
  BOOST_TEST(opt.skip_nonfinite());
  opt.clip_grad_norm(1.0, 2.0, true);
  const auto before = test::to_host<float>(w);
  test::from_host(gw, std::vector<float>{1, -INFINITY, 2, 3});
  opt.step();
  BOOST_TEST(opt.skipped_steps() == 1);
  BOOST_TEST(std::isinf(opt.last_grad_norm()));
  BOOST_TEST(test::to_host<float>(w) == before, boost::test_tools::per_element());
  BOOST_TEST(opt.step_count("w") == 0);
  BOOST_TEST(opt.local_state<float>("w", "exp_avg").empty());
  // Finite gradients whose norm is inf in float32: raised as asked, not skipped.
  test::from_host(gw, std::vector<float>{3e38f, 3e38f, 0, 0});
  require_throw<so::Error>([&] { opt.step(); }, {"total norm of order 2", "is inf", "error_if_nonfinite"});
  BOOST_TEST(opt.skipped_steps() == 1);
  BOOST_TEST(opt.step_count("w") == 0);
  // Without the error: clipped by a coefficient of 0, as torch does, and stepped.
  opt.clip_grad_norm(1.0);
  opt.step();
  BOOST_TEST(opt.skipped_steps() == 1);
  BOOST_TEST(opt.step_count("w") == 1);
  BOOST_TEST(test::to_host<float>(w) == before, boost::test_tools::per_element());  // a zero gradient moves nothing (no decay)
  // Off again: a NaN gradient is stepped.
  opt.set_skip_nonfinite(false);
  test::from_host(gw, std::vector<float>{1, NAN, 2, 3});
  opt.step();
  BOOST_TEST(opt.skipped_steps() == 1);
  BOOST_TEST(opt.step_count("w") == 2);
}

// step(scaler) on one process: torch's scaler.step(opt); scaler.update(): the gradients unscaled in
// place (g * inv_scale in float32), the step as with those gradients, an overflow skipped with the
// scale backed off, growth after growth_interval steps, a disabled scaler a plain step.
BOOST_AUTO_TEST_CASE(step_with_a_grad_scaler) {
  SerialOpt<so::algo::Adam> opt(Serial{}, {.lr = 0.1}), ref(Serial{}, {.lr = 0.1});
  auto w = filled<float>("w", 4, 1.0, 0.5), wr = filled<float>("wr", 4, 1.0, 0.5);
  Kokkos::View<float*> gw("gw", 4), gr("gr", 4);
  opt.add_param("w", w, gw);
  ref.add_param("w", wr, gr);
  so::GradScaler scaler({.init_scale = 1000.0, .growth_interval = 2});
  const std::vector<float> g = {0.25f, -3.0f, 1e-3f, 7.0f};
  for (int k = 0; k < 4; ++k) {
    const float s = static_cast<float>(scaler.scale()), inv = scaler.inv_scale();
    std::vector<float> scaled = g, unscaled = g;
    for (std::size_t i = 0; i < g.size(); ++i) {
      scaled[i] = g[i] * s;
      unscaled[i] = scaled[i] * inv;
    }
    if (k == 1) scaled[2] = INFINITY;
    test::from_host(gw, scaled);
    test::from_host(gr, unscaled);
    opt.step(scaler);
    if (k == 1) {
      BOOST_TEST(opt.skipped_steps() == 1);
      BOOST_TEST(scaler.scale() == 500.0);  // backed off
      BOOST_TEST(scaler.growth_tracker() == 0);
      continue;
    }
    ref.step();
    BOOST_TEST(test::to_host<float>(gw) == unscaled, boost::test_tools::per_element());  // unscaled in place
    BOOST_TEST(test::to_host<float>(w) == test::to_host<float>(wr), boost::test_tools::per_element());
  }
  BOOST_TEST(scaler.scale() == 1000.0);  // two stepped steps after the backoff: grown
  BOOST_TEST(opt.step_count("w") == 3);
  so::GradScaler off({.enabled = false});
  opt.step(off);
  ref.step();  // the same (unscaled) gradients
  BOOST_TEST(test::to_host<float>(w) == test::to_host<float>(wr), boost::test_tools::per_element());
}

// A user's own 16-bit types, declared the same bits as shardopt's (shardopt::element_alias, as
// shardopt declares Kokkos' half_t and bhalf_t where they are 16-bit types): views and sharded
// tensors of them are parameters, stepped bit for bit as those of shardopt's types.
BOOST_AUTO_TEST_CASE(types_declared_the_same_bits_as_the_16_bit_types) {
  using test_alias::Bf16;
  using test_alias::F16;
  static_assert(std::is_same_v<so::detail::element_t<Bf16>, so::bfloat16> && std::is_same_v<so::detail::element_t<F16>, so::float16>);
  static_assert(std::is_same_v<so::detail::element_t<float>, float>);
  SerialOpt<so::algo::Adam> mine(Serial{}, {.lr = 0.05, .weight_decay = 0.1}), ref(Serial{}, {.lr = 0.05, .weight_decay = 0.1});
  Kokkos::View<Bf16**> a("a", 3, 4), ga("ga", 3, 4);
  Kokkos::View<so::bfloat16**> ra("ra", 3, 4), rga("rga", 3, 4);
  Kokkos::View<F16*> b("b", 5), gb("gb", 5);
  Kokkos::View<so::float16*> rb("rb", 5), rgb("rgb", 5);
  auto e = so::ShardedTensor<Bf16>::chunk(Serial{}, {4, 2}, 0);
  auto re = so::ShardedTensor<so::bfloat16>::chunk(Serial{}, {4, 2}, 0);
  // Both sides get the same bits: x(t, i, k) rounded to the 16-bit format.
  auto set = [](auto alias, auto shardopt_view, int t, int k) {
    using H = typename decltype(shardopt_view)::non_const_value_type;
    using A = typename decltype(alias)::non_const_value_type;
    std::vector<H> h(shardopt_view.size());
    std::vector<A> x(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) {
      h[i] = H(static_cast<float>(k == 0 ? test::initial_value(t, static_cast<std::int64_t>(i)) : test::gradient_value(t, static_cast<std::int64_t>(i), k)));
      x[i] = A{h[i].bits()};
    }
    test::from_host(shardopt_view, h);
    test::from_host(alias, x);
  };
  set(a, ra, 0, 0);
  set(b, rb, 1, 0);
  set(e.local_shards()[0].value, re.local_shards()[0].value, 2, 0);
  mine.add_param("a", a, ga);
  mine.add_param("b", b, gb);
  mine.add_param("e", e);
  ref.add_param("a", ra, rga);
  ref.add_param("b", rb, rgb);
  ref.add_param("e", re);
  auto bits = [](const auto& v) {
    std::vector<std::uint16_t> out;
    using V = typename std::decay_t<decltype(v)>::non_const_value_type;
    for (const auto& x : test::to_host<V>(v)) {
      if constexpr (requires { x.bits(); }) out.push_back(x.bits());
      else out.push_back(x.bits);
    }
    return out;
  };
  for (int k = 1; k <= 3; ++k) {
    set(ga, rga, 0, k);
    set(gb, rgb, 1, k);
    set(e.local_shards()[0].grad, re.local_shards()[0].grad, 2, k);
    mine.step();
    ref.step();
    BOOST_TEST(bits(a) == bits(ra), boost::test_tools::per_element());
    BOOST_TEST(bits(b) == bits(rb), boost::test_tools::per_element());
    BOOST_TEST(bits(e.local_shards()[0].value) == bits(re.local_shards()[0].value), boost::test_tools::per_element());
  }
  BOOST_TEST(bits(a) != bits(Kokkos::View<Bf16**>("fresh", 3, 4)));  // it moved
  BOOST_TEST(mine.full_state_dict().state.at("a").dtype == "bfloat16");
  BOOST_TEST(mine.full_state_dict().state.at("b").dtype == "float16");
  BOOST_TEST(mine.local_state<float>("e", "master") == ref.local_state<float>("e", "master"), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(groups)

BOOST_AUTO_TEST_CASE(each_group_uses_its_options_and_changes_apply_next_step) {
  SerialOpt<so::algo::SGD> opt(Serial{}, {.lr = 0.1});
  auto a = filled<double>("a", 2, 1.0, 0.0), b = filled<double>("b", 2, 1.0, 0.0);
  auto ga = filled<double>("ga", 2, 1.0, 0.0), gb = filled<double>("gb", 2, 1.0, 0.0);
  const int head = opt.add_param_group({.lr = 0.25});
  opt.add_param("a", a, ga);
  opt.add_param("b", b, gb, head);
  opt.step();
  BOOST_TEST(test::to_host<double>(a)[0] == 1.0 - 0.1);
  BOOST_TEST(test::to_host<double>(b)[0] == 1.0 - 0.25);
  opt.param_groups()[head].options.lr = 0.5;  // an LR scheduler
  opt.step();
  BOOST_TEST(test::to_host<double>(b)[0] == 0.75 - 0.5);
  BOOST_TEST(opt.param_groups()[head].params() == std::vector<std::string>{"b"});
}

BOOST_AUTO_TEST_CASE(amsgrad_in_one_group_only_keeps_that_slot_for_its_parameters) {
  SerialOpt<so::algo::Adam> opt(Serial{});
  auto a = filled<float>("a", 10, 1.0, 0.0), b = filled<float>("b", 10, 1.0, 0.0);
  auto ga = filled<float>("ga", 10, 1.0, 0.0), gb = filled<float>("gb", 10, 1.0, 0.0);
  opt.add_param("a", a, ga);
  opt.add_param("b", b, gb, opt.add_param_group([](auto& o) { o.amsgrad = true; }));
  opt.step();
  BOOST_TEST(opt.local_state<float>("a", "max_exp_avg_sq").empty());
  BOOST_TEST(opt.local_state<float>("b", "max_exp_avg_sq").size() == 10u);
  // A slot's buffer spans every parameter of the element type once any group uses it.
  BOOST_TEST(opt.state_bytes() == 3 * 20 * sizeof(float));
  require_throw<so::InvalidArgument>([&] { opt.local_state<float>("a", "momentum"); }, {"no state slot 'momentum' in Adam"});
  require_throw<so::InvalidArgument>([&] { opt.local_state<double>("a", "exp_avg"); }, {"float32"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(policies)

// The smallest layout the framework accepts: proves ShardedOptimizer needs nothing else of a Layout.
// It partitions tensors round-robin, whole tensor t on rank t % P.
struct ArchetypeLayout {
  using layout_category = so::layout_policy_tag;
  static constexpr std::string_view name = "Archetype";
  static constexpr so::Strategy strategy = so::Strategy::partitioned;
  static constexpr so::Reduction reduction = so::Reduction::sum;
  static so::Packing pack(std::span<const so::TensorInfo> tensors, int p) {
    so::Packing out;
    std::vector<std::int64_t> fill(p, 0);
    for (std::size_t t = 0; t < tensors.size(); ++t) fill[t % p] += tensors[t].numel();
    out.part_size = *std::max_element(fill.begin(), fill.end());
    std::fill(fill.begin(), fill.end(), 0);
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      const int r = static_cast<int>(t % p);
      out.runs.push_back({t, 0, r * out.part_size + fill[r], tensors[t].numel()});
      fill[r] += tensors[t].numel();
    }
    return out;
  }
};

// A layout whose packing forgets an element gets a clear error, not memory corruption.
struct BrokenLayout : ArchetypeLayout {
  static constexpr std::string_view name = "Broken";
  static so::Packing pack(std::span<const so::TensorInfo> tensors, int p) {
    auto out = ArchetypeLayout::pack(tensors, p);
    out.runs.back().length -= 1;
    return out;
  }
};

BOOST_AUTO_TEST_CASE(traits_and_concepts) {
  static_assert(so::Algorithm<so::algo::SGD> && so::Algorithm<so::algo::Adagrad> && so::Algorithm<so::algo::Adam> &&
                so::Algorithm<so::algo::AdamW> && so::Algorithm<so::algo::RMSprop>);
  static_assert(so::Layout<so::layout::Replicated> && so::Layout<ArchetypeLayout>);
  static_assert(so::Communicator<so::comm::Serial> && so::Communicator<so::comm::Mpi>);
  static_assert(so::is_algorithm_v<so::algo::Adam> && !so::is_algorithm_v<so::layout::Replicated>);
  static_assert(so::is_layout_v<so::layout::Replicated> && !so::is_layout_v<so::comm::Serial>);
  static_assert(so::is_communicator_v<so::comm::Mpi> && !so::is_communicator_v<so::algo::SGD>);
  static_assert(!so::Algorithm<so::layout::Replicated> && !so::Communicator<so::algo::Adam>);
  so::ShardedOptimizer<so::algo::SGD, ArchetypeLayout, Serial> opt(Serial{}, {.lr = 1.0});
  auto p = filled<float>("p", 3, 1.0, 0.0), g = filled<float>("g", 3, 1.0, 0.0);
  opt.add_param("p", p, g);
  opt.step();
  BOOST_TEST(test::to_host<float>(p)[0] == 0.0f);
  so::ShardedOptimizer<so::algo::SGD, BrokenLayout, Serial> broken(Serial{}, {.lr = 1.0});
  broken.add_param("p", p, g);
  require_throw<so::Error>([&] { broken.step(); }, {"layout Broken: pack() covers 2 of the 3 elements of tensor 0"});
}

BOOST_AUTO_TEST_CASE(user_algorithm_from_the_example_matches_its_scalar_definition) {
  static_assert(so::Algorithm<Lion>);
  so::ShardedOptimizer<Lion, Replicated, Serial> opt(Serial{}, {.lr = 0.1, .weight_decay = 0.5});
  auto p = filled<double>("p", 3, -1.0, 1.0), g = filled<double>("g", 3, 0.5, -0.5);  // p = -1, 0, 1; g = 0.5, 0, -0.5
  opt.add_param("p", p, g);
  opt.step();
  opt.step();
  // Scalar definition: c = b1 m + (1 - b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1 - b2) g.
  std::vector<double> x{-1, 0, 1}, m(3, 0.0);
  const std::vector<double> grad{0.5, 0, -0.5};
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 3; ++i) {
      const double c = 0.9 * m[i] + (1 - 0.9) * grad[i];
      x[i] = x[i] * (1 - 0.1 * 0.5) + -0.1 * (c > 0 ? 1.0 : (c < 0 ? -1.0 : 0.0));
      m[i] = 0.99 * m[i] + (1 - 0.99) * grad[i];
    }
  const auto got = test::to_host<double>(p);
  for (int i = 0; i < 3; ++i) BOOST_TEST(got[i] == x[i]);
  BOOST_TEST(opt.local_state<double>("p", "exp_avg") == m);
  require_throw<so::InvalidArgument>([] { so::ShardedOptimizer<Lion, Replicated, Serial>(Serial{}, {.beta2 = 1.0}); },
                                     {"Invalid beta parameter at index 1: 1"});
}

BOOST_AUTO_TEST_SUITE_END()
