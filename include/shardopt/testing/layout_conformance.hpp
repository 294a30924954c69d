// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The conformance suite of a layout policy: SHARDOPT_LAYOUT_CONFORMANCE and the checks it
/// runs. Part of `<shardopt/testing.hpp>`.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <shardopt/algo/adagrad.hpp>
#include <shardopt/algo/adam.hpp>
#include <shardopt/algo/adamw.hpp>
#include <shardopt/algo/nadam.hpp>
#include <shardopt/algo/rmsprop.hpp>
#include <shardopt/algo/sgd.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/layout/flat_partition.hpp>
#include <shardopt/layout_support.hpp>
#include <shardopt/options.hpp>
#include <shardopt/testing/consistency.hpp>
#include <shardopt/testing/findings.hpp>

namespace shardopt::testing {

/// @brief Every bundled algorithm: a layout must give the same bits as one process under each.
using bundled_algorithms = std::tuple<algo::SGD, algo::Adagrad, algo::Adam, algo::AdamW, algo::RMSprop, algo::Adamax, algo::RAdam, algo::NAdam>;

/// @brief Options of a bundled algorithm that switch on every state slot and branch it has
/// (momentum, weight decay, amsgrad, centered, lr_decay, ...), and its defaults.
template <class Algo>
std::vector<typename Algo::Options> exercising_options() {
  typename Algo::Options o{};
  set_option<Algo>(o, "lr", 0.05);
  set_option<Algo>(o, "weight_decay", 0.1);
  set_option<Algo>(o, "momentum", 0.9);
  set_option<Algo>(o, "amsgrad", 1);
  set_option<Algo>(o, "centered", 1);
  set_option<Algo>(o, "lr_decay", 0.01);
  set_option<Algo>(o, "initial_accumulator_value", 0.1);
  return {o, typename Algo::Options{}};
}

/// @brief Whether `packing` is valid for `tensors` at `world_size`: "" if every element of every
/// tensor lies in exactly one run, inside its tensor and inside the buffer of `world_size` parts,
/// with no two runs overlapping; otherwise what is wrong.
inline std::string packing_problem(const Packing& packing, std::span<const TensorInfo> tensors, int world_size) {
  if (packing.part_size < 0) return "part_size is negative (" + std::to_string(packing.part_size) + ")";
  const std::int64_t buffer = packing.part_size * world_size;
  std::vector<std::vector<char>> covered(tensors.size());
  for (std::size_t t = 0; t < tensors.size(); ++t) covered[t].assign(static_cast<std::size_t>(tensors[t].numel()), 0);
  std::vector<std::pair<std::int64_t, std::int64_t>> spans;
  for (std::size_t i = 0; i < packing.runs.size(); ++i) {
    const auto& r = packing.runs[i];
    const std::string run = "run " + std::to_string(i) + " {tensor " + std::to_string(r.tensor) + ", src " + std::to_string(r.src) +
                            ", dst " + std::to_string(r.dst) + ", length " + std::to_string(r.length) + "}";
    if (r.tensor >= tensors.size()) return run + " names a tensor that does not exist (there are " + std::to_string(tensors.size()) + ")";
    if (r.length < 0) return run + " has a negative length";
    if (r.src < 0 || r.src + r.length > tensors[r.tensor].numel())
      return run + " reaches outside its tensor of " + std::to_string(tensors[r.tensor].numel()) + " elements";
    if (r.dst < 0 || r.dst + r.length > buffer)
      return run + " reaches outside the buffer of " + std::to_string(world_size) + " parts of " + std::to_string(packing.part_size) +
             " elements";
    for (std::int64_t e = 0; e < r.length; ++e) {
      auto& c = covered[r.tensor][static_cast<std::size_t>(r.src + e)];
      if (c) return run + " places element " + std::to_string(r.src + e) + " of tensor " + std::to_string(r.tensor) + " a second time";
      c = 1;
    }
    if (r.length > 0) spans.emplace_back(r.dst, r.dst + r.length);
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      return "two runs overlap in the buffer at offset " + std::to_string(spans[i].first);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto missing = std::count(covered[t].begin(), covered[t].end(), 0);
    if (missing) return std::to_string(missing) + " of the " + std::to_string(covered[t].size()) + " elements of tensor " + std::to_string(t) + " are in no run";
  }
  return {};
}

/// @brief What a layout declares (a non-empty name) and its packing: `Layout::pack` at world sizes
/// 1 to 8 on sets of tensors of awkward shapes (single elements, primes, a zero-size tensor, more
/// ranks than rows) places every element exactly once (see packing_problem()). Not needed of Strategy::local.
template <class Layout>
Findings check_layout_declaration_and_packing() {
  Findings f;
  const std::string l = std::string(Layout::name).empty() ? std::string("the layout") : "layout " + std::string(Layout::name);
  if (std::string_view(Layout::name).empty()) f.add("Layout::name is empty: it names the layout in messages.");
  if constexpr (Layout::strategy == Strategy::local) return f;
  const std::vector<std::vector<std::vector<std::int64_t>>> sets = {
      {{1}}, {{1}, {1}, {1}}, {{97}}, {{7, 5}, {13}, {1}, {3, 2, 4}, {2, 3}}, {{2, 3, 5, 7}}, {{13, 1}, {1, 13}}, {{3}, {0, 4}, {5}}};
  for (int p = 1; p <= 8; ++p)
    for (const auto& set : sets) {
      std::vector<TensorInfo> tensors;
      std::string shapes;
      for (const auto& s : set) {
        tensors.push_back(TensorInfo{s});
        shapes += (shapes.empty() ? "" : ", ") + shardopt::detail::fmt_shape(s);
      }
      std::string problem;
      try {
        problem = packing_problem(Layout::pack(std::span<const TensorInfo>(tensors), p), tensors, p);
      } catch (const std::exception& e) {
        problem = std::string("it threw ") + e.what();
      }
      if (!problem.empty())
        f.add(l + ": pack() of the tensors [" + shapes + "] at world size " + std::to_string(p) + " is not a packing: " + problem +
              ". Every element of every tensor must be placed exactly once, inside the buffer of world_size parts of "
              "part_size elements; rank r owns part r.");
    }
  return f;
}

namespace detail {
enum class LayoutCase { declaration, round_trip };

template <class Spec>
void run_layout_case(LayoutCase c) {
  using Layout = typename Spec::layout;
  if constexpr (Spec::valid) {
    if (!require_environment()) return;
    if (c == LayoutCase::declaration) {
      report_across_ranks(check_layout_declaration_and_packing<Layout>());
    } else {
      const auto o = exercising_options<algo::Adam>();
      Findings f = check_state_round_trip<algo::Adam, Layout, layout::FlatPartition, Layout>(o);
      f.add(check_state_round_trip<algo::Adam, layout::FlatPartition, Layout, Layout>(o));
      report_across_ranks(f);
    }
  }
}
template <class Spec, class Algo>
void run_layout_same_bits() {
  if constexpr (Spec::valid) {
    if (!require_environment()) return;
    report_across_ranks(check_same_bits_as_one_process<Algo, typename Spec::layout>(exercising_options<Algo>()));
  }
}
}  // namespace detail

}  // namespace shardopt::testing

