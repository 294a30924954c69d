// SPDX-License-Identifier: BSD-3-Clause
// The plan (detail/plan.hpp) is a pure function of shapes, layout, world size, rank and bucket
// size: checked here for every rank of every world size from 1 to 64, in one process. Also the
// engine's other pure parts: the lanes (detail/lanes.hpp) and the registry (detail/registry.hpp).
#include <boost/test/unit_test.hpp>

#include <shardopt/algorithm.hpp>
#include <shardopt/detail/lanes.hpp>
#include <shardopt/detail/plan.hpp>
#include <shardopt/detail/registry.hpp>
#include <shardopt/detail/reproducible_sum.hpp>
#include <shardopt/comm/serial.hpp>
#include <shardopt/layout/chunk.hpp>
#include <shardopt/layout/data_parallel.hpp>
#include <shardopt/layout/flat_partition.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace so = shardopt;
namespace detail = shardopt::detail;

namespace {

// Whole tensors 0-4 and 6, a user-sharded tensor 5 with two local pieces (stepped in place).
std::vector<detail::PlanTensor> tensors() {
  const std::vector<std::vector<std::int64_t>> shapes = {{7, 5}, {13}, {1}, {3, 2, 4}, {2, 3}, {4, 4}, {129}};
  std::vector<detail::PlanTensor> out;
  for (std::size_t i = 0; i < shapes.size(); ++i)
    out.push_back({i, shapes[i], i != 5, i == 5 ? std::vector<std::int64_t>{8, 4} : std::vector<std::int64_t>{detail::numel(shapes[i])}});
  return out;
}

// Counts how often each element of each tensor appears in `copies` (a pack, an update, an unpack).
template <class C>
void count(std::map<std::size_t, std::vector<int>>& seen, const std::vector<C>& copies) {
  for (const auto& c : copies)
    for (std::int64_t e = 0; e < c.length; ++e) ++seen[c.param].at(static_cast<std::size_t>(c.src + e));
}

template <class Layout>
void check_every_rank_of_every_world_size() {
  const auto ts = tensors();
  for (int p = 1; p <= 64; ++p) {
    const so::Strategy s = p == 1 ? so::Strategy::local : Layout::strategy;
    for (const std::int64_t bucket : {1, 3, 7, 64, 1 << 20}) {
      std::map<std::size_t, std::vector<int>> owned;  // over all ranks
      for (const auto& t : ts)
        if (t.packed) owned[t.param].assign(static_cast<std::size_t>(detail::numel(t.shape)), 0);
      std::size_t bucket_count = 0;
      for (int r = 0; r < p; ++r) {
        BOOST_TEST_CONTEXT(Layout::name << " P=" << p << " rank " << r << " buckets of " << bucket) {
          const auto plan = detail::make_plan<Layout>(ts, ts.size(), s, p, r, bucket);
          // The state runs: contiguous offsets, indexed per parameter.
          std::int64_t at = 0;
          for (const auto& run : plan.state_runs) {
            BOOST_TEST(run.state_offset == at);
            at += run.length;
          }
          BOOST_TEST(plan.state_size == at);
          std::size_t indexed = 0;
          for (std::size_t i = 0; i < ts.size(); ++i)
            for (const std::size_t k : plan.runs_of(i)) {
              BOOST_TEST(plan.state_runs[k].param == i);
              ++indexed;
            }
          BOOST_TEST(indexed == plan.state_runs.size());
          // Local pieces: the sharded tensor always, every tensor on one process.
          std::int64_t local = 0;
          for (const auto& run : plan.state_runs) local += run.packed ? 0 : run.length;
          BOOST_TEST(local == (p == 1 ? 35 + 13 + 1 + 24 + 6 + 12 + 129 : 12));
          if (p == 1) {
            BOOST_TEST(plan.buckets.empty());
            continue;
          }
          if (s == so::Strategy::partitioned) BOOST_TEST(plan.state_size - local <= plan.part_size);
          // The buckets: every gradient packed once, every owned element updated once, every other
          // element unpacked once, at positions inside a buffer of at most max(bucket, P) elements.
          std::map<std::size_t, std::vector<int>> packed, updated, unpacked;
          for (const auto& t : ts)
            if (t.packed)
              for (auto* m : {&packed, &updated, &unpacked}) (*m)[t.param].assign(static_cast<std::size_t>(detail::numel(t.shape)), 0);
          const std::int64_t parts = s == so::Strategy::partitioned ? p : 1;
          for (const auto& b : plan.buckets) {
            BOOST_TEST(b.width * parts <= std::max<std::int64_t>(bucket, p));
            std::vector<int> used(static_cast<std::size_t>(b.width * parts), 0);
            for (const auto& c : b.pack)
              for (std::int64_t e = 0; e < c.length; ++e) ++used.at(static_cast<std::size_t>(c.at + e));
            BOOST_TEST(std::count_if(used.begin(), used.end(), [](int u) { return u > 1; }) == 0);
            for (const auto& u : b.update) BOOST_TEST((u.at >= 0 && u.at + u.length <= b.width));
            count(packed, b.pack);
            count(updated, b.update);
            count(unpacked, b.unpack);
            for (const auto& u : b.update)
              for (std::int64_t e = 0; e < u.length; ++e) ++owned[u.param].at(static_cast<std::size_t>(u.src + e));
          }
          bucket_count = plan.buckets.size();
          for (const auto& [param, n] : packed) {
            BOOST_TEST(std::count(n.begin(), n.end(), 1) == static_cast<std::ptrdiff_t>(n.size()));
            for (std::size_t e = 0; e < n.size(); ++e)
              BOOST_TEST(updated[param][e] + unpacked[param][e] == 1);
          }
        }
      }
      // Partitioned: each element is owned by exactly one rank; all-reduce: by every rank.
      if (p > 1)
        for (const auto& [param, n] : owned)
          BOOST_TEST(std::count(n.begin(), n.end(), s == so::Strategy::partitioned ? 1 : p) == static_cast<std::ptrdiff_t>(n.size()),
                     Layout::name << " P=" << p << " tensor " << param);
      (void)bucket_count;
    }
  }
}

using Layouts = std::tuple<so::layout::FlatPartition, so::layout::ChunkRows, so::layout::ChunkCols, so::layout::DataParallel>;

}  // namespace

