// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// Memory that faults when host code touches it outside a Kokkos kernel or deep_copy, as device
// memory does on a GPU: used for test::DeviceLike (device_like.hpp), so that a host dereference of
// the optimizer's device memory is caught without a GPU.
//
// How (Kokkos 3.4, Serial):
// - The space stays a LogicalMemorySpace<HostSpace, ...>, so Kokkos' access and copy rules for
//   logical spaces apply unchanged. SHARDOPT_TEST_GUARDED_SPACE(S) replaces only its two private
//   members impl_allocate / impl_deallocate (explicit specializations of members of a class
//   template), and makes host mirrors real HostSpace copies, as for a GPU.
// - Allocations are mmap'd. Kokkos' 128-byte allocation header (record pointer and label, which
//   Kokkos reads and writes from host code) ends exactly where the data's first page begins; only
//   the data pages are ever protected.
// - Kokkos Tools callbacks (begin/end of parallel_for, parallel_reduce, parallel_scan and
//   deep_copy) keep a nesting depth. The data pages stay PROT_NONE; a fault inside a kernel opens
//   that allocation until the outermost kernel or copy ends (cost ~ the allocations touched). Outside
//   kernels a fault names the allocation on stderr and is passed to the previous SIGSEGV handler.
// - DeviceAccess opens the memory for host code that stands in for a device agent (test::DeviceMpi
//   playing NCCL on device buffers).
// Limits: Serial only (one host thread); an exception between a begin and an end callback leaves the
// guard open (it fails open, never with a false fault); reads past a view's end inside a kernel are
// caught only across a page boundary.
#include <Kokkos_Core.hpp>
#include <Kokkos_LogicalSpaces.hpp>

#include <execinfo.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>

namespace test::guard {

namespace detail {
struct Region {
  char* map_base;    // start of the mmap
  size_t map_len;    // length of the mmap
  char* data;        // first protected byte (page aligned)
  size_t data_len;   // protected length (page multiple, may be 0)
  std::string label;
  bool open = false;  // unprotected by the fault handler during the current kernel
};
struct State {
  std::mutex mtx;
  std::map<char*, Region> regions;  // keyed by the pointer returned to Kokkos
  int depth = 0;                    // nesting of kernels / deep_copies
  bool enabled = false;             // protection active (after install, before uninstall)
  bool report = true;               // print the allocation's label on a guarded fault
  struct sigaction prev_sa {};      // SIGSEGV disposition before install()
  Kokkos::Tools::Experimental::EventSet prev{};
};
inline State& state() {
  static State s;
  return s;
}
inline size_t page() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}
inline void protect(const Region& r, int prot) {
  if (r.data_len && mprotect(r.data, r.data_len, prot) != 0) {
    std::perror("guard: mprotect");
    std::abort();
  }
}
inline void set_all(int prot) {
  for (auto& [k, r] : state().regions) protect(r, prot);
}
inline void close_opened() {
  for (auto& [k, r] : state().regions)
    if (r.open) {
      protect(r, PROT_NONE);
      r.open = false;
    }
}

inline void enter() {
  auto& s = state();
  std::lock_guard lk(s.mtx);
  ++s.depth;
}
inline void leave() {
  auto& s = state();
  std::lock_guard lk(s.mtx);
  if (--s.depth == 0 && s.enabled) close_opened();
}

// ---- Kokkos Tools callbacks (chain to whatever was installed before) ----
#define SHARDOPT_GUARD_BEGIN_CB(NAME)                                            \
  inline void NAME(const char* n, const uint32_t d, uint64_t* id) {     \
    enter();                                                            \
    if (state().prev.NAME) state().prev.NAME(n, d, id);                 \
  }
#define SHARDOPT_GUARD_END_CB(NAME)                            \
  inline void NAME(uint64_t id) {                     \
    if (state().prev.NAME) state().prev.NAME(id);     \
    leave();                                          \
  }
SHARDOPT_GUARD_BEGIN_CB(begin_parallel_for)
SHARDOPT_GUARD_BEGIN_CB(begin_parallel_reduce)
SHARDOPT_GUARD_BEGIN_CB(begin_parallel_scan)
SHARDOPT_GUARD_END_CB(end_parallel_for)
SHARDOPT_GUARD_END_CB(end_parallel_reduce)
SHARDOPT_GUARD_END_CB(end_parallel_scan)
#undef SHARDOPT_GUARD_BEGIN_CB
#undef SHARDOPT_GUARD_END_CB
inline void begin_deep_copy(Kokkos_Profiling_SpaceHandle ds, const char* dl, const void* dp, Kokkos_Profiling_SpaceHandle ss,
                            const char* sl, const void* sp, uint64_t n) {
  enter();
  if (state().prev.begin_deep_copy) state().prev.begin_deep_copy(ds, dl, dp, ss, sl, sp, n);
}
inline void end_deep_copy() {
  if (state().prev.end_deep_copy) state().prev.end_deep_copy();
  leave();
}

// Host-side diagnosis: which guarded allocation does an address fall into?
inline Region* find(const void* addr) {
  auto& s = state();
  auto* a = static_cast<const char*>(addr);
  auto it = s.regions.upper_bound(const_cast<char*>(a));  // keys ascend with data; region is the one before
  if (it == s.regions.begin()) return nullptr;
  Region& r = std::prev(it)->second;
  return (a >= r.data && a < r.data + r.data_len) ? &r : nullptr;
}

// SIGSEGV handler. Inside a kernel: open the touched region and retry the access.
// Otherwise: name the allocation (if it is guarded) and hand the fault to the previous disposition.
// (Not strictly async-signal-safe: walks the map without the lock. Fine for Serial test programs.)
inline void on_segv(int sig, siginfo_t* si, void* ctx) {
  auto& s = state();
  Region* r = find(si->si_addr);
  if (r && s.enabled && s.depth > 0) {
    protect(*r, PROT_READ | PROT_WRITE);
    r->open = true;
    return;
  }
  if (r && s.report) {
    char buf[320];
    int n = std::snprintf(buf, sizeof buf, "guard: host access to device memory '%s' at %p (offset %zu) outside a kernel/deep_copy\n",
                          r->label.c_str(), si->si_addr, static_cast<size_t>(static_cast<char*>(si->si_addr) - r->data));
    if (n > 0) (void)!write(2, buf, static_cast<size_t>(n));
    void* frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), 2);  // addr2line -C -f -e <binary> <+offset>
  }
  const struct sigaction& p = s.prev_sa;
  if (p.sa_flags & SA_SIGINFO) {
    p.sa_sigaction(sig, si, ctx);
  } else if (p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN) {
    p.sa_handler(sig);
  } else {
    signal(sig, SIG_DFL);  // returning re-executes the access, which now kills the process (core dump)
  }
}
}  // namespace detail

