// SPDX-License-Identifier: BSD-3-Clause
// State sharding, run at world sizes 1 to 4: every layout gives the same bits as one process stepping
// the averaged gradients; state memory per rank and bytes per step follow the formulas.
#include <boost/test/unit_test.hpp>

#include "device_like.hpp"
#include "same_bits.hpp"
#include "support.hpp"

#include <setjmp.h>  // sigsetjmp (POSIX)
#include <signal.h>

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>

namespace so = shardopt;
using so::comm::Mpi;
using so::comm::Serial;
namespace layout = so::layout;

namespace {

using namespace test::same_bits;

Mpi world() { return Mpi(MPI_COMM_WORLD); }

// A Comm that forwards to comm::Mpi and records the largest buffer of each kind of collective.
struct Widest {
  using communicator_category = so::communicator_tag;
  static constexpr std::string_view name = "Widest";
  Mpi inner;
  std::shared_ptr<std::array<std::size_t, 3>> widest = std::make_shared<std::array<std::size_t, 3>>();  // bytes: AR, RS, AG
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  template <class T>
  void all_reduce(std::span<T> b, so::ReduceOp op) {
    if (std::is_floating_point_v<T>) note(0, b.size_bytes());
    inner.all_reduce(b, op);
  }
  template <class T>
  void reduce_scatter(std::span<const T> s, std::span<T> r, so::ReduceOp op) {
    note(1, s.size_bytes());
    inner.reduce_scatter(s, r, op);
  }
  template <class T>
  void all_gather(std::span<const T> s, std::span<T> r) {
    if (std::is_floating_point_v<T>) note(2, r.size_bytes());
    inner.all_gather(s, r);
  }
  template <class T>
  void broadcast(std::span<T> b, int root) { inner.broadcast(b, root); }
  void barrier() { inner.barrier(); }
  const so::CommStats& stats() const { return inner.stats(); }
  void note(int kind, std::size_t bytes) { (*widest)[kind] = std::max((*widest)[kind], bytes); }
};


template <class L>
using AllAlgos = std::tuple<Case<so::algo::SGD, L>, Case<so::algo::Adagrad, L>, Case<so::algo::Adam, L>, Case<so::algo::AdamW, L>,
                            Case<so::algo::RMSprop, L>>;
using FlatCases = AllAlgos<layout::FlatPartition>;
using ChunkCases = decltype(std::tuple_cat(AllAlgos<layout::ChunkRows>{}, AllAlgos<layout::ChunkCols>{}));
using DataParallelCases = AllAlgos<layout::DataParallel>;
using BucketLayouts = std::tuple<layout::FlatPartition, layout::ChunkRows, layout::ChunkCols, layout::DataParallel>;

}  // namespace

BOOST_AUTO_TEST_SUITE(same_bits)

BOOST_AUTO_TEST_CASE_TEMPLATE(flat_partition, C, FlatCases) { same_bits_as_one_process<typename C::Algo, typename C::Layout>(); }
BOOST_AUTO_TEST_CASE_TEMPLATE(chunk, C, ChunkCases) { same_bits_as_one_process<typename C::Algo, typename C::Layout>(); }
BOOST_AUTO_TEST_CASE_TEMPLATE(data_parallel, C, DataParallelCases) { same_bits_as_one_process<typename C::Algo, typename C::Layout>(); }

BOOST_AUTO_TEST_CASE(double_and_summed_gradients) {
  same_bits_as_one_process<so::algo::Adam, layout::BasicFlatPartition<so::Reduction::sum>, double>(5);
  same_bits_as_one_process<so::algo::SGD, layout::Chunk<1, so::Reduction::sum>, double>(5);
  same_bits_as_one_process<so::algo::RMSprop, layout::FlatPartition, double>(5);
}

// Buckets of 1 element (fewer than P: one element of every part per bucket), 3 and 7 (windows that
// cut tensors mid-way and runs that cross windows), 32 and the default (all in one bucket): the
// same bits as one process, the same bits as each other.
BOOST_AUTO_TEST_CASE_TEMPLATE(every_bucket_size, L, BucketLayouts) {
  for (const std::size_t elements : {1, 3, 7, 32}) {
    same_bits_as_one_process<so::algo::Adam, L>(4, elements * sizeof(float));
    same_bits_as_one_process<so::algo::SGD, L, double>(3, elements * sizeof(double));
  }
}