BOOST_AUTO_TEST_SUITE(plan)

BOOST_AUTO_TEST_CASE_TEMPLATE(every_rank_of_every_world_size_up_to_64, L, Layouts) { check_every_rank_of_every_world_size<L>(); }

// A bucket smaller than P elements still moves one element of every part; one of the whole buffer
// is a single bucket; FlatPartition's windows cut tensors mid-way.
BOOST_AUTO_TEST_CASE(bucket_counts) {
  const auto ts = tensors();
  const std::int64_t n = 35 + 13 + 1 + 24 + 6 + 129, part = (n + 3) / 4;
  auto buckets = [&](std::int64_t b) {
    return detail::make_plan<so::layout::FlatPartition>(ts, ts.size(), so::Strategy::partitioned, 4, 1, b).buckets;
  };
  BOOST_TEST(buckets(1).size() == std::size_t(part));  // one element per part per bucket
  BOOST_TEST(buckets(1).front().width == 1);
  BOOST_TEST(buckets(4 * part).size() == 1u);
  BOOST_TEST(buckets(1 << 20).size() == 1u);
  BOOST_TEST(buckets(40).size() == std::size_t((part + 9) / 10));
  // All-reduce windows are a multiple of P (48 of 50 at P = 4): no padded copy in the reduction.
  const auto dp = detail::make_plan<so::layout::DataParallel>(ts, ts.size(), so::Strategy::all_reduce, 4, 1, 50).buckets;
  BOOST_TEST(dp.size() == std::size_t((n + 47) / 48));
  BOOST_TEST(dp.front().width == 48);
  BOOST_TEST(dp.back().width == n - 48 * (std::int64_t(dp.size()) - 1));
}

