// SPDX-License-Identifier: BSD-3-Clause
// Run at world sizes 1 to 4 (ctest registers this executable under mpiexec -n 1..4):
// the MPI collectives, the seed's sharded-versus-whole test, and cross-rank error agreement.
#include <boost/test/unit_test.hpp>

#include "support.hpp"

#include <shardopt/detail/reproducible_sum.hpp>

#include <bit>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>

namespace so = shardopt;
using so::comm::Mpi;
using so::comm::Serial;
using so::layout::Replicated;

namespace {

Mpi world() { return Mpi(MPI_COMM_WORLD); }

// Runs f on every rank; requires every rank to throw E whose message contains every fragment.
template <class E, class F>
void require_throw_everywhere(F&& f, std::initializer_list<std::string> fragments) {
  std::string what = "(no exception)";
  bool right_type = false;
  try {
    f();
  } catch (const E& e) {
    what = e.what();
    right_type = true;
  } catch (const std::exception& e) {
    what = std::string("wrong exception type: ") + e.what();
  }
  BOOST_TEST_INFO("message: " << what);
  BOOST_TEST(right_type);
  for (const auto& frag : fragments) BOOST_CHECK_MESSAGE(what.find(frag) != std::string::npos, "'" << what << "' lacks '" << frag << "'");
}

// Row-major flat index of a global element from a shard's local flat index.
std::int64_t global_index(const so::ShardMetadata& m, const std::vector<std::int64_t>& shape, std::int64_t local) {
  std::int64_t g = 0, rem = local;
  std::vector<std::int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = m.offsets[d] + rem % m.sizes[d];
    rem /= m.sizes[d];
  }
  for (std::size_t d = 0; d < shape.size(); ++d) g = g * shape[d] + idx[d];
  return g;
}


using Algorithms = std::tuple<so::algo::SGD, so::algo::Adagrad, so::algo::Adam, so::algo::AdamW, so::algo::RMSprop>;

}  // namespace

BOOST_AUTO_TEST_SUITE(mpi_collectives)

// Sums over terms dealt out to the ranks in runs of several sizes: every world size gives the bits
// of one process holding everything in one run, on every rank, in one all-gather.
BOOST_AUTO_TEST_CASE(reproducible_sums_are_the_same_bits_at_every_world_size) {
  Mpi comm = world();
  const int p = comm.size(), r = comm.rank();
  auto term = [](std::size_t s, std::int64_t i) { return std::ldexp(double((i * 2654435761u + s * 97) % 1000003) - 500000.0, int(i % 37) - 18); };
  const std::vector<std::int64_t> lengths = {0, 5, 64, 200, 70001};
  so::detail::SumPieces whole;
  for (std::size_t s = 0; s < lengths.size(); ++s) whole.add_run(s, 0, lengths[s], [&](std::int64_t i) { return term(s, i); });
  so::comm::Serial serial;
  const auto expected = so::detail::complete_sums(serial, whole, lengths);
  for (std::int64_t run : {1, 7, 64, 1000}) {
    so::detail::SumPieces mine;
    for (std::size_t s = 0; s < lengths.size(); ++s)
      for (std::int64_t b = 0, q = 0; b < lengths[s]; b += run, ++q)
        if (q % p == r) mine.add_run(s, b, std::min(b + run, lengths[s]), [&](std::int64_t i) { return term(s, i); });
    const auto before = comm.stats().collectives;
    const auto got = so::detail::complete_sums(comm, mine, lengths);
    if (p > 1) BOOST_TEST(comm.stats().collectives - before == 2u);  // the sizes, then the pieces
    for (std::size_t s = 0; s < lengths.size(); ++s)
      BOOST_TEST(std::bit_cast<std::uint64_t>(got[s]) == std::bit_cast<std::uint64_t>(expected[s]), "runs of " << run << ", sum " << s);
  }
}