// Call after Kokkos::initialize (and after installing any SIGSEGV handler of your own: it is chained).
// Debuggers see the benign SIGSEGVs that open memory inside kernels (gdb: handle SIGSEGV nostop noprint).
inline void install() {
  namespace T = Kokkos::Tools::Experimental;
  auto& s = detail::state();
  s.prev = T::get_callbacks();
  T::set_begin_parallel_for_callback(detail::begin_parallel_for);
  T::set_end_parallel_for_callback(detail::end_parallel_for);
  T::set_begin_parallel_reduce_callback(detail::begin_parallel_reduce);
  T::set_end_parallel_reduce_callback(detail::end_parallel_reduce);
  T::set_begin_parallel_scan_callback(detail::begin_parallel_scan);
  T::set_end_parallel_scan_callback(detail::end_parallel_scan);
  T::set_begin_deep_copy_callback(detail::begin_deep_copy);
  T::set_end_deep_copy_callback(detail::end_deep_copy);
  struct sigaction sa {};
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sa.sa_sigaction = detail::on_segv;
  sigaction(SIGSEGV, &sa, &s.prev_sa);
  std::lock_guard lk(s.mtx);
  s.enabled = true;
  if (s.depth == 0) detail::set_all(PROT_NONE);
}
// Call before Kokkos::finalize (or whenever host code legitimately must look, e.g. a debugger dump).
inline void uninstall() {
  auto& s = detail::state();
  std::lock_guard lk(s.mtx);
  s.enabled = false;
  detail::set_all(PROT_READ | PROT_WRITE);
  for (auto& [k, r] : s.regions) r.open = false;
  Kokkos::Tools::Experimental::set_callbacks(s.prev);
  sigaction(SIGSEGV, &s.prev_sa, nullptr);
}

