// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::testing::Findings: what a conformance check found wrong, and its report to
/// Boost.Test. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <shardopt/testing/environment.hpp>

namespace shardopt::testing {

/// @brief The problems one conformance check found, each a complete sentence saying what is wrong.
///
/// Every `check_...()` function of the kit returns one, so the checks can be run and inspected
/// outside Boost.Test too; the SHARDOPT_..._CONFORMANCE macros hand them to report().
class Findings {
 public:
  /// Records a problem.
  void add(std::string problem) { problems_.push_back(std::move(problem)); }
  /// Appends every problem of `other`.
  void add(const Findings& other) { problems_.insert(problems_.end(), other.problems_.begin(), other.problems_.end()); }
  /// No problem found.
  bool empty() const noexcept { return problems_.empty(); }
  /// The problems, in the order found.
  const std::vector<std::string>& problems() const noexcept { return problems_; }
  /// Whether some problem contains `fragment`.
  bool mentions(std::string_view fragment) const {
    return std::any_of(problems_.begin(), problems_.end(), [&](const std::string& p) { return p.find(fragment) != std::string::npos; });
  }
  /// Every problem, one per line.
  std::string str() const {
    std::string s;
    for (const auto& p : problems_) s += (s.empty() ? "" : "\n") + p;
    return s;
  }

 private:
  std::vector<std::string> problems_;
};

/// @brief Reports `f` to Boost.Test: one error per problem (at most `limit`, then a count), or one
/// passed assertion if there is none.
inline void report(const Findings& f, std::size_t limit = 10) {
  if (f.empty()) {
    BOOST_CHECK_MESSAGE(true, "no problem found");
    return;
  }
  const auto& p = f.problems();
  for (std::size_t i = 0; i < p.size() && i < limit; ++i) BOOST_ERROR(p[i]);
  if (p.size() > limit) BOOST_ERROR("... and " << (p.size() - limit) << " more problem(s) of the same check");
}

/// @brief Fails the current test case with a clear message unless the environment is ready.
inline bool require_environment() {
  if (environment_ready()) return true;
  BOOST_ERROR("shardopt::testing: Kokkos"
#if SHARDOPT_HAS_MPI
              " or MPI"
#endif
              " is not initialized. Add SHARDOPT_TESTING_GLOBAL_FIXTURE(); at namespace scope in one file of this test "
              "executable (or create a shardopt::ScopeGuard in your own global fixture).");
  return false;
}

namespace detail {
// Runs `body(findings)`; an exception escaping it becomes a finding that says where it came from.
template <class Body>
Findings guarded(std::string_view what, Body&& body) {
  Findings f;
  try {
    body(f);
  } catch (const std::exception& e) {
    f.add(std::string(what) + ": threw " + e.what());
  } catch (...) {
    f.add(std::string(what) + ": threw an exception that is not a std::exception");
  }
  return f;
}
}  // namespace detail

}  // namespace shardopt::testing