BOOST_AUTO_TEST_CASE(collectives_agree_with_their_definition_and_count_bytes) {
  Mpi comm = world();
  const int p = comm.size(), r = comm.rank();
  for (std::size_t n : {0u, 1u, 7u, 13u}) {
    BOOST_TEST_CONTEXT("n = " << n) {
      auto before = comm.stats().bytes_sent;
      std::vector<double> a(n);
      for (std::size_t i = 0; i < n; ++i) a[i] = double(r + 1) * double(i + 1);
      comm.all_reduce(std::span<double>(a), so::ReduceOp::sum);
      for (std::size_t i = 0; i < n; ++i) BOOST_TEST(a[i] == double(p * (p + 1) / 2) * double(i + 1));
      BOOST_TEST(comm.stats().bytes_sent - before == so::detail::all_reduce_bytes(n * sizeof(double), p));

      std::vector<std::int64_t> m(n, r);
      comm.all_reduce(std::span<std::int64_t>(m), so::ReduceOp::max);
      for (auto v : m) BOOST_TEST(v == p - 1);
      comm.all_reduce(std::span<std::int64_t>(m), so::ReduceOp::min);
      for (auto v : m) BOOST_TEST(v == p - 1);

      std::vector<float> send(n * p), recv(n);
      for (std::size_t i = 0; i < send.size(); ++i) send[i] = float(i + r);
      before = comm.stats().bytes_sent;
      comm.reduce_scatter(std::span<const float>(send), std::span<float>(recv), so::ReduceOp::sum);
      for (std::size_t i = 0; i < n; ++i) BOOST_TEST(recv[i] == float(p * (r * n + i) + p * (p - 1) / 2));
      BOOST_TEST(comm.stats().bytes_sent - before == so::detail::reduce_scatter_bytes(n * sizeof(float), p));

      std::vector<double> mine(n, double(r)), all(n * p, -1.0);
      before = comm.stats().bytes_sent;
      comm.all_gather(std::span<const double>(mine), std::span<double>(all));
      for (std::size_t i = 0; i < all.size(); ++i) BOOST_TEST(all[i] == double(i / (n ? n : 1)));
      BOOST_TEST(comm.stats().bytes_sent - before == so::detail::all_gather_bytes(n * sizeof(double), p));
      std::vector<double> inplace(n * p, -1.0);
      for (std::size_t i = 0; i < n; ++i) inplace[r * n + i] = double(r);
      comm.all_gather(std::span<const double>(inplace.data() + r * n, n), std::span<double>(inplace));
      BOOST_TEST(inplace == all);

      std::vector<char> text(n, char('a' + r));
      comm.broadcast(std::span<char>(text), p - 1);
      for (auto c : text) BOOST_TEST(c == char('a' + p - 1));
    }
  }
  std::vector<double> wrong(3);
  require_throw_everywhere<so::InvalidArgument>(
      [&] { comm.reduce_scatter(std::span<const double>(wrong), std::span<double>(wrong.data(), 2), so::ReduceOp::sum); },
      {"reduce_scatter", "expected size() * recv.size()"});
  comm.barrier();
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(seed)

// The seed's test: tensors sharded row-wise, column-wise and unevenly over P ranks and stepped by the
// sharded optimizer equal the corresponding chunks of the same tensors stepped whole on one rank,
// bit for bit, parameters and state, with nothing communicated by the update.
template <class Algo, class T>
void sharded_equals_whole(bool clip = false) {
  Mpi comm = world();
  const int p = comm.size();
  const std::vector<std::int64_t> shape{7, 5};
  const auto o = test::rich_options<Algo>();
  // Shards: rows (ChunkShardingSpec dim 0), columns (dim 1), and uneven rows placed in reverse.
  std::vector<so::ShardMetadata> uneven;
  for (std::int64_t q = 0, row = 0; q < p; ++q) {
    const std::int64_t rows = q == p - 1 ? 7 - row : std::min<std::int64_t>(q % 2 + 1, 7 - row);
    uneven.push_back({{row, 0}, {rows, 5}, static_cast<int>(p - 1 - q)});
    row += rows;
  }
  std::vector<so::ShardedTensor<T>> tensors{so::ShardedTensor<T>::chunk(comm, shape, 0), so::ShardedTensor<T>::chunk(comm, shape, 1),
                                            so::ShardedTensor<T>::enumerable(comm, shape, uneven)};
  const char* names[] = {"rows", "cols", "uneven"};
  so::ShardedOptimizer<Algo, Replicated, Mpi> sharded(comm, o);
  so::ShardedOptimizer<Algo, Replicated, Serial> whole(Serial{}, o);
  std::vector<Kokkos::View<T**>> wp, wg;
  Kokkos::View<T*> bias("bias", 3), gbias("gbias", 3), wbias("wbias", 3), wgbias("wgbias", 3);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    sharded.add_param(names[t], tensors[t]);
    wp.emplace_back("whole", 7, 5);
    wg.emplace_back("whole_grad", 7, 5);
    whole.add_param(names[t], wp[t], wg[t]);
    std::vector<T> init(35);
    for (std::int64_t i = 0; i < 35; ++i) init[i] = T(test::initial_value(t, i));
    test::from_host(wp[t], init);
    for (auto& s : tensors[t].local_shards()) {
      std::vector<T> v(s.value.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = init[global_index(s.metadata, shape, i)];
      test::from_host(s.value, v);
    }
  }
  sharded.add_param("bias", bias, gbias);  // a plain tensor, whole on every rank
  whole.add_param("bias", wbias, wgbias);
  if (clip) {  // the norm over every shard (columns cut mid-row), the bias counted once
    sharded.clip_grad_norm(0.5);
    whole.clip_grad_norm(0.5);
  }
  const auto sent_before = comm.stats().bytes_sent;
  for (int k = 1; k <= 5; ++k) {
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      std::vector<T> g(35);
      for (std::int64_t i = 0; i < 35; ++i) g[i] = T(test::gradient_value(t, i, k));
      test::from_host(wg[t], g);
      for (auto& s : tensors[t].local_shards()) {
        std::vector<T> v(s.grad.size());
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = g[global_index(s.metadata, shape, i)];
        test::from_host(s.grad, v);
      }
    }
    Kokkos::deep_copy(gbias, T(0.25 * k));
    Kokkos::deep_copy(wgbias, T(0.25 * k));
    sharded.step();
    whole.step();
    if (clip) BOOST_TEST(sharded.last_grad_norm() == whole.last_grad_norm());
  }
  if (!clip) BOOST_TEST(comm.stats().bytes_sent - sent_before == sharded.control_bytes());  // the update moved nothing
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto ref = test::to_host<T>(wp[t]);
    BOOST_TEST(sharded.step_count(names[t]) == 5);
    for (std::size_t j = 0; j < tensors[t].local_shards().size(); ++j) {
      const auto& s = tensors[t].local_shards()[j];
      const auto mine = test::to_host<T>(s.value);
      for (std::size_t i = 0; i < mine.size(); ++i)
        BOOST_CHECK_MESSAGE(mine[i] == ref[global_index(s.metadata, shape, i)],
                            Algo::name << " " << names[t] << " rank " << comm.rank() << " element " << i << ": " << mine[i]
                                       << " != " << ref[global_index(s.metadata, shape, i)]);
      for (std::size_t k = 0; k < Algo::slot_names.size(); ++k) {
        const auto ours = sharded.template local_state<T>(names[t], Algo::slot_names[k], j);
        const auto theirs = whole.template local_state<T>(names[t], Algo::slot_names[k]);
        BOOST_TEST(ours.empty() == (theirs.empty() || mine.empty()));
        for (std::size_t i = 0; i < ours.size(); ++i) BOOST_TEST(ours[i] == theirs[global_index(s.metadata, shape, i)]);
      }
    }
  }
  BOOST_TEST(test::to_host<T>(bias) == test::to_host<T>(wbias));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(sharded_float_equals_whole, Algo, Algorithms) { sharded_equals_whole<Algo, float>(); }
