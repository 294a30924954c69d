// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The test kit's global fixture (MPI and Kokkos, once per test executable) and the world
/// its checks run in. Part of `<shardopt/testing.hpp>`.

#include <boost/test/results_collector.hpp>
#include <boost/test/tree/traverse.hpp>
#include <boost/test/tree/visitor.hpp>
#include <boost/test/unit_test.hpp>

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <iostream>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <shardopt/comm/serial.hpp>
#include <shardopt/scope_guard.hpp>
#include <shardopt/config.hpp>
#if SHARDOPT_HAS_MPI
#include <shardopt/comm/mpi.hpp>
#endif

namespace shardopt::testing {

namespace detail {
// A fatal error (a crash in a test case: "memory access violation") makes Boost.Test stop the run,
// and its report then counts the test cases that never ran as passed. This observer marks them
// skipped, so that the report says so, and names them on stderr.
class AbortedRunObserver : public boost::unit_test::test_observer {
 public:
  void test_unit_start(const boost::unit_test::test_unit& tu) override {
    started_.insert(tu.p_id);
    if (tu.p_type == boost::unit_test::TUT_CASE) last_case_ = tu.full_name();
  }
  // Called once for the test case and again for each enclosing suite (Boost's current test unit is
  // no longer valid here).
  void test_aborted() override {
    if (aborted_.empty()) aborted_ = last_case_.empty() ? std::string("a test case") : last_case_;
  }
  void test_unit_finish(const boost::unit_test::test_unit& tu, unsigned long) override {
    if (aborted_.empty() || tu.p_type != boost::unit_test::TUT_SUITE) return;
    Unstarted v(started_);
    boost::unit_test::traverse_test_tree(static_cast<const boost::unit_test::test_suite&>(tu), v);
    for (const boost::unit_test::test_unit* u : v.found) {
      boost::unit_test::results_collector.test_unit_skipped(*u, "not run: the run was aborted");
      skipped_.push_back(u->full_name());
    }
    if (tu.p_id != boost::unit_test::framework::master_test_suite().p_id || skipped_.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < skipped_.size() && i < 8; ++i) list += "\n  " + skipped_[i];
    if (skipped_.size() > 8) list += "\n  ... and " + std::to_string(skipped_.size() - 8) + " more";
    std::cerr << "shardopt::testing: a fatal error in \"" << aborted_ << "\" aborted the run; " << skipped_.size()
              << " test unit(s) after it did not run (reported skipped, not passed):" << list << std::endl;
  }
  // Before the results collector (3) at the end of a unit: its totals then count the skipped ones.
  int priority() override { return 4; }

 private:
  // The direct children of a suite that never started.
  struct Unstarted : boost::unit_test::test_tree_visitor {
    explicit Unstarted(const std::set<boost::unit_test::test_unit_id>& s) : started(s) {}
    const std::set<boost::unit_test::test_unit_id>& started;
    std::vector<const boost::unit_test::test_unit*> found;
    int depth = 0;
    void visit(const boost::unit_test::test_case& tc) override {
      if (started.count(tc.p_id) == 0) found.push_back(&tc);
    }
    bool test_suite_start(const boost::unit_test::test_suite& ts) override {
      if (depth == 0) return ++depth, true;
      if (started.count(ts.p_id) == 0) found.push_back(&ts);
      return false;  // a direct child suite: not its children
    }
    void test_suite_finish(const boost::unit_test::test_suite&) override { --depth; }
  };
  std::set<boost::unit_test::test_unit_id> started_;
  std::string last_case_, aborted_;
  std::vector<std::string> skipped_;
};
}  // namespace detail

/// @brief Boost.Test global fixture: initializes MPI (when shardopt is built with MPI) and Kokkos
/// before the first test case and finalizes them after the last one, through shardopt::ScopeGuard.
///
/// Register it once per test executable with SHARDOPT_TESTING_GLOBAL_FIXTURE(), or make it a base
/// or member of your own global fixture. What is already initialized is left alone, so it
/// coexists with a fixture of your own that initializes MPI or Kokkos first.
class Environment {
 public:
  /// Initializes MPI and Kokkos with the command line Boost.Test leaves to the test module.
  ///
  /// It also makes a run that a crash aborts report the test cases that never ran as skipped
  /// (Boost.Test's own report counts them passed) and name them.
  Environment() {
    auto& suite = boost::unit_test::framework::master_test_suite();
    guard_ = std::make_unique<ScopeGuard>(suite.argc, suite.argv);
    boost::unit_test::framework::register_observer(aborted_);
  }
  Environment(const Environment&) = delete;             ///< not copyable
  Environment& operator=(const Environment&) = delete;  ///< not copyable
  /// Finalizes what the constructor initialized (Kokkos first, then MPI).
  ~Environment() {
    boost::unit_test::framework::deregister_observer(aborted_);
    guard_.reset();
  }

 private:
  std::unique_ptr<ScopeGuard> guard_;
  detail::AbortedRunObserver aborted_;
};

/// @brief The communicator the conformance checks run on: comm::Mpi over MPI_COMM_WORLD when
/// shardopt is built with MPI, comm::Serial otherwise.
#if SHARDOPT_HAS_MPI
using WorldComm = comm::Mpi;
#else
using WorldComm = comm::Serial;
#endif

/// @brief True when the checks can run: Kokkos (and MPI, when built with it) are initialized.
inline bool environment_ready() {
#if SHARDOPT_HAS_MPI
  int mpi = 0;
  MPI_Initialized(&mpi);
  if (!mpi) return false;
#endif
  return Kokkos::is_initialized();
}

/// @brief A new WorldComm over every process of the test (collective when built with MPI).
inline WorldComm world_comm() {
#if SHARDOPT_HAS_MPI
  return comm::Mpi(MPI_COMM_WORLD);
#else
  return comm::Serial{};
#endif
}

/// @brief This process's rank in MPI_COMM_WORLD (0 without MPI or before MPI_Init).
inline int world_rank() {
#if SHARDOPT_HAS_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
#else
  return 0;
#endif
}

/// @brief The ranks of `comm` on which `local` is true, the same list on every rank (collective).
template <class Comm>
std::vector<int> ranks_where(Comm& comm, bool local) {
  const auto p = static_cast<std::size_t>(comm.size());
  std::vector<char> all(p, 0);
  const char mine = local ? 1 : 0;
  comm.all_gather(std::span<const char>(&mine, 1), std::span<char>(all));
  std::vector<int> out;
  for (std::size_t r = 0; r < p; ++r)
    if (all[r]) out.push_back(static_cast<int>(r));
  return out;
}

/// @brief True on every rank if `local` is true on any rank of `comm` (collective).
template <class Comm>
bool any_rank(Comm& comm, bool local) {
  return !ranks_where(comm, local).empty();
}

}  // namespace shardopt::testing

/// @brief Registers shardopt::testing::Environment as the Boost.Test global fixture of this test
/// executable: write `SHARDOPT_TESTING_GLOBAL_FIXTURE();` once, at namespace scope, in one of its files.
#define SHARDOPT_TESTING_GLOBAL_FIXTURE()                                  \
  using shardopt_testing_environment = ::shardopt::testing::Environment; \
  BOOST_TEST_GLOBAL_FIXTURE(shardopt_testing_environment)
