// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The test kit's global fixture (MPI and Kokkos, once per test executable) and the world
/// its checks run in. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <memory>
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

/// @brief Boost.Test global fixture: initializes MPI (when shardopt is built with MPI) and Kokkos
/// before the first test case and finalizes them after the last one, through shardopt::ScopeGuard.
///
/// Register it once per test executable with SHARDOPT_TESTING_GLOBAL_FIXTURE(), or make it a base
/// or member of your own global fixture. What is already initialized is left alone, so it
/// coexists with a fixture of your own that initializes MPI or Kokkos first.
class Environment {
 public:
  /// Initializes MPI and Kokkos with the command line Boost.Test leaves to the test module.
  Environment() {
    auto& suite = boost::unit_test::framework::master_test_suite();
    guard_ = std::make_unique<ScopeGuard>(suite.argc, suite.argv);
  }
  Environment(const Environment&) = delete;             ///< not copyable
  Environment& operator=(const Environment&) = delete;  ///< not copyable
  /// Finalizes what the constructor initialized (Kokkos first, then MPI).
  ~Environment() { guard_.reset(); }

 private:
  std::unique_ptr<ScopeGuard> guard_;
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
