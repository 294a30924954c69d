// SPDX-License-Identifier: BSD-3-Clause
// Compiled (not linked, not run) for a GPU against Kokkos headers configured for it:
// - ctest device.compile: nvcc for sm_90, Kokkos 4.x/5.x configured for CUDA
//   (scripts/kokkos_cuda_headers.sh), with comm::Nccl;
// - ctest device.compile_hip: Debian 12's hipcc for gfx90a (AMD MI200), Kokkos 4.6.01 configured
//   for HIP (scripts/kokkos_hip_headers.sh), with comm::Serial and comm::Mpi on managed memory
//   (there is no RCCL backend).
// See tests/CMakeLists.txt and cmake/shardoptDeviceCompile.cmake.
//
// Every kernel of the step is a KOKKOS_LAMBDA that the device compiler compiles for the GPU here,
// so a call to a host-only function from a kernel, a View made in HostSpace where the optimizer's
// memory space belongs, or an API that Kokkos 4/5 no longer has, fails this compile. No GPU is
// needed. What it cannot show is that the code runs correctly on a GPU (docs/gpu.md says what has
// run where).
#include <shardopt/shardopt.hpp>
#if defined(KOKKOS_ENABLE_CUDA)
#include <shardopt/comm/nccl.hpp>
#endif

// The user-written algorithms of the example and of docs/writing_policies.md: what users copy.
#include "docs/snippets/adadelta.hpp"
#include "examples/lion.hpp"

#include <type_traits>

#include <cmath>

namespace so = shardopt;

namespace device_compile {

#if defined(KOKKOS_ENABLE_CUDA)
using Gpu = Kokkos::Cuda;
using Managed = Kokkos::Device<Kokkos::Cuda, Kokkos::CudaUVMSpace>;  // unified memory
using GpuComm = so::comm::Nccl;                                     // reduces in device memory
using ManagedComm = so::comm::Nccl;
#elif defined(KOKKOS_ENABLE_HIP)
using Gpu = Kokkos::HIP;
using Managed = Kokkos::Device<Kokkos::HIP, Kokkos::HIPManagedSpace>;
using GpuComm = so::comm::Serial;  // no RCCL backend: a world of one in device memory
#if SHARDOPT_HAS_MPI
// comm::Mpi reading and writing managed memory from the host, as tests/device/device_tests.cpp
// does on CUDA: the optimizer fences before each collective of a comm that is not stream-ordered.
struct ManagedComm : so::comm::Mpi {
  using so::comm::Mpi::Mpi;
  static constexpr bool host_memory_only = false;
};
#else
using ManagedComm = so::comm::Serial;
#endif
#else
#error "device_compile.cpp needs a Kokkos configured with KOKKOS_ENABLE_CUDA or KOKKOS_ENABLE_HIP"
#endif

// The 16-bit types' conversions in a kernel.
void half_conversions(Kokkos::View<float*, Gpu::memory_space> x) {
  Kokkos::parallel_for(
      "half_conversions", Kokkos::RangePolicy<Gpu>(0, x.extent(0)), KOKKOS_LAMBDA(const std::size_t i) {
        x(i) = static_cast<float>(so::bfloat16(x(i))) + static_cast<float>(so::float16(x(i))) +
               static_cast<float>(so::float16::from_bits(so::bfloat16(x(i)).bits()));
      });
}

// Every member function a training loop uses, so that each of them is instantiated.
template <class Algo, class Layout, class Comm, class Dev>
void exercise(Comm comm) {
  using Opt = so::ShardedOptimizer<Algo, Layout, Comm, Dev>;
  using Mem = typename Opt::memory_space;
  Kokkos::View<float**, Mem> p("p", 4, 8), g("g", 4, 8);
  Kokkos::View<double*, Mem> q("q", 16), h("h", 16);
  Opt opt(comm, {});
  opt.add_param("p", p, g);
  opt.add_param("q", q, h);
  opt.add_param("sharded", so::ShardedTensor<float, Mem>::chunk(comm, {6, 3}, 1));  // a user-sharded tensor
  // 16-bit parameters: float32 master weights, widening and narrowing kernels.
  Kokkos::View<so::bfloat16*, Mem> r("r", 12), gr("gr", 12);
  opt.add_param("r", r, gr);
  opt.add_param("half_sharded", so::ShardedTensor<so::float16, Mem>::chunk(comm, {5, 2}, 0));
  // Kokkos' half types: 16-bit on CUDA and HIP, stepped as shardopt::float16 and bfloat16.
  Kokkos::View<Kokkos::Experimental::half_t*, Mem> kh("kh", 6), gkh("gkh", 6);
  opt.add_param("kokkos_half", kh, gkh);
#if defined(KOKKOS_HALF_T_IS_FLOAT) && !KOKKOS_HALF_T_IS_FLOAT
  static_assert(std::is_same_v<so::detail::element_t<Kokkos::Experimental::half_t>, so::float16>);
#endif
#if defined(KOKKOS_BHALF_T_IS_FLOAT)
  Kokkos::View<Kokkos::Experimental::bhalf_t*, Mem> kb("kb", 6), gkb("gkb", 6);
  opt.add_param("kokkos_bhalf", kb, gkb);
#if !KOKKOS_BHALF_T_IS_FLOAT
  static_assert(std::is_same_v<so::detail::element_t<Kokkos::Experimental::bhalf_t>, so::bfloat16>);
#endif
#endif
  opt.add_param_group([](auto&) {});
  opt.step();
  opt.clip_grad_norm(1.0);  // the reduction phase and the norms' kernel
  opt.step();
  opt.clip_grad_norm(1.0, INFINITY, true);
  opt.step();
  (void)opt.last_grad_norm();
  opt.no_clip_grad_norm();
  so::GradScaler scaler;
  opt.step(scaler);  // unscaled into float32 for the 16-bit parameters
  (void)opt.template local_state<float>("r", "master");
  opt.zero_grad();
  opt.zero_grad(false);
  opt.check_consistency();
  (void)opt.template local_state<float>("p", Algo::slot_names[0]);
  (void)opt.template gathered_state<double>("q", Algo::slot_names[0]);
  auto sd = opt.state_dict();
  opt.load_state_dict(sd);
  opt.load_state_dict(opt.full_state_dict());
  opt.save("x.safetensors");
  opt.load("x.safetensors");
}

}  // namespace device_compile

