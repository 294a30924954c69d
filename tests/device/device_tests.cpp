// SPDX-License-Identifier: BSD-3-Clause
// The layouts' central check on a GPU: built instead of the host suite where Kokkos' default
// execution space is CUDA (scripts/kokkos-cuda.sh builds one; scripts/gpu-check.sh runs this).
//
// - On Kokkos::Device<Cuda, CudaUVMSpace> with comm::Mpi reading and writing unified memory from
//   the host (UvmMpi below), at world sizes 1-4 on one GPU: every layout gives the bits of one
//   process stepping the rank-ordered combined gradients on the host (same_bits.hpp), with buckets
//   and with clipping.
// - On Kokkos::Cuda (device memory, CudaSpace) with comm::Nccl, where there are as many GPUs as
//   ranks (NCCL takes one GPU per rank): the same check.
// Compiled with --fmad=false: nvcc would otherwise contract a * b + c into one fused multiply-add,
// which rounds once instead of twice, and the bits would not be the host's (docs/numerics.md).
#include <boost/test/unit_test.hpp>

#include <shardopt/comm/nccl.hpp>

#include "same_bits.hpp"

#include <limits>
#include <tuple>

#if !defined(KOKKOS_ENABLE_CUDA)
#error "device_tests.cpp needs a Kokkos configured with CUDA"
#endif

namespace device_tests {
// comm::Mpi on unified memory: MPI reads and writes CudaUVMSpace buffers from the host. The
// optimizer fences its instance before each collective of a communicator that is not stream-ordered,
// so the GPU is done with a buffer when MPI touches it. Several ranks can share one GPU this way.
// (Not in an unnamed namespace: nvcc would warn that host_memory_only, read by a concept, is unused.)
struct UvmMpi : shardopt::comm::Mpi {
  using shardopt::comm::Mpi::Mpi;
  static constexpr bool host_memory_only = false;
};
}  // namespace device_tests

namespace {

using namespace test::same_bits;
using device_tests::UvmMpi;
using Uvm = Kokkos::Device<Kokkos::Cuda, Kokkos::CudaUVMSpace>;

using AllCases = std::tuple<Case<so::algo::Adam, layout::FlatPartition>, Case<so::algo::SGD, layout::ChunkRows>,
                            Case<so::algo::RMSprop, layout::DataParallel>, Case<so::algo::AdamW, layout::ChunkCols>,
                            Case<so::algo::Adagrad, layout::FlatPartition>, Case<so::algo::LAMB, layout::FlatPartition>,
                            Case<so::algo::LARS, layout::ChunkCols>>;
// nvcc takes minutes per case: tests/CMakeLists.txt compiles this file once per case
// (SHARDOPT_DEVICE_CASE), so that the cases compile in parallel.
#if defined(SHARDOPT_DEVICE_CASE)
static_assert(std::tuple_size_v<AllCases> == SHARDOPT_DEVICE_CASE_COUNT,
              "tests/CMakeLists.txt compiles device_tests.cpp once per case: make its count the number of cases");
using Cases = std::tuple<std::tuple_element_t<SHARDOPT_DEVICE_CASE, AllCases>>;
#define SHARDOPT_CAT_(a, b) a##b
#define SHARDOPT_CAT(a, b) SHARDOPT_CAT_(a, b)
#define SHARDOPT_GPU_SUITE SHARDOPT_CAT(gpu_case, SHARDOPT_DEVICE_CASE)
#else
#define SHARDOPT_DEVICE_CASE 0
using Cases = AllCases;
#define SHARDOPT_GPU_SUITE gpu
#endif

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

}  // namespace

template <>
struct test::same_bits::MakeComm<so::comm::Nccl> {
  static so::comm::Nccl make() { return so::comm::Nccl::from_mpi(MPI_COMM_WORLD, Kokkos::Cuda().cuda_stream()); }
};

BOOST_AUTO_TEST_SUITE(SHARDOPT_GPU_SUITE)

#if SHARDOPT_DEVICE_CASE == 0
BOOST_AUTO_TEST_CASE(runs_on_a_gpu) {
  BOOST_TEST_MESSAGE("Kokkos " << KOKKOS_VERSION << ", default execution space " << Kokkos::DefaultExecutionSpace::name() << ", "
                               << Kokkos::Cuda().concurrency() << " threads in flight");
  BOOST_TEST(std::string(Kokkos::DefaultExecutionSpace::name()) == "Cuda");
}
#endif

BOOST_AUTO_TEST_CASE_TEMPLATE(unified_memory_gives_the_host_bits, C, Cases) {
  same_bits_as_one_process<typename C::Algo, typename C::Layout, float, Uvm, UvmMpi>(6);
  same_bits_as_one_process<typename C::Algo, typename C::Layout, double, Uvm, UvmMpi>(3);
  same_bits_as_one_process<typename C::Algo, typename C::Layout, float, Uvm, UvmMpi>(3, 5 * sizeof(float));  // buckets
  for (const double norm : {2.0, std::numeric_limits<double>::infinity()})                                  // clipping
    same_bits_as_one_process<typename C::Algo, typename C::Layout, float, Uvm, UvmMpi>(3, 5 * sizeof(float), so::ClipGradNorm{0.3, norm});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(device_memory_with_nccl_gives_the_host_bits, C, Cases) {
  int devices = 0;
  cudaGetDeviceCount(&devices);
  if (world_size() > devices) {
    BOOST_TEST_MESSAGE("skipped: " << world_size() << " ranks on " << devices << " GPU(s); NCCL needs one GPU per rank");
    return;
  }
  same_bits_as_one_process<typename C::Algo, typename C::Layout, float, Kokkos::Cuda, so::comm::Nccl>(6);
  same_bits_as_one_process<typename C::Algo, typename C::Layout, double, Kokkos::Cuda, so::comm::Nccl>(3, 7 * sizeof(double));
}

BOOST_AUTO_TEST_SUITE_END()
