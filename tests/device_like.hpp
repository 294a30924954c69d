#pragma once
// A memory space for testing the device path without a device.
//
// Nothing in the optimizer may assume host memory. test::DeviceLike is host memory underneath, but
// a distinct Kokkos memory space for which the optimizer takes its device path (emulate_device):
// tables uploaded to the memory space, team kernels, state staged with deep_copy, and a
// communicator that is not host-memory-only. A View made in HostSpace where memory_space belongs
// would not compile, and a mistake on the device path gives other bits than the host path.
// (A host dereference of device memory cannot be caught this way: that takes a GPU.)

#include <shardopt/shardopt.hpp>

#include <type_traits>

#if __has_include(<Kokkos_LogicalSpaces.hpp>)
#define SHARDOPT_TEST_DEVICE_LIKE 1

namespace test {
struct DeviceLikeName {
  static constexpr const char* get_name() { return "shardopt_test_DeviceLike"; }
};
using DeviceLike = Kokkos::Experimental::LogicalMemorySpace<Kokkos::HostSpace, Kokkos::DefaultHostExecutionSpace, DeviceLikeName,
                                                            Kokkos::Experimental::LogicalSpaceSharesAccess::shared_access>;
using OnDeviceLike = Kokkos::Device<Kokkos::DefaultHostExecutionSpace, DeviceLike>;
static_assert(!std::is_same_v<DeviceLike, Kokkos::HostSpace>);

// comm::Mpi standing in for a device communicator such as comm::Nccl (the memory is host memory underneath).
struct DeviceMpi : shardopt::comm::Mpi {
  using shardopt::comm::Mpi::Mpi;
  static constexpr bool host_memory_only = false;
};
}  // namespace test

template <>
inline constexpr bool shardopt::detail::emulate_device<test::DeviceLike> = true;
static_assert(!shardopt::detail::host_path<Kokkos::DefaultHostExecutionSpace, test::DeviceLike>);

// Kokkos 3.4 finds two equally good answers for anonymous views of a logical space: say it once.
template <>
struct Kokkos::Impl::MemorySpaceAccess<Kokkos::AnonymousSpace, test::DeviceLike> {
  enum : bool { assignable = true, accessible = true, deepcopy = true };
};
template <>
struct Kokkos::Impl::MemorySpaceAccess<test::DeviceLike, Kokkos::AnonymousSpace> {
  enum : bool { assignable = true, accessible = true, deepcopy = true };
};
#endif