// Each algorithm on the partitioned layout, each layout with Adam, in the GPU's own memory.
template void device_compile::exercise<so::algo::SGD, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adam, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::AdamW, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adagrad, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::RMSprop, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::LAMB, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::LARS, so::layout::ChunkCols, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<Lion, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<Adadelta, so::layout::FlatPartition, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adam, so::layout::Replicated, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adam, so::layout::DataParallel, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adam, so::layout::ChunkRows, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
template void device_compile::exercise<so::algo::Adam, so::layout::ChunkCols, device_compile::GpuComm, device_compile::Gpu>(device_compile::GpuComm);
// Unified (managed) memory as the optimizer's memory space, and a world of one (comm::Serial) on the device.
template void device_compile::exercise<so::algo::Adam, so::layout::FlatPartition, device_compile::ManagedComm,
                                       device_compile::Managed>(device_compile::ManagedComm);
template void device_compile::exercise<so::algo::SGD, so::layout::DataParallel, so::comm::Serial, device_compile::Gpu>(so::comm::Serial);
// The host path under the same Kokkos version.
template void device_compile::exercise<so::algo::Adam, so::layout::FlatPartition, so::comm::Serial, Kokkos::Serial>(so::comm::Serial);

// comm::Mpi reduces in host memory: with the GPU's memory it must not compile (checked by the
// compile_fail tests with the host Kokkos); here the trait that drives it.
static_assert(so::detail::host_path<Kokkos::Serial, Kokkos::HostSpace>);
static_assert(!so::detail::host_path<device_compile::Gpu, device_compile::Gpu::memory_space>);
static_assert(!so::detail::host_path<device_compile::Gpu, device_compile::Managed::memory_space>);
