// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// The layouts' central check, shared by tests/test_layouts.cpp (the host, and the device path
// emulated on the host) and tests/device/device_tests.cpp (a GPU): a sharded optimizer on `Device`
// with communicator `C`, at any world size, gives the bits of one process stepping the rank-ordered
// combined gradients on the host (Kokkos::DefaultHostExecutionSpace, HostSpace).
#include <boost/test/unit_test.hpp>

#include "support.hpp"

#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace so = shardopt;
namespace layout = so::layout;

namespace test::same_bits {

// How a test makes its communicator over MPI_COMM_WORLD; specialize it for one that is not
// constructible from an MPI_Comm (comm::Nccl).
template <class C>
struct MakeComm {
  static C make() { return C(MPI_COMM_WORLD); }
};

inline const std::vector<std::vector<std::int64_t>> shapes = {{7, 5}, {13}, {1}, {3, 2, 4}, {2, 3}};

// The type T is stepped in (float for the 16-bit types), and conversions to and from it: a 16-bit
// optimizer must give the bits of a float32 one stepping the widened values (its master weights),
// rounded to T.
template <class T>
using lane_t = so::detail::compute_t<T>;
template <class T>
inline constexpr bool is16 = !std::is_same_v<T, lane_t<T>>;
template <class T>
T narrow(double x) {
  if constexpr (is16<T>) return T(static_cast<float>(x));
  else return static_cast<T>(x);
}
template <class T>
lane_t<T> widen(T x) {
  if constexpr (is16<T>) return static_cast<float>(x);
  else return x;
}
// Values to compare exactly: 16-bit ones by their bits.
template <class T>
auto comparable(const std::vector<T>& v) {
  if constexpr (is16<T>) {
    std::vector<std::uint16_t> b;
    for (const T& x : v) b.push_back(x.bits());
    return b;
  } else {
    return v;
  }
}
// The values of `v` rounded to T, comparable with comparable(vector<T>).
template <class T>
auto rounded(const std::vector<lane_t<T>>& v) {
  std::vector<T> out;
  for (const auto& x : v) out.push_back(narrow<T>(x));
  return comparable(out);
}

inline std::int64_t numel(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Gradient of tensor t on rank r at step k: differs per rank.
template <class T>
std::vector<T> rank_gradient(std::size_t t, int r, int k) {
  std::vector<T> g(numel(shapes[t]));
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = narrow<T>(test::gradient_value(t + 7 * r, i, k));
  return g;
}

// rank_gradient multiplied by a loss scale (in T's lane type, then rounded to T).
template <class T>
std::vector<T> scaled_gradient(std::size_t t, int r, int k, lane_t<T> scale) {
  auto g = rank_gradient<T>(t, r, k);
  if (scale != lane_t<T>(1))
    for (auto& x : g) x = narrow<T>(widen(x) * scale);
  return g;
}

// What every layout must reproduce: the gradients of ranks 0..P-1 (multiplied by `scale`)
// combined in rank order in T's lane type, then multiplied by `unscale` (torch's unscale_ after
// the reduction).
template <class T, class R = lane_t<T>>
std::vector<R> combined_gradient(std::size_t t, int p, int k, so::Reduction red, R scale = R(1), R unscale = R(1)) {
  std::vector<R> acc;
  for (const T& x : scaled_gradient<T>(t, 0, k, scale)) acc.push_back(widen(x));
  for (int r = 1; r < p; ++r) {
    const auto g = scaled_gradient<T>(t, r, k, scale);
    for (std::size_t i = 0; i < acc.size(); ++i) acc[i] = acc[i] + widen(g[i]);
  }
  if (red == so::Reduction::mean)
    for (auto& a : acc) a = a / R(p);
  if (unscale != R(1))
    for (auto& a : acc) a = a * unscale;
  return acc;
}


// Registers `shapes` as views of a given element type (in memory space `M`), named t0, t1, ...,
// their initial values rounded to `Through` first (a float32 reference of 16-bit parameters).
template <class T, class M = Kokkos::DefaultExecutionSpace::memory_space, class Through = T>
struct Tensors {
  std::vector<Kokkos::View<T*, M>> value, grad;
  Tensors() {
    for (std::size_t t = 0; t < shapes.size(); ++t) {
      value.emplace_back("value", numel(shapes[t]));
      grad.emplace_back("grad", numel(shapes[t]));
      std::vector<T> init(numel(shapes[t]));
      for (std::size_t i = 0; i < init.size(); ++i) init[i] = static_cast<T>(widen(narrow<Through>(test::initial_value(t, i))));
      test::from_host(value[t], init);
    }
  }
  template <class Opt>
  void register_in(Opt& opt, std::size_t first = 0, std::size_t last = shapes.size()) {
    for (std::size_t t = first; t < last; ++t) {
      const std::string name = "t" + std::to_string(t);
      const auto& s = shapes[t];
      using U = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
      if (s.size() == 1) opt.add_param(name, value[t], grad[t]);
      else if (s.size() == 2)
        opt.add_param(name, Kokkos::View<T**, M, U>(value[t].data(), s[0], s[1]), Kokkos::View<T**, M, U>(grad[t].data(), s[0], s[1]));
      else
        opt.add_param(name, Kokkos::View<T***, M, U>(value[t].data(), s[0], s[1], s[2]),
                      Kokkos::View<T***, M, U>(grad[t].data(), s[0], s[1], s[2]));
    }
  }
};

// A non-finite gradient element: at step `step`, on rank `rank` (taken modulo the world size),
// element `index` of tensor `tensor` (shapes.size(): the first element of the user-sharded
// tensor's first shard; only rank 0 is sure to hold rows of it at every world size) is `value`.
struct NonFinite {
  int step, rank;
  std::size_t tensor, index;
  double value;
};

// `Device` is where the sharded optimizer runs and keeps everything (the reference stays on the host);
// `T` is the parameters' type: for bfloat16 and float16, one process steps float32 parameters (the
// widened values and gradients, reduced in float32) and the sharded optimizer's master weights must
// be its parameters, its parameters those rounded;
// `C` its communicator. With `poison`, the sharded optimizer skips non-finite steps
// (set_skip_nonfinite) and the poisoned step must be skipped on every rank: the result is then
// that of one process that never had that step. With `scaler`, the sharded optimizer steps with it
// (step(scaler)) on gradients multiplied by its scale, and one process steps the combined
// gradients unscaled as torch's unscale_ does; the scales must follow the same sequence.
template <class Algo, class Layout, class T = float, class Device = Kokkos::DefaultExecutionSpace, class C = so::comm::Mpi>
void same_bits_as_one_process(int steps = 20, std::size_t bucket_bytes = 0, std::optional<so::ClipGradNorm> clip = {},
                              std::optional<NonFinite> poison = {}, std::optional<so::GradScaler> scaler = {}) {
  using M = typename Device::memory_space;
  C comm = MakeComm<C>::make();
  const int p = comm.size(), r = comm.rank();
  const auto o = test::rich_options<Algo>();
  so::ShardedOptimizer<Algo, Layout, C, Device> sharded(comm, o);
  if (bucket_bytes) sharded.set_bucket_bytes(bucket_bytes);
  using R = lane_t<T>;
  so::ShardedOptimizer<Algo, layout::Replicated, so::comm::Serial, Kokkos::DefaultHostExecutionSpace> single(so::comm::Serial{}, o);
  if (clip) {
    sharded.clip_grad_norm(clip->max_norm, clip->norm_type, clip->error_if_nonfinite);
    single.clip_grad_norm(clip->max_norm, clip->norm_type, clip->error_if_nonfinite);
  }
  if (poison) sharded.set_skip_nonfinite(true);
  int clipped = 0;  // steps whose coefficient was below 1
  Tensors<T, M> mine;
  Tensors<R, Kokkos::HostSpace, T> ref;
  mine.register_in(sharded);
  ref.register_in(single);
  // A user-sharded tensor mixed in: keeps its own sharding, stepped with its own gradient.
  auto st = so::ShardedTensor<T, M>::chunk(comm, {5, 2}, 0);
  Kokkos::View<R**, Kokkos::HostSpace> st_whole("st_whole", 5, 2), st_grad("st_grad", 5, 2);
  sharded.add_param("sharded", st);
  single.add_param("sharded", st_whole, st_grad);
  auto step_sharded = [&] {
    if (scaler) sharded.step(*scaler);
    else sharded.step();
  };
  for (int k = 1; k <= steps; ++k) {
    const R scale = scaler ? R(scaler->scale()) : R(1), unscale = scaler ? R(scaler->inv_scale()) : R(1);
    for (std::size_t t = 0; t < shapes.size(); ++t) {
      test::from_host(mine.grad[t], scaled_gradient<T>(t, r, k, scale));
      test::from_host(ref.grad[t], combined_gradient<T>(t, p, k, Layout::reduction, scale, unscale));
    }
    std::vector<T> sg(10);
    for (int i = 0; i < 10; ++i) sg[i] = narrow<T>(widen(narrow<T>(test::gradient_value(99, i, k))) * scale);
    std::vector<R> sg_ref;
    for (const auto& x : sg) sg_ref.push_back(widen(x) * unscale);
    test::from_host(st_grad, sg_ref);
    for (auto& s : st.local_shards())
      test::from_host(s.grad, std::vector<T>(sg.begin() + s.metadata.offsets[0] * 2, sg.begin() + (s.metadata.offsets[0] + s.metadata.sizes[0]) * 2));
    if (poison && k == poison->step) {
      if (r == poison->rank % p) {
        if (poison->tensor < shapes.size()) {
          auto g = scaled_gradient<T>(poison->tensor, r, k, scale);
          g.at(poison->index) = narrow<T>(poison->value);
          test::from_host(mine.grad[poison->tensor], g);
        } else {
          auto& s = st.local_shards().at(0);
          auto g = test::to_host<T>(s.grad);
          g.at(0) = narrow<T>(poison->value);
          test::from_host(s.grad, g);
        }
      }
      step_sharded();
      BOOST_TEST(sharded.skipped_steps() == 1, "step " << k << " is skipped on rank " << r);
      continue;  // one process never has it
    }
    step_sharded();
    single.step();
    if (clip) {
      BOOST_TEST(std::bit_cast<std::uint64_t>(sharded.last_grad_norm()) == std::bit_cast<std::uint64_t>(single.last_grad_norm()),
                 "step " << k << ": norm " << sharded.last_grad_norm() << " vs one process " << single.last_grad_norm());
      clipped += single.last_grad_norm() + 1e-6 > clip->max_norm;
    }
  }
  if (clip) BOOST_TEST(clipped > 0, "the gradients were clipped at some step");
  if (poison) BOOST_TEST(sharded.skipped_steps() == 1);
  for (std::size_t t = 0; t < shapes.size(); ++t) {
    const std::string name = "t" + std::to_string(t);
    BOOST_TEST_CONTEXT(Algo::name << " under " << Layout::name << " at P=" << p << ", buckets of " << sharded.bucket_bytes()
                                  << " bytes, " << name) {
      BOOST_TEST(comparable(test::to_host<T>(mine.value[t])) == rounded<T>(test::to_host<R>(ref.value[t])), boost::test_tools::per_element());
      for (std::size_t k = 0; k < Algo::slot_names.size(); ++k) {
        const auto gathered = sharded.template gathered_state<R>(name, Algo::slot_names[k]);
        BOOST_TEST(gathered.size() == std::size_t(numel(shapes[t])));  // every slot is in use with these options
        BOOST_TEST(gathered == single.template local_state<R>(name, Algo::slot_names[k]), boost::test_tools::per_element());
      }
      if constexpr (is16<T>)  // the master weights: one process's float32 parameters
        BOOST_TEST(sharded.template gathered_state<R>(name, "master") == test::to_host<R>(ref.value[t]), boost::test_tools::per_element());
      BOOST_TEST(sharded.step_count(name) == steps - (poison ? 1 : 0));
    }
  }
  const auto whole = test::to_host<R>(st_whole);
  for (auto& s : st.local_shards()) {
    const auto v = test::to_host<T>(s.value);
    BOOST_TEST(comparable(v) == rounded<T>(std::vector<R>(whole.begin() + s.metadata.offsets[0] * 2, whole.begin() + s.metadata.offsets[0] * 2 + v.size())),
               boost::test_tools::per_element());
  }
}

template <class A, class L>
struct Case {
  using Algo = A;
  using Layout = L;
};

}  // namespace test::same_bits