// Clipping by the global norm: the norm (each rank's share of every tensor, the user-sharded one
// over its shards) and the clipped steps are the bits of one process, for norms 2, 1, 3 and
// infinity, with buckets that cut the tensors anywhere.
BOOST_AUTO_TEST_CASE_TEMPLATE(clip_grad_norm, L, BucketLayouts) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const double norm : {2.0, 1.0, 3.0, inf}) {
    BOOST_TEST_CONTEXT("norm_type " << norm) {
      const so::ClipGradNorm c{norm == inf ? 0.3 : 0.8, norm};
      same_bits_as_one_process<so::algo::Adam, L>(4, 0, c);
      same_bits_as_one_process<so::algo::SGD, L, double>(3, 0, c);
      for (const std::size_t elements : {1, 7, 70}) same_bits_as_one_process<so::algo::AdamW, L>(3, elements * sizeof(float), c);
    }
  }
}

// Algorithms with per-tensor sums (LAMB, LARS: norms of the parameter and the update over the
// whole tensor): the bits of one process under every layout and bucket size, and after clipping.
BOOST_AUTO_TEST_CASE_TEMPLATE(tensor_sums, L, BucketLayouts) {
  for (const std::size_t elements : {0, 1, 7, 70}) {
    same_bits_as_one_process<so::algo::LAMB, L>(4, elements * sizeof(float));
    same_bits_as_one_process<so::algo::LARS, L, double>(3, elements * sizeof(double));
  }
  same_bits_as_one_process<so::algo::LAMB, L, double>(3, 0, so::ClipGradNorm{0.8, 2.0});
  same_bits_as_one_process<so::algo::LARS, L>(3, 7 * sizeof(float), so::ClipGradNorm{0.3, std::numeric_limits<double>::infinity()});
}

// set_skip_nonfinite: an infinity or a NaN in one element, on one rank, at one step (the first, the
// last, one in between), in a plain tensor or in the user-sharded one, skips that step on every
// rank; everything is then the bits of one process that never had that step. Without clipping (the
// verdicts in an all-reduce of their own), with clipping of norm 2 and infinity (in its collective),
// with buckets that cut the tensors, and with per-tensor sums (LAMB, LARS).
BOOST_AUTO_TEST_CASE_TEMPLATE(skip_nonfinite, L, BucketLayouts) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::size_t user_sharded = shapes.size();
  same_bits_as_one_process<so::algo::Adam, L>(5, 0, {}, NonFinite{3, 1, 0, 4, inf});
  same_bits_as_one_process<so::algo::Adam, L>(5, 7 * sizeof(float), {}, NonFinite{2, 3, 3, 23, -inf});
  same_bits_as_one_process<so::algo::SGD, L, double>(4, 0, {}, NonFinite{1, 2, 1, 12, nan});  // the first step: no state yet
  same_bits_as_one_process<so::algo::AdamW, L>(4, 0, {}, NonFinite{4, 0, user_sharded, 0, nan});  // the last step
  same_bits_as_one_process<so::algo::Adam, L>(4, 0, so::ClipGradNorm{0.8, 2.0}, NonFinite{2, 1, 4, 5, inf});
  same_bits_as_one_process<so::algo::Adam, L>(4, 3 * sizeof(float), so::ClipGradNorm{0.3, inf}, NonFinite{3, 2, 0, 0, nan});
  same_bits_as_one_process<so::algo::LAMB, L>(4, 0, {}, NonFinite{2, 1, 2, 0, inf});
  same_bits_as_one_process<so::algo::LARS, L, double>(3, 0, so::ClipGradNorm{0.8, 2.0}, NonFinite{2, 3, 3, 7, -inf});
}