/// @brief Registers the conformance suite of the layout policy `Layout` as the Boost.Test suite `suite`.
///
/// @code
/// SHARDOPT_LAYOUT_CONFORMANCE(greedy_conformance, Greedy);
/// @endcode
///
/// Test cases, run on every process of the test executable:
/// - `declaration_and_packing`: the policy satisfies shardopt::Layout (at compile time, with one
///   readable message otherwise) and check_layout_declaration_and_packing();
/// - `same_bits_as_one_process<Algo>`, for every bundled algorithm with options that use all its
///   state: check_same_bits_as_one_process() at the world size the test runs with;
/// - `state_dict_round_trip`: check_state_round_trip() from this layout to FlatPartition and back,
///   and from FlatPartition to this layout.
#define SHARDOPT_LAYOUT_CONFORMANCE(suite, Layout)                                                                  \
  BOOST_AUTO_TEST_SUITE(suite)                                                                                      \
  struct shardopt_layout_spec {                                                                                     \
    using layout = Layout;                                                                                          \
    static constexpr bool valid = ::shardopt::detail::check_layout<Layout>();                                       \
  };                                                                                                                \
  BOOST_AUTO_TEST_CASE(declaration_and_packing) {                                                                   \
    ::shardopt::testing::detail::run_layout_case<shardopt_layout_spec>(::shardopt::testing::detail::LayoutCase::declaration); \
  }                                                                                                                 \
  BOOST_AUTO_TEST_CASE_TEMPLATE(same_bits_as_one_process, shardopt_algo, ::shardopt::testing::bundled_algorithms) { \
    ::shardopt::testing::detail::run_layout_same_bits<shardopt_layout_spec, shardopt_algo>();                       \
  }                                                                                                                 \
  BOOST_AUTO_TEST_CASE(state_dict_round_trip) {                                                                     \
    ::shardopt::testing::detail::run_layout_case<shardopt_layout_spec>(::shardopt::testing::detail::LayoutCase::round_trip); \
  }                                                                                                                 \
  BOOST_AUTO_TEST_SUITE_END()