BOOST_AUTO_TEST_CASE(clipped_sharded_equals_whole) {
  sharded_equals_whole<so::algo::Adam, float>(true);
  sharded_equals_whole<so::algo::SGD, double>(true);
}

// The seed's mistake, shown: stepping each rank's shards with a local optimizer (what torch's
// ShardedOptimizer does) computes anything over a tensor from the rank's part of it: clipping by
// the local norm, LAMB's trust ratio from local norms. That is not the unsharded step; shardopt's
// is, bit for bit. An 8 x 4 float64 tensor cut by rows, its lower rows with steeper gradients.
template <class Algo>
void seeds_mistake(const typename Algo::Options& o, bool clip) {
  Mpi comm = world();
  const int p = comm.size();
  const std::vector<std::int64_t> shape{8, 4};
  auto st = so::ShardedTensor<double>::chunk(comm, shape, 0);
  Kokkos::View<double**> wp("wp", 8, 4), wg("wg", 8, 4);
  so::ShardedOptimizer<Algo, Replicated, Mpi> sharded(comm, o);
  so::ShardedOptimizer<Algo, Replicated, Serial> whole(Serial{}, o), seed(Serial{}, o);
  sharded.add_param("w", st);
  whole.add_param("w", wp, wg);
  std::vector<double> g(32), init(32);
  for (int i = 0; i < 32; ++i) {
    g[i] = test::gradient_value(3, i, 1) * (i < 16 ? 1.0 : 4.0);
    init[i] = test::initial_value(3, i);
  }
  test::from_host(wg, g);
  test::from_host(wp, init);
  std::vector<Kokkos::View<double*>> seed_p, seed_g;  // the seed: each local shard a plain tensor of a local optimizer
  for (auto& s : st.local_shards()) {
    std::vector<double> v(s.grad.size()), w(s.grad.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = g[global_index(s.metadata, shape, i)], w[i] = init[global_index(s.metadata, shape, i)];
    test::from_host(s.grad, v);
    test::from_host(s.value, w);
    seed_p.emplace_back("seed_p", v.size());
    seed_g.emplace_back("seed_g", v.size());
    test::from_host(seed_g.back(), v);
    test::from_host(seed_p.back(), w);
    seed.add_param("w" + std::to_string(seed_p.size()), seed_p.back(), seed_g.back());
  }
  if (clip) {
    for (auto* opt : {&whole, &seed}) opt->clip_grad_norm(1.0);
    sharded.clip_grad_norm(1.0);
  }
  sharded.step();
  whole.step();
  if (!seed_p.empty()) seed.step();
  const auto ref = test::to_host<double>(wp);
  double seed_error = 0;  // the seed's largest difference from the unsharded step
  for (std::size_t j = 0; j < st.local_shards().size(); ++j) {
    const auto& s = st.local_shards()[j];
    const auto ours = test::to_host<double>(s.value), theirs = test::to_host<double>(seed_p[j]);
    for (std::size_t i = 0; i < ours.size(); ++i) {
      BOOST_TEST(ours[i] == ref[global_index(s.metadata, shape, i)]);
      seed_error = std::max(seed_error, std::abs(theirs[i] - ref[global_index(s.metadata, shape, i)]));
    }
  }
  if (clip) BOOST_TEST(sharded.last_grad_norm() == whole.last_grad_norm());
  if (seed_p.empty()) return;
  BOOST_TEST_MESSAGE(Algo::name << (clip ? " clipped" : "") << ", rank " << comm.rank() << " of " << p << ": the seed's local step is off by "
                                << seed_error << (clip ? ", its local norm " : "")
                                << (clip ? std::to_string(seed.last_grad_norm()) + " against " + std::to_string(sharded.last_grad_norm()) : ""));
  // One rank holds the whole tensor only at P = 1; with more, every rank's local step is wrong.
  BOOST_TEST((seed_error != 0) == (p > 1));
  if (clip) BOOST_TEST((seed.last_grad_norm() != whole.last_grad_norm()) == (p > 1));
}

// Under Replicated each rank's whole tensors are its own: LAMB's norms are those of this rank's
// copy (nothing communicated), as one process stepping this rank's gradients.
BOOST_AUTO_TEST_CASE(replicated_whole_tensors_have_their_own_norms) {
  Mpi comm = world();
  so::ShardedOptimizer<so::algo::LAMB, Replicated, Mpi> mine(comm, {.lr = 0.1});
  so::ShardedOptimizer<so::algo::LAMB, Replicated, Serial> one(Serial{}, {.lr = 0.1});
  Kokkos::View<float*> w("w", 10), gw("gw", 10), rw("rw", 10), rgw("rgw", 10);
  Kokkos::deep_copy(w, 0.5f);
  Kokkos::deep_copy(rw, 0.5f);
  mine.add_param("w", w, gw);
  one.add_param("w", rw, rgw);
  std::vector<float> g(10);
  for (int i = 0; i < 10; ++i) g[i] = static_cast<float>(test::gradient_value(7 * comm.rank(), i, 1) * (1 + comm.rank()));
  test::from_host(gw, g);
  test::from_host(rgw, g);
  mine.step();
  one.step();
  BOOST_TEST(test::to_host<float>(w) == test::to_host<float>(rw), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(local_clipping_is_the_seeds_mistake) { seeds_mistake<so::algo::SGD>({.lr = 1.0}, true); }
BOOST_AUTO_TEST_CASE(local_lamb_is_the_seeds_mistake) { seeds_mistake<so::algo::LAMB>({.lr = 0.1, .weight_decay = 0.1}, false); }
BOOST_AUTO_TEST_CASE(local_lars_is_the_seeds_mistake) { seeds_mistake<so::algo::LARS>({.lr = 0.1, .trust_coefficient = 0.5}, false); }

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(agreement)

struct Fixture {
  Mpi comm = world();
  int p = comm.size(), r = comm.rank();
  Kokkos::View<float**> w{"w", 4, 4}, gw{"gw", 4, 4};
  so::ShardedOptimizer<so::algo::SGD, Replicated, Mpi> opt{comm, {.lr = 0.5}};
  Fixture() {
    Kokkos::deep_copy(w, 1.0f);
    Kokkos::deep_copy(gw, 1.0f);
    opt.add_param("w", w, gw);
  }
  // After a failed step nothing changed, and a consistent step works on every rank.
  void unchanged_then_recovers() {
    BOOST_TEST(test::to_host<float>(w)[0] == 1.0f);
    BOOST_TEST(opt.step_count("w") == 0);
  }
};

BOOST_FIXTURE_TEST_CASE(name_on_some_ranks_only, Fixture) {
  Kokkos::View<float*> x("x", 3), gx("gx", 3);
  if (r == 0) opt.add_param("only_on_0", x, gx);
  if (p == 1) return opt.step();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.step(); },
                                                   {"parameter 'only_on_0' exists on rank(s) 0 but not on rank(s) 1"});
  unchanged_then_recovers();
}

BOOST_FIXTURE_TEST_CASE(shape_differs, Fixture) {
  Kokkos::View<float**> x("x", 2, r == 1 ? 3 : 2), gx("gx", 2, r == 1 ? 3 : 2);
  opt.add_param("x", x, gx);
  if (p == 1) return opt.check_consistency();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.check_consistency(); },
                                                   {"parameter 'x' differs", "[2, 2]", "[2, 3]"});
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.step(); }, {"parameter 'x' differs"});
  unchanged_then_recovers();
}