// step(scaler): gradients multiplied by the loss scale, unscaled where the reduction copies them back
// (in place for the tensors stepped in place), give the bits of one process stepping the combined
// gradients unscaled after the reduction (torch: DDP's average, then unscale_), under every layout:
// a power-of-two scale (exact) and others (the unscaling rounds), with buckets that cut tensors,
// clipping of the unscaled gradients, an overflow (skipped, the scale backs off) and LAMB.
BOOST_AUTO_TEST_CASE_TEMPLATE(grad_scaler, L, BucketLayouts) {
  const so::GradScaler pow2({.init_scale = 1024.0, .growth_interval = 2});
  const so::GradScaler odd({.init_scale = 1000.0, .growth_factor = 1.5, .backoff_factor = 0.3, .growth_interval = 2});
  same_bits_as_one_process<so::algo::Adam, L>(6, 0, {}, {}, pow2);
  same_bits_as_one_process<so::algo::Adam, L>(6, 7 * sizeof(float), {}, {}, odd);
  same_bits_as_one_process<so::algo::Adam, L>(5, 0, so::ClipGradNorm{0.8, 2.0}, {}, odd);
  same_bits_as_one_process<so::algo::SGD, L, double>(5, 0, {}, NonFinite{3, 1, 0, 4, std::numeric_limits<double>::infinity()}, odd);
  same_bits_as_one_process<so::algo::LAMB, L>(4, 0, {}, {}, odd);
}

// 16-bit parameters (bfloat16, float16) with float32 master weights sharded like the state and
// gradients reduced in float32: the masters are the bits of one process stepping float32
// parameters (the widened values and gradients), the parameters those rounded, under every layout
// and every algorithm, with buckets that cut tensors, clipping, a skipped step, a GradScaler
// (unscaled in float32: no 16-bit underflow) and per-tensor sums (LAMB).
BOOST_AUTO_TEST_CASE_TEMPLATE(sixteen_bit_parameters, L, BucketLayouts) {
  const double inf = std::numeric_limits<double>::infinity();
  same_bits_as_one_process<so::algo::Adam, L, so::bfloat16>(5);
  same_bits_as_one_process<so::algo::SGD, L, so::float16>(4, 7 * sizeof(float));
  same_bits_as_one_process<so::algo::Adagrad, L, so::bfloat16>(3, 3 * sizeof(float));
  same_bits_as_one_process<so::algo::RMSprop, L, so::float16>(3);
  same_bits_as_one_process<so::algo::AdamW, L, so::bfloat16>(4, 0, so::ClipGradNorm{0.8, 2.0});
  same_bits_as_one_process<so::algo::Adam, L, so::float16>(4, 3 * sizeof(float), {}, NonFinite{2, 1, 0, 4, inf});
  same_bits_as_one_process<so::algo::Adam, L, so::float16>(5, 0, {}, {}, so::GradScaler({.init_scale = 1024.0, .growth_interval = 2}));
  same_bits_as_one_process<so::algo::LAMB, L, so::bfloat16>(3, 7 * sizeof(float));
}

BOOST_AUTO_TEST_SUITE_END()

#if SHARDOPT_TEST_DEVICE_LIKE
// The device path, run on the host in a distinct memory space (device_like.hpp).
namespace {
using test::DeviceMpi;
using test::OnDeviceLike;
using DeviceLikeCases = std::tuple<Case<so::algo::Adam, layout::FlatPartition>, Case<so::algo::SGD, layout::ChunkRows>,
                                   Case<so::algo::RMSprop, layout::DataParallel>, Case<so::algo::AdamW, layout::ChunkCols>,
                                   Case<so::algo::LAMB, layout::FlatPartition>, Case<so::algo::LARS, layout::ChunkCols>>;
}  // namespace

BOOST_AUTO_TEST_SUITE(distinct_memory_space)

namespace {
sigjmp_buf fault_jump;
void jump_back(int, siginfo_t*, void*) { siglongjmp(fault_jump, 1); }
}  // namespace

