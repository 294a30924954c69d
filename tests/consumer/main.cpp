// The consumer project's test suite, built against an *installed* shardopt (find_package): it checks
// its own algorithm, Rprop, with shardopt's conformance suite, and its own use of the optimizer with
// the kit's assertions. ctest runs it at 1 and 3 ranks.
#define BOOST_TEST_MODULE shardopt_consumer
#include <shardopt/testing.hpp>
#include <shardopt/version.hpp>

#include "rprop.hpp"

#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>

SHARDOPT_TESTING_GLOBAL_FIXTURE();  // MPI and Kokkos, once for the whole executable

// The headers are those of the package find_package found (CMakeLists.txt passes its version).
static_assert(SHARDOPT_VERSION_MAJOR == FOUND_SHARDOPT_VERSION_MAJOR && SHARDOPT_VERSION_MINOR == FOUND_SHARDOPT_VERSION_MINOR &&
                  SHARDOPT_VERSION_PATCH == FOUND_SHARDOPT_VERSION_PATCH,
              "<shardopt/version.hpp> is not the version of the shardopt package found");
static_assert(SHARDOPT_VERSION ==
              FOUND_SHARDOPT_VERSION_MAJOR * 10000 + FOUND_SHARDOPT_VERSION_MINOR * 100 + FOUND_SHARDOPT_VERSION_PATCH);
static_assert(std::string_view(SHARDOPT_VERSION_STRING) == FOUND_SHARDOPT_VERSION);

// Rprop for one element, as torch.optim.Rprop computes it (T is float or double).
inline const auto rprop_reference = [](const Rprop::Options& o, std::int64_t, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  auto sign = [](T x) { return x > 0 ? T(1) : x < 0 ? T(-1) : T(0); };  // torch.sign: 0 for 0, -0 and NaN
  T g = o.maximize ? -grad : grad;
  const T s = sign(g * state[0]);
  const T factor = s > 0 ? T(o.etaplus) : s < 0 ? T(o.etaminus) : T(1);
  const T scaled = state[1] * factor;  // torch.clamp: NaN in, NaN out
  state[1] = std::isnan(scaled) ? scaled : std::fmin(std::fmax(scaled, T(o.step_size_min)), T(o.step_size_max));
  if (factor == T(o.etaminus)) g = 0;
  p = p + (T(-1) * sign(g)) * state[1];
  state[0] = g;
};

SHARDOPT_ALGORITHM_CONFORMANCE(rprop_conformance, Rprop, rprop_reference,
                               {.lr = 0.5, .step_size_max = 1.0}, {.etaminus = 0.25, .etaplus = 2.0, .maximize = true});

// The consumer's own code: one Adam step moves every weight by lr (m_hat = g, v_hat = g^2), the same on
// every rank.
BOOST_AUTO_TEST_CASE(first_adam_step_moves_every_weight_by_lr) {
  shardopt::comm::Mpi comm(MPI_COMM_WORLD);
  Kokkos::View<float**> w("w", 8, 4), gw("gw", 8, 4);
  Kokkos::deep_copy(w, 1.0f);
  Kokkos::deep_copy(gw, 0.5f);
  shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::DataParallel, shardopt::comm::Mpi> opt(comm, {.lr = 1e-3});
  opt.add_param("fc.weight", w, gw);
  opt.step();
  BOOST_TEST(shardopt::testing::within_tolerance("fc.weight", w, std::vector<float>(32, 1.0f - 1e-3f), {.ulps = 1}));
  BOOST_TEST(shardopt::testing::same_on_all_ranks(comm, "fc.weight", w));
}
