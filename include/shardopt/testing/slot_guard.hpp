// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief check_unused_slots_not_touched(): `Algo::update` called on the host with every state slot
/// that `slot_used()` says is not kept pointing into memory that faults, so that a policy reading
/// such a slot gets a message naming the slot instead of a crash. Part of `<shardopt/testing.hpp>`.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <csetjmp>
#include <csignal>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__linux__) && defined(__x86_64__)
#include <ucontext.h>
#endif
#endif

#include <shardopt/algorithm.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/options.hpp>
#include <shardopt/testing/findings.hpp>

namespace shardopt::testing {

namespace detail {

#if defined(__unix__) || defined(__APPLE__)
// Whether a trapped call faulted, the address it touched, and whether that was a write (1), a read
// (0), or the platform does not say (-1).
struct Fault {
  bool happened = false;
  const void* address = nullptr;
  int write = -1;
};

struct FaultTrap {
  sigjmp_buf env;
  const void* volatile address = nullptr;
  volatile int write = -1;
};
inline thread_local FaultTrap* active_fault_trap = nullptr;

inline void fault_trap_handler(int sig, siginfo_t* info, void* context) {
  FaultTrap* t = active_fault_trap;
  if (t == nullptr) {  // not ours: die as the default action would
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  t->address = info->si_addr;
#if defined(__linux__) && defined(__x86_64__)
  t->write = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) != 0 ? 1 : 0;  // page-fault error code bit 1
#else
  (void)context;
#endif
  siglongjmp(t->env, 1);
}

// Pages that fault on any access, one per slot: unmapped when it goes.
class FaultingPages {
 public:
  explicit FaultingPages(std::size_t pages) : page_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))), pages_(pages) {
    void* p = mmap(nullptr, page_ * pages_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  FaultingPages(const FaultingPages&) = delete;
  FaultingPages& operator=(const FaultingPages&) = delete;
  ~FaultingPages() {
    if (base_ != nullptr) munmap(base_, page_ * pages_);
  }
  bool ok() const { return base_ != nullptr; }
  void* page(std::size_t k) const { return base_ + k * page_; }
  // The page `a` lies in, or -1.
  long page_of(const void* a) const {
    const char* c = static_cast<const char*>(a);
    if (base_ == nullptr || c < base_ || c >= base_ + page_ * pages_) return -1;
    return static_cast<long>(static_cast<std::size_t>(c - base_) / page_);
  }

 private:
  std::size_t page_, pages_;
  char* base_ = nullptr;
};

// Calls f() with SIGSEGV and SIGBUS caught: a fault returns from here instead of killing the process.
// Only for code that touches nothing but its arguments (a policy's update() on one element).
template <class F>
Fault call_trapping_faults(F& f) {
  FaultTrap trap;
  struct sigaction sa {};
  struct sigaction old_segv {};
  struct sigaction old_bus {};
  sa.sa_sigaction = &fault_trap_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  FaultTrap* const previous = active_fault_trap;
  active_fault_trap = &trap;
  struct Restore {
    FaultTrap* previous;
    struct sigaction segv, bus;
    ~Restore() {
      active_fault_trap = previous;
      sigaction(SIGSEGV, &segv, nullptr);
      sigaction(SIGBUS, &bus, nullptr);
    }
  } restore{previous, old_segv, old_bus};
  Fault fault;
  if (sigsetjmp(trap.env, 1) == 0) {
    f();
  } else {
    fault.happened = true;
    fault.address = trap.address;
    fault.write = trap.write;
  }
  return fault;
}
#endif

}  // namespace detail