// The guard that the device-path tests rely on: kernels and deep_copy may touch DeviceLike memory,
// a host read outside them faults.
BOOST_AUTO_TEST_CASE(host_access_to_device_like_memory_faults) {
  struct sigaction mine {}, previous {};
  mine.sa_flags = SA_SIGINFO | SA_NODEFER;
  mine.sa_sigaction = jump_back;
  sigaction(SIGSEGV, &mine, &previous);  // the guard passes faults it does not handle on to this
  bool caught = false;
  {
    test::guard::Scope guarded;
    test::guard::detail::state().report = false;
    Kokkos::View<float*, test::DeviceLike> v("v", 100);
    Kokkos::parallel_for(Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, 100), KOKKOS_LAMBDA(int i) { v(i) = float(i); });
    BOOST_TEST(test::to_host<float>(v)[7] == 7.0f);
    volatile float x = 0;
    if (sigsetjmp(fault_jump, 1) == 0) x = v.data()[1];
    else caught = true;
    (void)x;
    test::guard::detail::state().report = true;
  }
  sigaction(SIGSEGV, &previous, nullptr);
  BOOST_TEST(caught, "a host read of DeviceLike memory outside a kernel faults");
}

// Host code touching the optimizer's memory outside a kernel or deep_copy faults here (guarded_memory.hpp).
BOOST_AUTO_TEST_CASE_TEMPLATE(device_path_gives_the_host_bits, C, DeviceLikeCases) {
  test::guard::Scope guarded;
  same_bits_as_one_process<typename C::Algo, typename C::Layout, float, OnDeviceLike, DeviceMpi>(6);
  same_bits_as_one_process<typename C::Algo, typename C::Layout, double, OnDeviceLike, DeviceMpi>(3);
  same_bits_as_one_process<typename C::Algo, typename C::Layout, float, OnDeviceLike, DeviceMpi>(3, 5 * sizeof(float));  // buckets
  for (const double norm : {2.0, std::numeric_limits<double>::infinity()})  // clipping
    same_bits_as_one_process<typename C::Algo, typename C::Layout, float, OnDeviceLike, DeviceMpi>(3, 5 * sizeof(float),
                                                                                                  so::ClipGradNorm{0.3, norm});
}

BOOST_AUTO_TEST_SUITE_END()
#endif

BOOST_AUTO_TEST_SUITE(memory_and_volume)

// Bytes sent by the last step, without the agreement messages.
template <class Opt>
std::uint64_t step_bytes(Opt& opt) {
  const auto before = opt.comm().stats().bytes_sent, control = opt.control_bytes();
  opt.step();
  return opt.comm().stats().bytes_sent - before - (opt.control_bytes() - control);
}

BOOST_AUTO_TEST_CASE(flat_partition_keeps_one_part_and_moves_two_collectives) {
  Mpi comm = world();
  const int p = comm.size(), r = comm.rank();
  so::ShardedOptimizer<so::algo::Adam, layout::FlatPartition, Mpi> opt(comm);
  Tensors<float> t;
  t.register_in(opt);
  Kokkos::View<double*> d("d", 10), gd("gd", 10);  // a second element type: its own flat buffer
  opt.add_param("d", d, gd);
  std::int64_t n = 0;
  for (const auto& s : shapes) n += numel(s);
  const std::int64_t part = (n + p - 1) / p, mine = std::max<std::int64_t>(0, std::min(part, n - r * part));
  const std::int64_t dpart = (10 + p - 1) / p, dmine = std::max<std::int64_t>(0, std::min(dpart, 10 - r * dpart));
  const auto bytes = step_bytes(opt);
  BOOST_TEST(opt.state_bytes() == std::size_t(2 * mine * sizeof(float) + 2 * dmine * sizeof(double)));
  BOOST_TEST(mine <= part);
  const std::uint64_t expected = p == 1 ? 0 : 2ull * (p - 1) * (part * sizeof(float) + dpart * sizeof(double));
  BOOST_TEST(bytes == expected);  // reduce-scatter + all-gather = 2 (P-1) / P of the padded buffer
  BOOST_TEST(step_bytes(opt) == expected);
  if (p == 1) BOOST_TEST(opt.comm().stats().bytes_sent == 0u);  // world size 1: no communication at all
}