// A user's layout whose runs cover a tensor's element count but twice the same elements (so that
// others would never be stepped) gets a clear error, not a silent skip.
struct Twice {
  using layout_category = so::layout_policy_tag;
  static constexpr std::string_view name = "Twice";
  static constexpr so::Strategy strategy = so::Strategy::partitioned;
  static constexpr so::Reduction reduction = so::Reduction::mean;
  static so::Packing pack(std::span<const so::TensorInfo>, int world_size) {
    return {2, {{0, 0, 0, 2}, {0, 0, 2 * world_size - 2, 2}}};  // elements 0 and 1 twice, 2 and 3 never
  }
};
BOOST_AUTO_TEST_CASE(a_packing_that_repeats_elements_is_rejected) {
  const std::vector<detail::PlanTensor> one = {{0, {4}, true, {4}}};
  BOOST_CHECK_EXCEPTION(detail::make_plan<Twice>(one, 1, so::Strategy::partitioned, 2, 0, 64), so::Error, [](const so::Error& e) {
    return std::string(e.what()).find("overlap in the tensor") != std::string::npos;
  });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(engine_parts)

BOOST_AUTO_TEST_CASE(every_element_type_has_a_lane_a_name_and_a_file_code) {
  std::vector<std::string> names, codes;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < detail::num_element_types; ++i) {
    const auto d = static_cast<detail::Dtype>(i);
    names.push_back(detail::dtype_name(d));
    codes.push_back(detail::file_dtype(d));
    BOOST_TEST((detail::dtype_of_file(codes.back()) == d));
    detail::visit_dtype(d, [&](auto t) { bytes += sizeof(typename decltype(t)::type); });
  }
  BOOST_TEST(names == (std::vector<std::string>{"float32", "float64", "bfloat16", "float16"}), boost::test_tools::per_element());
  BOOST_TEST(codes == (std::vector<std::string>{"F32", "F64", "BF16", "F16"}), boost::test_tools::per_element());
  BOOST_TEST(bytes == 16u);
  // The 16-bit types are stepped in the float32 lane, with master weights; the others in their own.
  const auto f32 = detail::dtype_of<float>(), f64 = detail::dtype_of<double>();
  const auto bf16 = detail::dtype_of<shardopt::bfloat16>(), f16 = detail::dtype_of<shardopt::float16>();
  BOOST_TEST((detail::lane_dtype(f32) == f32 && detail::lane_dtype(f64) == f64 && detail::lane_dtype(bf16) == f32 && detail::lane_dtype(f16) == f32));
  BOOST_TEST((detail::storage_of(f32) == detail::Storage::lane && detail::storage_of(f64) == detail::Storage::lane));
  BOOST_TEST((detail::storage_of(bf16) == detail::Storage::bfloat16 && detail::storage_of(f16) == detail::Storage::float16));
  BOOST_TEST((detail::dtype_of<float>() == static_cast<detail::Dtype>(0) && detail::dtype_of<double>() == static_cast<detail::Dtype>(1)));
  BOOST_TEST(!detail::dtype_of_file("I64").has_value());
  static_assert(!detail::is_element_type<int> && detail::is_element_type<double>);
  // One lane per element type, visited in order.
  std::tuple<std::vector<float>, std::vector<double>> lanes;
  static_assert(std::is_same_v<detail::lanes_of<std::vector>, decltype(lanes)>);
  std::string order;
  detail::for_each_lane(lanes, [&](auto& lane) { order += std::to_string(sizeof(typename std::decay_t<decltype(lane)>::value_type)); });
  BOOST_TEST(order == "48");
}

BOOST_AUTO_TEST_CASE(a_shard_run_maps_to_its_rows_of_the_global_tensor) {
  // A [4, 6] tensor; this rank's shard is rows 1-2, columns 2-4: three elements per row.
  detail::Param<1> p;
  p.shape = {4, 6};
  p.shards = {so::ShardMetadata{{1, 2}, {2, 3}, 0}};
  p.pieces.push_back(detail::Piece{nullptr, nullptr, 6, p.shards[0]});
  const detail::StateRun local{0, false, 0, 0, 0, 6, 10};
  const auto segs = detail::global_segments(p, local);
  BOOST_TEST_REQUIRE(segs.size() == 2u);
  BOOST_TEST((segs[0] == std::array<std::int64_t, 3>{1 * 6 + 2, 0, 3}));
  BOOST_TEST((segs[1] == std::array<std::int64_t, 3>{2 * 6 + 2, 3, 3}));
  // A packed run of a whole tensor is its flat range; a whole tensor's local run starts at 0.
  detail::Param<1> whole;
  whole.shape = {24};
  BOOST_TEST((detail::global_segments(whole, detail::StateRun{0, true, 0, 5, 0, 7, 0})[0] == std::array<std::int64_t, 3>{5, 0, 7}));
  BOOST_TEST((detail::global_segments(whole, detail::StateRun{0, false, 0, 0, 0, 24, 0})[0] == std::array<std::int64_t, 3>{0, 0, 24}));
}