BOOST_FIXTURE_TEST_CASE(options_differ, Fixture) {
  opt.param_groups()[0].options.lr = r == p - 1 ? 0.25 : 0.5;
  if (p == 1) return opt.step();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.step(); }, {"param group 0 differs", "lr=0.25", "lr=0.5"});
  unchanged_then_recovers();
  opt.param_groups()[0].options.lr = 0.5;
  opt.step();
  BOOST_TEST(test::to_host<float>(w)[0] == 0.5f);
}

// Clipping on some ranks only would leave the others out of its collectives: an error instead.
BOOST_FIXTURE_TEST_CASE(clipping_on_some_ranks_only, Fixture) {
  if (r == 0) opt.clip_grad_norm(1.0);
  if (p == 1) return opt.step();
  require_throw_everywhere<so::CollectiveMismatch>(
      [&] { opt.step(); }, {"clip_grad_norm setting differs", "'off'", "'max_norm=1 norm_type=2 error_if_nonfinite=False'"});
  unchanged_then_recovers();
  opt.clip_grad_norm(1.0);
  opt.step();  // clipped everywhere: 16 gradients of 1, norm 4
  BOOST_TEST(opt.last_grad_norm() == 4.0);
  BOOST_TEST(test::to_host<float>(w)[0] == 1.0f - 0.5f * (1.0f / (4.0f + 1e-6f)));
}