BOOST_AUTO_TEST_CASE(chunk_keeps_the_owned_chunks) {
  Mpi comm = world();
  const int p = comm.size(), r = comm.rank();
  so::ShardedOptimizer<so::algo::SGD, layout::ChunkRows, Mpi> opt(comm, {.lr = 0.1, .momentum = 0.9});
  Tensors<float> t;
  t.register_in(opt);
  std::int64_t owned = 0, part = 0;
  for (const auto& s : shapes) {
    const std::int64_t rows = s[0], inner = numel(s) / rows, c = (rows + p - 1) / p;
    owned += std::max<std::int64_t>(0, std::min(rows, c * (r + 1)) - std::min(rows, c * r)) * inner;
    part += c * inner;
  }
  const auto bytes = step_bytes(opt);
  BOOST_TEST(opt.state_bytes() == std::size_t(owned * sizeof(float)));
  BOOST_TEST(bytes == (p == 1 ? 0ull : 2ull * (p - 1) * part * sizeof(float)));
}

BOOST_AUTO_TEST_CASE(data_parallel_keeps_everything_and_all_reduces) {
  Mpi comm = world();
  const int p = comm.size();
  so::ShardedOptimizer<so::algo::Adagrad, layout::DataParallel, Mpi> opt(comm);
  Tensors<double> t;
  t.register_in(opt);
  std::int64_t n = 0;
  for (const auto& s : shapes) n += numel(s);
  const auto bytes = step_bytes(opt);
  BOOST_TEST(opt.state_bytes() == std::size_t(n * sizeof(double)));
  BOOST_TEST(bytes == so::detail::all_reduce_bytes(n * sizeof(double), p));  // the gradients, no padding
}

// Every collective of a step moves at most one bucket (of at least one element per rank), and the
// bytes per step are those of the unbucketed step: the buckets cut the same buffer.
template <class Layout>
void collectives_move_at_most_a_bucket() {
  Widest comm{world()};
  const int p = comm.size();
  so::ShardedOptimizer<so::algo::Adam, Layout, Widest> opt(comm);
  Tensors<float> t;
  t.register_in(opt);
  const auto whole = step_bytes(opt);
  for (const std::size_t elements : {1, 5, 16}) {
    opt.set_bucket_bytes(elements * sizeof(float));
    *comm.widest = {};
    const auto bytes = step_bytes(opt);
    const std::size_t bound = std::max<std::size_t>(elements, p) * sizeof(float);
    BOOST_TEST_CONTEXT(Layout::name << " at P=" << p << ", buckets of " << elements << " elements") {
      if (p > 1) BOOST_TEST(std::max({(*comm.widest)[0], (*comm.widest)[1], (*comm.widest)[2]}) > 0u);
      for (const std::size_t w : *comm.widest) BOOST_TEST(w <= bound);
      if (Layout::strategy == so::Strategy::all_reduce) {
        // The buffer of 79 gradients in windows of `elements`, rounded down to a multiple of P.
        const std::size_t c = elements >= std::size_t(p) ? elements - elements % p : elements;
        std::uint64_t expected = 0;
        for (std::size_t lo = 0; lo < 79; lo += c) expected += so::detail::all_reduce_bytes(std::min<std::size_t>(c, 79 - lo) * sizeof(float), p);
        BOOST_TEST(bytes == expected);
      } else {
        BOOST_TEST(bytes == whole);
      }
    }
  }
}
BOOST_AUTO_TEST_CASE_TEMPLATE(collectives_move_at_most_a_bucket_of, L, BucketLayouts) { collectives_move_at_most_a_bucket<L>(); }

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layout_edges)