BOOST_AUTO_TEST_CASE(the_memory_map_rejects_any_overlap_and_names_the_other_tensor) {
  std::vector<float> buffer(64);
  auto param = [&](std::size_t value_at, std::size_t grad_at, std::size_t n) {
    detail::Param<1> p;
    p.dtype = detail::dtype_of<float>();
    p.pieces.push_back(detail::Piece{buffer.data() + value_at, buffer.data() + grad_at, n, {}});
    return p;
  };
  detail::MemoryMap map;
  auto name_of = [](std::size_t i) { return i == 0 ? std::string("w") : std::string(); };
  const auto first = detail::memory_ranges(param(0, 8, 8), 0);
  map.check(first, "add_param('w'): ", name_of);
  map.insert(first);
  map.check(detail::memory_ranges(param(16, 24, 8), 1), "", name_of);  // adjacent ranges are fine
  auto message = [&](std::size_t v, std::size_t g, std::size_t n) {
    try {
      map.check(detail::memory_ranges(param(v, g, n), 1), "add_param('b'): ", name_of);
    } catch (const so::InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  BOOST_TEST(message(4, 32, 4).find("the memory of the parameter overlaps the parameter of 'w': tied") != std::string::npos);
  BOOST_TEST(message(32, 15, 2).find("the memory of its gradient overlaps the gradient of 'w'") != std::string::npos);
  BOOST_TEST(message(40, 42, 4).find("overlaps the parameter itself") != std::string::npos);  // its own gradient
  BOOST_TEST(message(16, 24, 8).empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(policy_helpers)

using FloatTypes = std::tuple<float, double>;
BOOST_AUTO_TEST_CASE_TEMPLATE(math_follows_torch, T, FloatTypes) {
  namespace math = so::math;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  BOOST_TEST(math::abs(T(-2.5)) == T(2.5));
  BOOST_TEST(!std::signbit(math::abs(T(-0.0))));  // torch.abs(-0.) is 0.
  BOOST_TEST(math::abs(-inf) == inf);
  BOOST_TEST(std::isnan(math::abs(nan)));
  BOOST_TEST(math::minimum(T(1), T(-3)) == T(-3));
  BOOST_TEST(std::isnan(math::minimum(nan, T(1))));  // torch.minimum propagates NaN, std::min does not
  BOOST_TEST(std::isnan(math::minimum(T(1), nan)));
  BOOST_TEST(std::isnan(math::maximum(T(1), nan)));
  BOOST_TEST(math::exp(T(0)) == T(1));
  BOOST_TEST(math::log(T(1)) == T(0));
  BOOST_TEST(math::pow(T(2), T(10)) == T(1024));
}

// The terms of the reproducible-sum tests: values of very different magnitudes and both signs,
// so that another order of additions gives other bits.
double sum_term(std::size_t sum, std::int64_t i) {
  const double u = std::sin(double(i) * 12.9898 + double(sum) * 78.233) * 43758.5453;
  return (u - std::floor(u) - 0.5) * std::ldexp(1.0, static_cast<int>((i * 7 + static_cast<std::int64_t>(sum)) % 40) - 20);
}

// The value of each sum over the runs `cuts` (boundaries, 0 and length included) given to one
// SumPieces; with `known_length`, every run is told its sum's length (a run that reaches the end
// then sends its last block whole). `pieces` counts the pieces.
std::vector<double> sums_over(const std::vector<std::int64_t>& lengths, const std::vector<std::vector<std::int64_t>>& cuts,
                              bool known_length = false, std::size_t* pieces_out = nullptr) {
  detail::SumPieces pieces;
  for (std::size_t s = 0; s < lengths.size(); ++s)
    for (std::size_t c = 0; c + 1 < cuts[s].size(); ++c) {
      auto term = [s](std::int64_t i) { return sum_term(s, i); };
      if (known_length) pieces.add_run(s, cuts[s][c], cuts[s][c + 1], term, lengths[s]);
      else pieces.add_run(s, cuts[s][c], cuts[s][c + 1], term);
    }
  if (pieces_out) *pieces_out = pieces.data().size() / 4;
  so::comm::Serial serial;
  return detail::complete_sums(serial, pieces, lengths);
}

BOOST_AUTO_TEST_CASE(reproducible_sums_have_the_same_bits_under_every_cut) {
  // Lengths around the block (64) and tree boundaries, and one of many blocks.
  const std::vector<std::int64_t> lengths = {0, 1, 63, 64, 65, 127, 128, 129, 1000, 4096 + 7, 100000};
  std::vector<std::vector<std::int64_t>> whole;
  for (auto n : lengths) whole.push_back({0, n});
  const auto expected = sums_over(lengths, whole);
  std::uint64_t state = 12345;
  auto next = [&] { return state = state * 6364136223846793005ull + 1442695040888963407ull; };
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::vector<std::int64_t>> cuts;
    for (auto n : lengths) {
      std::vector<std::int64_t> c = {0, n};
      const int pieces = static_cast<int>(next() % 9);
      for (int k = 0; k < pieces && n > 1; ++k) c.push_back(static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n)));
      if (trial % 10 == 0)  // every element its own run
        for (std::int64_t i = 1; i < std::min<std::int64_t>(n, 300); ++i) c.push_back(i);
      std::sort(c.begin(), c.end());
      c.erase(std::unique(c.begin(), c.end()), c.end());
      cuts.push_back(c);
    }
    const auto got = sums_over(lengths, cuts, trial % 2 == 1);
    for (std::size_t s = 0; s < lengths.size(); ++s)
      BOOST_TEST(std::bit_cast<std::uint64_t>(got[s]) == std::bit_cast<std::uint64_t>(expected[s]),
                 "trial " << trial << ", sum " << s << " of " << lengths[s] << " terms: " << got[s] << " vs " << expected[s]);
  }
  // Told their lengths, whole sums send only tree nodes (no loose terms at a partial last block).
  std::size_t told = 0, untold = 0;
  const auto known = sums_over(lengths, whole, true, &told);
  sums_over(lengths, whole, false, &untold);
  for (std::size_t s = 0; s < lengths.size(); ++s)
    BOOST_TEST(std::bit_cast<std::uint64_t>(known[s]) == std::bit_cast<std::uint64_t>(expected[s]), "sum " << s);
  std::size_t nodes = 0;  // a whole sum of b blocks: one tree node per bit of b
  for (auto n : lengths) nodes += static_cast<std::size_t>(std::popcount(static_cast<std::uint64_t>((n + 63) / 64)));
  BOOST_TEST(told == nodes);
  BOOST_TEST(untold > told + 100);
  // And the value is the sum, to double's accuracy (against long double).
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    long double ref = 0, scale = 0;
    for (std::int64_t i = 0; i < lengths[s]; ++i) ref += sum_term(s, i), scale += std::fabs(sum_term(s, i));
    BOOST_TEST(std::fabs(static_cast<long double>(expected[s]) - ref) <= 1e-14L * scale, "sum " << s);
  }
  // Another order of the same terms (a plain loop) gives other bits: the test can tell orders apart.
  double plain = 0;
  for (std::int64_t i = 0; i < 100000; ++i) plain += sum_term(10, i);
  BOOST_TEST(std::bit_cast<std::uint64_t>(plain) != std::bit_cast<std::uint64_t>(expected[10]));
}

BOOST_AUTO_TEST_CASE(layouts_with_summed_gradients_have_names_of_their_own) {
  namespace layout = so::layout;
  static_assert(layout::FlatPartition::name == "FlatPartition" && layout::DataParallel::name == "DataParallel");
  static_assert(layout::BasicFlatPartition<so::Reduction::sum>::name == "FlatPartition<sum>");
  static_assert(layout::BasicDataParallel<so::Reduction::sum>::name == "DataParallel<sum>");
  static_assert(layout::ChunkRows::name == "ChunkRows" && layout::Chunk<1, so::Reduction::sum>::name == "ChunkCols<sum>");
  static_assert(layout::Chunk<2, so::Reduction::sum>::name == "Chunk<2, sum>");
  BOOST_TEST(true);  // the checks above are at compile time
}

BOOST_AUTO_TEST_SUITE_END()
