// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// A memory space for testing the device path without a device.
//
// Nothing in the optimizer may assume host memory. test::DeviceLike is host memory underneath, but
// a distinct Kokkos memory space for which the optimizer takes its device path (emulate_device):
// tables uploaded to the memory space, team kernels, state staged with deep_copy, and a
// communicator that is not host-memory-only. A View made in HostSpace where memory_space belongs
// would not compile, and a mistake on the device path gives other bits than the host path.
// Its memory is guarded (guarded_memory.hpp): while a test holds a test::guard::Scope, host code
// touching it outside a Kokkos kernel or deep_copy faults, as device memory does on a GPU.

#include <shardopt/shardopt.hpp>

#include <span>
#include <type_traits>

#if __has_include(<Kokkos_LogicalSpaces.hpp>)
#define SHARDOPT_TEST_DEVICE_LIKE 1
#include "guarded_memory.hpp"

namespace test {
struct DeviceLikeName {
  static constexpr const char* get_name() { return "shardopt_test_DeviceLike"; }
};
using DeviceLike = Kokkos::Experimental::LogicalMemorySpace<Kokkos::HostSpace, Kokkos::DefaultHostExecutionSpace, DeviceLikeName,
                                                            Kokkos::Experimental::LogicalSpaceSharesAccess::shared_access>;
using OnDeviceLike = Kokkos::Device<Kokkos::DefaultHostExecutionSpace, DeviceLike>;
static_assert(!std::is_same_v<DeviceLike, Kokkos::HostSpace>);
}  // namespace test

SHARDOPT_TEST_GUARDED_SPACE(test::DeviceLike)

namespace test {
// comm::Mpi standing in for a device communicator such as comm::Nccl, which reads and writes
// device buffers on the device: its collectives may touch guarded memory.
struct DeviceMpi : shardopt::comm::Mpi {
  using Base = shardopt::comm::Mpi;
  using Base::Base;
  static constexpr bool host_memory_only = false;
  template <class T>
  void all_reduce(std::span<T> buffer, shardopt::ReduceOp op) {
    guard::DeviceAccess device;
    Base::all_reduce(buffer, op);
  }
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, shardopt::ReduceOp op) {
    guard::DeviceAccess device;
    Base::reduce_scatter(send, recv, op);
  }
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    guard::DeviceAccess device;
    Base::all_gather(send, recv);
  }
  template <class T>
  void broadcast(std::span<T> buffer, int root) {
    guard::DeviceAccess device;
    Base::broadcast(buffer, root);
  }
  // The started collectives, whose start and completion both touch the buffers.
  struct Request {
    Base::Request inner;
    void wait() {
      guard::DeviceAccess device;
      inner.wait();
    }
  };
  template <class T>
  Request start_all_reduce(std::span<T> buffer, shardopt::ReduceOp op) {
    guard::DeviceAccess device;
    return {Base::start_all_reduce(buffer, op)};
  }
  template <class T>
  Request start_reduce_scatter(std::span<const T> send, std::span<T> recv, shardopt::ReduceOp op) {
    guard::DeviceAccess device;
    return {Base::start_reduce_scatter(send, recv, op)};
  }
  template <class T>
  Request start_all_gather(std::span<const T> send, std::span<T> recv) {
    guard::DeviceAccess device;
    return {Base::start_all_gather(send, recv)};
  }
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