BOOST_AUTO_TEST_CASE(more_ranks_than_rows_and_single_elements) {
  Mpi comm = world();
  so::ShardedOptimizer<so::algo::Adam, layout::ChunkRows, Mpi> chunked(comm, {.lr = 0.5});
  so::ShardedOptimizer<so::algo::Adam, layout::FlatPartition, Mpi> flat(comm, {.lr = 0.5});
  so::ShardedOptimizer<so::algo::Adam, layout::Replicated, Serial> single(Serial{}, {.lr = 0.5});
  Kokkos::View<float**> a("a", 2, 3), ga("ga", 2, 3), b("b", 2, 3), gb("gb", 2, 3), c("c", 2, 3), gc("gc", 2, 3);
  Kokkos::View<float*> one_a("one", 1), gone_a("gone", 1), one_b("one", 1), gone_b("gone", 1);
  chunked.add_param("a", a, ga);
  chunked.add_param("one", one_a, gone_a);
  flat.add_param("one", one_b, gone_b);
  single.add_param("a", c, gc);
  for (auto v : {a, b, c}) Kokkos::deep_copy(v, 1.0f);
  for (auto v : {ga, gb, gc}) Kokkos::deep_copy(v, 0.5f);
  Kokkos::deep_copy(gone_a, 2.0f);
  Kokkos::deep_copy(gone_b, 2.0f);
  for (int k = 0; k < 3; ++k) {
    chunked.step();
    flat.step();
    single.step();
  }
  BOOST_TEST(test::to_host<float>(a) == test::to_host<float>(c), boost::test_tools::per_element());
  BOOST_TEST(test::to_host<float>(one_a) == test::to_host<float>(one_b));
  BOOST_TEST(chunked.gathered_state<float>("a", "exp_avg") == single.local_state<float>("a", "exp_avg"), boost::test_tools::per_element());
}

// Steps k0 to k1 - 1 of `a` and `b`, with one rank's gradients in both `ta` and `tb`.
template <class A, class B>
void step_both(A& a, Tensors<float>& ta, B& b, Tensors<float>& tb, int k0, int k1) {
  for (int k = k0; k < k1; ++k) {
    for (std::size_t t = 0; t < shapes.size(); ++t) {
      test::from_host(ta.grad[t], combined_gradient<float>(t, 1, k, so::Reduction::sum));
      test::from_host(tb.grad[t], combined_gradient<float>(t, 1, k, so::Reduction::sum));
    }
    a.step();
    b.step();
  }
}

BOOST_AUTO_TEST_CASE(parameters_added_after_steps_carry_state_over) {
  Mpi comm = world();
  so::ShardedOptimizer<so::algo::AdamW, layout::FlatPartition, Mpi> flat(comm, {.lr = 0.05});
  so::ShardedOptimizer<so::algo::AdamW, layout::Replicated, Serial> single(Serial{}, {.lr = 0.05});
  Tensors<float> mine, ref;
  mine.register_in(flat, 0, 2);
  ref.register_in(single, 0, 2);
  auto run = [&](int k0, int k1) { step_both(flat, mine, single, ref, k0, k1); };
  run(1, 4);
  mine.register_in(flat, 2, shapes.size());  // the partition moves: state must follow it
  ref.register_in(single, 2, shapes.size());
  run(4, 8);
  for (std::size_t t = 0; t < shapes.size(); ++t) {
    BOOST_TEST(test::to_host<float>(mine.value[t]) == test::to_host<float>(ref.value[t]), boost::test_tools::per_element());
    BOOST_TEST(flat.gathered_state<float>("t" + std::to_string(t), "exp_avg_sq") ==
                   single.local_state<float>("t" + std::to_string(t), "exp_avg_sq"),
               boost::test_tools::per_element());
  }
  BOOST_TEST(flat.step_count("t0") == 7);
  BOOST_TEST(flat.step_count("t4") == 4);
}

// Adding parameters after steps moves the partition: the state goes to its new owners a window at
// a time (no rank gathers a whole tensor), with the bits of one process, buckets cutting tensors.
BOOST_AUTO_TEST_CASE(state_moves_a_window_at_a_time_when_the_partition_moves) {
  Widest comm{world()};
  const int p = comm.size();
  so::ShardedOptimizer<so::algo::Adam, layout::FlatPartition, Widest> flat(comm, {.lr = 0.05});
  so::ShardedOptimizer<so::algo::Adam, layout::Replicated, Serial> single(Serial{}, {.lr = 0.05});
  flat.set_bucket_bytes(8 * sizeof(float));
  Tensors<float> mine, ref;
  mine.register_in(flat, 0, 3);
  ref.register_in(single, 0, 3);
  auto run = [&](int k0, int k1) { step_both(flat, mine, single, ref, k0, k1); };
  run(1, 3);
  *comm.widest = {};
  mine.register_in(flat, 3, shapes.size());
  ref.register_in(single, 3, shapes.size());
  run(3, 5);
  for (const std::size_t w : *comm.widest) BOOST_TEST(w <= std::max<std::size_t>(8, p) * sizeof(float));
  for (std::size_t t = 0; t < shapes.size(); ++t)
    for (const char* slot : {"exp_avg", "exp_avg_sq"}) {
      BOOST_TEST_CONTEXT("t" << t << " " << slot << " at P=" << p) {
        BOOST_TEST(test::to_host<float>(mine.value[t]) == test::to_host<float>(ref.value[t]), boost::test_tools::per_element());
        BOOST_TEST(flat.gathered_state<float>("t" + std::to_string(t), slot) == single.local_state<float>("t" + std::to_string(t), slot),
                   boost::test_tools::per_element());
      }
    }
}

