// SPDX-License-Identifier: BSD-3-Clause
// The test module: one global fixture initializes MPI and Kokkos for the whole executable.
#define BOOST_TEST_MODULE shardopt
#include <boost/test/unit_test.hpp>

#include <shardopt/scope_guard.hpp>

#include <memory>

namespace {
struct Environment {
  Environment() {
    auto& mts = boost::unit_test::framework::master_test_suite();
    guard = std::make_unique<shardopt::ScopeGuard>(mts.argc, mts.argv);
  }
  ~Environment() { guard.reset(); }
  std::unique_ptr<shardopt::ScopeGuard> guard;
};
}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(Environment);