// skip_nonfinite on some ranks only: an error, not a step skipped on some ranks only.
BOOST_FIXTURE_TEST_CASE(skip_nonfinite_on_some_ranks_only, Fixture) {
  if (r == 0) opt.set_skip_nonfinite(true);
  if (p == 1) return opt.step();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.step(); }, {"skip_nonfinite setting differs", "'off'", "'on'"});
  unchanged_then_recovers();
}

// Under Replicated every rank steps its own copy: a NaN in the last rank's copy alone skips the
// step on every rank (with clipping too, whose norm counts rank 0's copy only).
BOOST_FIXTURE_TEST_CASE(skip_nonfinite_under_replicated_checks_every_copy, Fixture) {
  opt.set_skip_nonfinite(true);
  for (const bool clip : {false, true}) {
    if (clip) opt.clip_grad_norm(100.0);
    if (r == p - 1) {
      auto g = test::to_host<float>(gw);
      g[5] = NAN;
      test::from_host(gw, g);
    }
    opt.step();
    BOOST_TEST(opt.skipped_steps() == (clip ? 2 : 1));
    unchanged_then_recovers();
    Kokkos::deep_copy(gw, 1.0f);
  }
  opt.step();
  BOOST_TEST(opt.skipped_steps() == 2);
  BOOST_TEST(opt.step_count("w") == 1);
  BOOST_TEST(test::to_host<float>(w) == std::vector<float>(16, 0.5f), boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(an_error_on_one_rank_is_raised_on_every_rank, Fixture) {
  if (r == p - 1) opt.param_groups()[0].options.lr = -1;
  // With several ranks the message says which rank found the error.
  const std::string prefix = p > 1 ? "rank " + std::to_string(p - 1) + ": " : "";
  require_throw_everywhere<so::InvalidArgument>([&] { opt.step(); }, {prefix + "param group 0: Invalid learning rate: -1"});
  unchanged_then_recovers();
}

BOOST_FIXTURE_TEST_CASE(gradient_present_on_some_ranks_only, Fixture) {
  if (r == 0) opt.zero_grad(true);
  if (p == 1) return opt.step();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.step(); }, {"the gradient of 'w' differs", "absent", "present"});
}

