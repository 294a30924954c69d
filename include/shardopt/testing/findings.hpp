// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::testing::Findings: what a conformance check found wrong, and its report to
/// Boost.Test. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <shardopt/detail/consensus.hpp>
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

/// @brief `text` with every line longer than `width` broken at spaces, the continuation lines
/// indented four spaces deeper than the line they continue (a word longer than a line stays whole).
inline std::string wrap_lines(std::string_view text, std::size_t width = 110) {
  std::string out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t nl = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, nl - start);
    const std::size_t indent = std::min(line.find_first_not_of(' '), line.size());
    const std::string more(indent + 4, ' ');
    bool first = true;
    while (true) {
      const std::size_t room = first ? width : width - std::min(width / 2, more.size());
      if (line.size() <= room) break;
      std::size_t cut = line.rfind(' ', room);
      if (cut == std::string_view::npos || cut <= indent) cut = line.find(' ', room);
      if (cut == std::string_view::npos) break;
      out.append(line.substr(0, cut)).append("\n").append(more);
      line = line.substr(cut + 1);
      first = false;
    }
    out.append(line);
    if (nl == text.size()) break;
    out.push_back('\n');
    start = nl + 1;
  }
  return out;
}

/// @brief Reports `f` to Boost.Test: one error per problem, long lines wrapped (at most `limit`,
/// then a count), or one passed assertion if there is none. Local: each process reports its own
/// (the conformance suites use report_across_ranks()).
inline void report(const Findings& f, std::size_t limit = 10) {
  if (f.empty()) {
    BOOST_CHECK_MESSAGE(true, "no problem found");
    return;
  }
  const auto& p = f.problems();
  for (std::size_t i = 0; i < p.size() && i < limit; ++i) BOOST_ERROR(wrap_lines(p[i]));
  if (p.size() > limit) BOOST_ERROR("... and " << (p.size() - limit) << " more problem(s) of the same check");
}

/// @brief Reports `f`, the findings of a check that every process of the test runs, once for all:
/// rank 0 prints each distinct problem once, saying which ranks found it, and fails the test case
/// if any rank found one; every other rank fails it silently if it found one itself. Collective over
/// MPI_COMM_WORLD when shardopt is built with MPI and the test runs on two or more processes;
/// report() otherwise.
inline void report_across_ranks(const Findings& f, std::size_t limit = 10) {
#if SHARDOPT_HAS_MPI
  if (environment_ready()) {
    WorldComm world = world_comm();
    const int size = world.size(), rank = world.rank();
    if (size > 1) {
      std::string mine;
      for (const auto& p : f.problems()) mine.append(p).push_back('\0');
      const std::vector<std::string> all = shardopt::detail::all_gather_strings(world, mine);
      if (rank != 0) {  // rank 0 says it all; this rank only counts its own failures
        for (std::size_t i = 0; i < f.problems().size() && i < limit; ++i)
          boost::unit_test::framework::assertion_result(boost::unit_test::AR_FAILED);
        if (f.empty()) BOOST_CHECK_MESSAGE(true, "no problem found on this rank (rank 0 reports the others')");
        return;
      }
      std::vector<std::pair<std::string, std::vector<int>>> distinct;  // in rank order, then in the order found
      for (int r = 0; r < size; ++r) {
        const std::string& b = all[static_cast<std::size_t>(r)];
        for (std::size_t at = 0; at < b.size();) {
          const std::size_t end = b.find('\0', at);
          std::string p = b.substr(at, end - at);
          at = end + 1;
          auto it = std::find_if(distinct.begin(), distinct.end(), [&](const auto& d) { return d.first == p; });
          if (it == distinct.end()) distinct.emplace_back(std::move(p), std::vector<int>{r});
          else if (it->second.back() != r) it->second.push_back(r);
        }
      }
      Findings said;
      for (const auto& [problem, ranks] : distinct)
        said.add((static_cast<int>(ranks.size()) == size ? "[all " + std::to_string(size) + " ranks] "
                                                          : (ranks.size() == 1 ? "[rank " : "[ranks ") + shardopt::detail::rank_list(ranks) +
                                                                " of " + std::to_string(size) + "] ") +
                 problem);
      report(said, limit);  // "no problem found" when no rank found one
      return;
    }
  }
#endif
  report(f, limit);
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