// Each rank passes only its own parts (FlatPartition's state_dict()) to an optimizer that keeps
// other elements (ChunkRows): the state reaches its new owners a window at a time, exactly.
BOOST_AUTO_TEST_CASE(load_state_dict_moves_parts_a_window_at_a_time) {
  Widest comm{world()};
  const int p = comm.size();
  so::ShardedOptimizer<so::algo::Adam, layout::FlatPartition, Widest> flat(comm, {.lr = 0.05});
  so::ShardedOptimizer<so::algo::Adam, layout::ChunkRows, Widest> chunked(comm, {.lr = 0.05});
  chunked.set_bucket_bytes(8 * sizeof(double));
  Tensors<float> a, b;
  a.register_in(flat);
  b.register_in(chunked);
  for (int k = 1; k < 3; ++k) {
    for (std::size_t t = 0; t < shapes.size(); ++t) test::from_host(a.grad[t], combined_gradient<float>(t, 1, k, so::Reduction::sum));
    flat.step();
  }
  const auto parts = flat.state_dict();
  *comm.widest = {};
  chunked.load_state_dict(parts);
  for (const std::size_t w : *comm.widest) BOOST_TEST(w <= std::max<std::size_t>(8, p) * sizeof(double));
  for (std::size_t t = 0; t < shapes.size(); ++t)
    for (const char* slot : {"exp_avg", "exp_avg_sq"})
      BOOST_TEST(chunked.gathered_state<float>("t" + std::to_string(t), slot) == flat.gathered_state<float>("t" + std::to_string(t), slot),
                 boost::test_tools::per_element());
  BOOST_TEST(chunked.step_count("t0") == 2);
  // Elements in no rank's parts: the same count on every rank.
  auto holes = parts;
  std::int64_t total = 0;  // every part of t0 drops its last element
  for (auto& part : holes.state.at("t0").slots.at("exp_avg"))
    if (!part.values.empty()) part.values.pop_back(), ++total;
  MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  try {
    chunked.load_state_dict(holes);
    BOOST_TEST(false, "load_state_dict() accepted a state with holes");
  } catch (const so::InvalidArgument& e) {
    BOOST_TEST(std::string(e.what()).find("slot exp_avg of 't0': " + std::to_string(total) + " of 35 elements in no rank's parts") !=
                   std::string::npos,
               e.what());
  }
}

BOOST_AUTO_TEST_CASE(absent_gradient_skips_a_parameter_of_the_flat_buffer) {
  Mpi comm = world();
  so::ShardedOptimizer<so::algo::SGD, layout::FlatPartition, Mpi> opt(comm, {.lr = 0.5, .momentum = 0.5});
  Kokkos::View<double*> a("a", 5), ga("ga", 5), b("b", 6), gb("gb", 6);
  opt.add_param("a", a, ga);
  opt.add_param("b", b, gb);
  Kokkos::deep_copy(ga, 1.0);
  Kokkos::deep_copy(gb, 1.0);
  opt.step();
  const auto b_state = opt.gathered_state<double>("b", "momentum_buffer");
  opt.zero_grad();
  Kokkos::deep_copy(ga, 1.0);
  opt.mark_grad_present("a");
  opt.step();
  BOOST_TEST(test::to_host<double>(b) == std::vector<double>(6, -0.5), boost::test_tools::per_element());
  BOOST_TEST(test::to_host<double>(a) == std::vector<double>(5, -0.5 - 0.75), boost::test_tools::per_element());
  BOOST_TEST(opt.gathered_state<double>("b", "momentum_buffer") == b_state, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