BOOST_FIXTURE_TEST_CASE(different_calls_are_an_error_not_a_hang, Fixture) {
  if (p == 1) return opt.check_consistency();
  require_throw_everywhere<so::CollectiveMismatch>(
      [&] {
        if (r == 0) opt.check_consistency();
        else opt.step();
      },
      {"different collective operations", "step()", "check_consistency()"});
  unchanged_then_recovers();
  opt.step();
  BOOST_TEST(opt.step_count("w") == 1);
}

// A closure that throws on one rank: every rank throws in the same step and nothing is stepped
// (before, the other ranks went on alone and their steps paired with the next iteration's). The
// rank whose closure threw gets its own exception back.
BOOST_FIXTURE_TEST_CASE(a_closure_that_throws_on_one_rank_fails_the_step_everywhere, Fixture) {
  const int bad = p - 1;
  auto closure = [&]() -> double {
    if (r == bad) throw std::runtime_error("loss is NaN on this rank");
    return 1.0;
  };
  if (r == bad) {
    BOOST_CHECK_EXCEPTION(opt.step(closure), std::runtime_error,
                          [](const std::runtime_error& e) { return std::string(e.what()) == "loss is NaN on this rank"; });
  } else {
    require_throw_everywhere<so::Error>([&] { opt.step(closure); },
                                        {"rank " + std::to_string(bad) + ": step(closure): the closure threw: loss is NaN on this rank"});
  }
  unchanged_then_recovers();
  BOOST_TEST(opt.step([] { return 2.0; }) == 2.0);
  BOOST_TEST(opt.step_count("w") == 1);
}

// Calls of two optimizers that share one communicator, made out of step: the calls are numbered,
// so they cannot pair silently.
BOOST_FIXTURE_TEST_CASE(calls_out_of_step_are_named, Fixture) {
  Kokkos::View<float*> x("x", 2), gx("gx", 2);
  so::ShardedOptimizer<so::algo::SGD, Replicated, Mpi> other{comm, {.lr = 0.5}};  // the same communicator
  other.add_param("w", x, gx);
  other.check_consistency();  // other's call #1 on every rank
  if (p == 1) return opt.check_consistency();
  require_throw_everywhere<so::CollectiveMismatch>(
      [&] {
        if (r == 0) opt.check_consistency();  // opt's call #1
        else other.check_consistency();       // other's call #2
      },
      {"different collective calls of this optimizer", "call #1", "call #2"});
  BOOST_TEST(opt.collective_timeout() == 1800.0);  // the default (SHARDOPT_COLLECTIVE_TIMEOUT unset)
  BOOST_CHECK_THROW(opt.set_collective_timeout(-1), so::InvalidArgument);
  opt.set_collective_timeout(0);
  BOOST_TEST(opt.collective_timeout() == 0.0);
}

BOOST_FIXTURE_TEST_CASE(registration_order_differs, Fixture) {
  Kokkos::View<float*> a("a", 2), ga("ga", 2), b("b", 2), gb("gb", 2);
  if (r == 0) {
    opt.add_param("b", b, gb);
    opt.add_param("a", a, ga);
  } else {
    opt.add_param("a", a, ga);
    opt.add_param("b", b, gb);
  }
  if (p == 1) return opt.check_consistency();
  require_throw_everywhere<so::CollectiveMismatch>([&] { opt.check_consistency(); }, {"different order"});
}

BOOST_AUTO_TEST_SUITE_END()
