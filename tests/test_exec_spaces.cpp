// SPDX-License-Identifier: BSD-3-Clause
// The fused step on a parallel host backend (Kokkos::OpenMP where Kokkos has it): tensors of several
// blocks each, so that the blocks are spread over the threads; the parameters and every state slot
// must be bitwise those of Kokkos::Serial, and of the same run repeated.
#include <boost/test/unit_test.hpp>

#include "support.hpp"

#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#if defined(KOKKOS_ENABLE_OPENMP)
#include <omp.h>
#endif

namespace so = shardopt;

namespace {

#if defined(KOKKOS_ENABLE_OPENMP)
using Parallel = Kokkos::OpenMP;
inline int thread_id() { return omp_get_thread_num(); }
#else
using Parallel = Kokkos::DefaultHostExecutionSpace;
inline int thread_id() { return 0; }
#endif

std::atomic<unsigned> threads_seen{0};

// An algorithm of the library that also notes which threads start a block.
template <class Base>
struct Traced : Base {
  template <class T, class S, class St>
  KOKKOS_INLINE_FUNCTION static void update(const S& s, T& p, T g, St st) {
    if (st.index % so::detail::block_elements == 0) threads_seen.fetch_or(1u << (thread_id() & 31), std::memory_order_relaxed);
    Base::template update<T>(s, p, g, st);
  }
};

// Sizes of 1 to 7 blocks, one block exactly, and tensors smaller than a block.
const std::vector<std::size_t> sizes = {3 * so::detail::block_elements + 1234, 70001, so::detail::block_elements, 5, 1,
                                        200000};

template <class T>
std::vector<unsigned char> bytes_of(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Parameters, then each slot of each tensor, as bytes (whole tensors: gathered over the ranks).
template <class Algo, class Layout, class Device, class T, class C>
std::vector<std::vector<unsigned char>> run(C comm, int steps, std::size_t bucket_bytes) {
  using M = typename Device::memory_space;
  const int r = comm.rank();
  so::ShardedOptimizer<Algo, Layout, C, Device> opt(comm, test::rich_options<Algo>());
  if (bucket_bytes) opt.set_bucket_bytes(bucket_bytes);
  std::vector<Kokkos::View<T*, M>> value, grad;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    value.emplace_back("value", sizes[t]);
    grad.emplace_back("grad", sizes[t]);
    std::vector<T> init(sizes[t]);
    for (std::size_t i = 0; i < init.size(); ++i) init[i] = T(test::initial_value(t, i));
    test::from_host(value[t], init);
    opt.add_param("t" + std::to_string(t), value[t], grad[t]);
  }
  for (int k = 1; k <= steps; ++k) {
    for (std::size_t t = 0; t < sizes.size(); ++t) {
      std::vector<T> g(sizes[t]);
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = T(test::gradient_value(t + 7 * r, i, k));
      test::from_host(grad[t], g);
    }
    opt.step();
  }
  std::vector<std::vector<unsigned char>> out;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    out.push_back(bytes_of(test::to_host<T>(value[t])));
    for (const auto slot : Algo::slot_names) out.push_back(bytes_of(opt.template gathered_state<T>("t" + std::to_string(t), slot)));
  }
  return out;
}

template <class Algo, class Layout, class T, class C>
void same_bits_as_serial(C comm, std::size_t bucket_bytes = 0) {
  constexpr int steps = 6;
  const auto serial = run<Algo, Layout, Kokkos::Serial, T>(comm, steps, bucket_bytes);
  threads_seen = 0;
  const auto parallel = run<Traced<Algo>, Layout, Parallel, T>(comm, steps, bucket_bytes);
  const unsigned seen = threads_seen.load();
  const auto again = run<Algo, Layout, Parallel, T>(comm, steps, bucket_bytes);
  BOOST_TEST_CONTEXT(Algo::name << " under " << Layout::name << " at P=" << comm.size() << ", " << sizeof(T) * 8
                                << "-bit, buckets of " << bucket_bytes << " bytes on " << Parallel().name() << " with "
                                << Parallel().concurrency() << " threads") {
    BOOST_TEST(serial.size() == parallel.size());
    for (std::size_t i = 0; i < serial.size(); ++i) {
      BOOST_TEST_CONTEXT("array " << i) {
        BOOST_TEST((parallel[i] == serial[i]));
        BOOST_TEST((again[i] == parallel[i]));
      }
    }
    // The blocks were really spread over the threads (one launch of several blocks at least, when the
    // buckets are not smaller than a block).
    if (bucket_bytes == 0 && Parallel().concurrency() > 1) BOOST_TEST(std::popcount(seen) >= 2);
  }
}

template <class A, class T>
struct Case {
  using Algo = A;
  using Type = T;
};
using Cases = std::tuple<Case<so::algo::SGD, float>, Case<so::algo::Adagrad, float>, Case<so::algo::Adam, float>,
                         Case<so::algo::AdamW, double>, Case<so::algo::RMSprop, float>, Case<so::algo::Adam, double>>;

}  // namespace

BOOST_AUTO_TEST_SUITE(exec_spaces)

BOOST_AUTO_TEST_CASE(parallel_backend_has_threads) {
  BOOST_TEST_MESSAGE("Kokkos " << KOKKOS_VERSION << ", " << Parallel().name() << " with " << Parallel().concurrency()
                               << " threads; default execution space " << Kokkos::DefaultExecutionSpace().name());
#if defined(KOKKOS_ENABLE_OPENMP)
  if (const char* n = std::getenv("OMP_NUM_THREADS"); n && std::atoi(n) > 1) BOOST_TEST(Parallel().concurrency() > 1);
#endif
}

BOOST_AUTO_TEST_CASE_TEMPLATE(replicated_on_one_process, C, Cases) {
  same_bits_as_serial<typename C::Algo, so::layout::Replicated, typename C::Type>(so::comm::Serial{});
}

#if SHARDOPT_HAS_MPI
BOOST_AUTO_TEST_CASE_TEMPLATE(flat_partition_over_mpi, C, Cases) {
  same_bits_as_serial<typename C::Algo, so::layout::FlatPartition, typename C::Type>(so::comm::Mpi(MPI_COMM_WORLD));
  same_bits_as_serial<typename C::Algo, so::layout::FlatPartition, typename C::Type>(so::comm::Mpi(MPI_COMM_WORLD), 1 << 16);
}
BOOST_AUTO_TEST_CASE(data_parallel_over_mpi) {
  same_bits_as_serial<so::algo::Adam, so::layout::DataParallel, float>(so::comm::Mpi(MPI_COMM_WORLD));
}
#endif

BOOST_AUTO_TEST_SUITE_END()