/// @brief `Algo::update`, called on the host for every options set, float and double, a few
/// parameters, gradients (zero among them) and steps, touches no state slot that `slot_used()`
/// says the options do not keep. The optimizer keeps no memory for such a slot (its pointer is
/// null), so a read of it crashes the test, or on a GPU the kernel; here each unused slot points into
/// a page that faults, and the fault is caught and reported with the slot's name. Local (not
/// collective); on platforms without POSIX signals it checks nothing.
template <class Algo>
Findings check_unused_slots_not_touched(std::span<const typename Algo::Options> options) {
  Findings out;
#if defined(__unix__) || defined(__APPLE__)
  constexpr std::size_t n = std::size(Algo::slot_names);
  if constexpr (n > 0) {
    detail::FaultingPages pages(n);
    if (!pages.ok()) return out;
    auto run = [&]<class T>() {
      const char* type = std::is_same_v<T, float> ? "float" : "double";
      for (const auto& o : options) {
        bool any_unused = false;
        for (std::size_t k = 0; k < n; ++k) any_unused = any_unused || !Algo::slot_used(o, k);
        if (!any_unused) continue;
        // One element stepped three times from each start, with its used slots in real memory.
        const std::array<std::array<double, 2>, 3> starts = {{{0.5, 0.25}, {-1.25, 0.0}, {0.0, -3.0}}};
        for (const auto& start : starts) {
          T param = T(start[0]);
          std::array<T, n> used{};
          StateSlots<T, n> st{};
          st.index = 0;
          for (std::size_t k = 0; k < n; ++k) {
            used[k] = T(Algo::initial_value(o, k));
            st.base[k] = Algo::slot_used(o, k) ? &used[k] : static_cast<T*>(pages.page(k));
          }
          std::vector<double> scalar_state = shardopt::detail::initial_scalar_state_of<Algo>(o);
          for (std::int64_t step = 1; step <= 3; ++step) {
            shardopt::detail::advance_scalar_state_of<Algo>(o, step, scalar_state);
            const auto scalars = shardopt::detail::prepare_step<Algo, T>(o, step, scalar_state);
            const T grad = T(step == 2 ? 0.0 : start[1] + 0.5 * static_cast<double>(step));
            const T before = param;
            auto call = [&] {  // both passes of an algorithm with per-tensor sums (the factor 1)
              if constexpr (shardopt::detail::has_tensor_sums<Algo>) {
                double terms[std::size(Algo::tensor_sum_names) > 0 ? std::size(Algo::tensor_sum_names) : 1];
                Algo::template accumulate<T>(scalars, param, grad, st, terms);
              }
              shardopt::detail::update_element<Algo>(scalars, param, grad, st, T(1));
            };
            const detail::Fault fault = detail::call_trapping_faults(call);
            if (!fault.happened) continue;
            const std::string where = std::string(Algo::name) + " with options {" + describe_options<Algo>(o) + "}, " + type +
                                      ", step " + std::to_string(step) + " (param " + shardopt::detail::fmt(double(before)) +
                                      ", grad " + shardopt::detail::fmt(double(grad)) + ")";
            const long k = pages.page_of(fault.address);
            if (k >= 0) {
              const std::string slot(Algo::slot_names[static_cast<std::size_t>(k)]);
              const char* verb = fault.write == 1 ? "writes" : fault.write == 0 ? "reads" : "reads or writes";
              out.add(where + ": update() " + verb + " slot '" + slot + "', which slot_used() says is not kept under these options. " +
                      "The optimizer holds no memory for an unused slot (its pointer is null: a crash, on a GPU too). Touch '" + slot +
                      "' only under the options that use it, or make slot_used() return true for them.");
            } else {
              char addr[32];
              std::snprintf(addr, sizeof addr, "%p", fault.address);
              out.add(where + ": update() crashed (memory access violation at address " + addr +
                      ") when called on the host with one element: it may touch only its parameter, its gradient, its scalars and "
                      "the slots it keeps.");
            }
            break;  // this start says enough
          }
          if (!out.empty()) return;  // the first options set and type that fail say most
        }
      }
    };
    run.template operator()<float>();
    if (out.empty()) run.template operator()<double>();
  }
#else
  (void)options;
#endif
  return out;
}

namespace detail {
// What a check that steps an optimizer says instead of crashing when update() touches an unused slot.
template <class Algo>
Findings not_run_if_unused_slots_touched(std::span<const typename Algo::Options> options, std::string_view check) {
  Findings out;
  const Findings touched = check_unused_slots_not_touched<Algo>(options);
  for (const auto& p : touched.problems())
    out.add(std::string(check) + " did not run: stepping the optimizer would crash. " + p);
  return out;
}
}  // namespace detail

}  // namespace shardopt::testing