// RAII: the guard is on while this is alive; a test that uses guarded memory holds one.
struct Scope {
  Scope() { install(); }
  ~Scope() { uninstall(); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};

// RAII: code standing in for a device-side agent (e.g. an MPI call that plays NCCL on device
// buffers) may touch guarded memory while this is alive.
struct DeviceAccess {
  DeviceAccess() { detail::enter(); }
  ~DeviceAccess() { detail::leave(); }
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

}  // namespace test::guard

// ---- the allocator: explicit specializations of the logical space's private members ----
// Kokkos calls allocate(label, size + 128, size) for tracked (View) allocations — the first
// alloc_size - logical_size bytes are the SharedAllocationHeader — and allocate(label, size) / (size, 0)
// for untracked ones (kokkos_malloc, space.allocate()).
namespace test::guard::detail {
inline void* allocate(const char* label, const size_t alloc_size, const size_t logical_size, Kokkos::Tools::SpaceHandle handle) {
  const size_t pg = page();
  // A View of zero elements is allocated as (label, header size, 0), as an untracked allocation
  // would be: treat the first header's worth of bytes of any such allocation as a header (unguarded).
  constexpr size_t header = sizeof(Kokkos::Impl::SharedAllocationHeader);
  const size_t head = logical_size ? alloc_size - logical_size : std::min(alloc_size, header);
  const size_t head_pages = (head + pg - 1) / pg;        // unprotected pages holding the header
  const size_t data = alloc_size - head;
  const size_t data_len = (data + pg - 1) / pg * pg;
  size_t map_len = head_pages * pg + data_len;
  if (map_len == 0) map_len = pg;  // zero-byte untracked allocation
  void* m = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    throw Kokkos::Experimental::RawMemoryAllocationFailure(alloc_size, pg, Kokkos::Experimental::RawMemoryAllocationFailure::FailureMode::OutOfMemoryError,
                                                           Kokkos::Experimental::RawMemoryAllocationFailure::AllocationMechanism::PosixMMap);
  char* base = static_cast<char*>(m);
  char* ret = base + head_pages * pg - head;  // header ends exactly at the first data page
  Region r{base, map_len, base + head_pages * pg, data_len, label ? label : ""};
  {
    auto& s = state();
    std::lock_guard lk(s.mtx);
    // Kokkos writes the header right after this returns (unprotected page); View initialization runs
    // as a parallel_for with callbacks. So the data may be protected immediately when idle.
    r.open = s.enabled && s.depth > 0;
    protect(r, s.enabled && s.depth == 0 ? PROT_NONE : (PROT_READ | PROT_WRITE));
    s.regions.emplace(ret, std::move(r));
  }
  if (Kokkos::Profiling::profileLibraryLoaded())
    Kokkos::Profiling::allocateData(handle, label ? label : "", ret, logical_size ? logical_size : alloc_size);
  return ret;
}

inline void deallocate(const char* label, void* const ptr, const size_t alloc_size, const size_t logical_size,
                       const Kokkos::Tools::SpaceHandle handle) {
  if (Kokkos::Profiling::profileLibraryLoaded())
    Kokkos::Profiling::deallocateData(handle, label ? label : "", ptr, logical_size ? logical_size : alloc_size);
  auto& s = state();
  std::lock_guard lk(s.mtx);
  auto it = s.regions.find(static_cast<char*>(ptr));
  if (it == s.regions.end()) {
    std::fprintf(stderr, "guard: deallocate of unknown pointer %p\n", ptr);
    std::abort();
  }
  munmap(it->second.map_base, it->second.map_len);
  s.regions.erase(it);
}
}  // namespace test::guard::detail

// Turns a LogicalMemorySpace<HostSpace, ...> (test::DeviceLike) into a guarded one. Must appear
// before anything instantiates S::impl_allocate (i.e. right after the alias, in the same header).
#define SHARDOPT_TEST_GUARDED_SPACE(S)                                                                                        \
  template <>                                                                                                       \
  inline void* S::impl_allocate(const char* l, const size_t a, const size_t g, Kokkos::Tools::SpaceHandle h) const { \
    return ::test::guard::detail::allocate(l, a, g, h);                                                                     \
  }                                                                                                                 \
  template <>                                                                                                       \
  inline void S::impl_deallocate(const char* l, void* const p, const size_t a, const size_t g,                      \
                                 const Kokkos::Tools::SpaceHandle h) const {                                        \
    ::test::guard::detail::deallocate(l, p, a, g, h);                                                                       \
  }                                                                                                                 \
  /* host mirrors in HostSpace, as for a GPU (default for shared_access: the space itself => alias) */              \
  template <>                                                                                                       \
  struct Kokkos::Impl::HostMirror<S> {                                                                              \
    using Space = Kokkos::HostSpace;                                                                                \
  };                                                                                                                \
  template <>                                                                                                       \
  struct Kokkos::Impl::HostMirror<Kokkos::Device<S::execution_space, S>> {                                          \
    using Space = Kokkos::HostSpace;                                                                                \
  };
