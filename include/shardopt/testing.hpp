// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The test kit for your own policies and code (Boost.Test): a global fixture for MPI and
/// Kokkos, conformance suites for an algorithm, a layout or a communicator, and assertion helpers.
/// Include it in tests only; it needs Boost.Test (link `Boost::unit_test_framework`).
///
/// @code
/// #define BOOST_TEST_MODULE my_tests          // in one file, before any Boost.Test header
/// #include <shardopt/testing.hpp>
/// SHARDOPT_TESTING_GLOBAL_FIXTURE();          // MPI and Kokkos, once per test executable
///
/// SHARDOPT_ALGORITHM_CONFORMANCE(my_algo_conformance, MyAlgo, my_algo_reference, {.lr = 0.1});
/// SHARDOPT_LAYOUT_CONFORMANCE(my_layout_conformance, MyLayout);
/// SHARDOPT_COMM_CONFORMANCE(my_comm_conformance, [](MPI_Comm c) { return MyComm(c); });
///
/// BOOST_AUTO_TEST_CASE(my_training_step) {
///   ...
///   BOOST_TEST(shardopt::testing::same_bits("fc.weight", w, expected));
///   BOOST_TEST(shardopt::testing::same_on_all_ranks(comm, "fc.weight", w));
/// }
/// @endcode
///
/// Run the test executable under `mpiexec -n P` for each world size you support; every check runs at
/// the world size it is started with. The guides:
/// - @ref md_docs_testing "Testing your policies and your code" (this kit),
/// - @ref md_docs_writing_policies "Writing your own policy",
/// - @ref md_docs_templates "Using shardopt in your own templates",
/// - @ref md_docs_policies "The bundled policies".

#include <shardopt/shardopt.hpp>

#include <shardopt/testing/algorithm_conformance.hpp>
#include <shardopt/testing/comm_conformance.hpp>
#include <shardopt/testing/compare.hpp>
#include <shardopt/testing/consistency.hpp>
#include <shardopt/testing/environment.hpp>
#include <shardopt/testing/findings.hpp>
#include <shardopt/testing/layout_conformance.hpp>

/// @brief The test kit: fixture, conformance checks and assertion helpers (`<shardopt/testing.hpp>`).
namespace shardopt::testing {}
