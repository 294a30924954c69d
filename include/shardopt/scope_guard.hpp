// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::ScopeGuard: initializes MPI and Kokkos for a scope.

#include <Kokkos_Core.hpp>

#include <shardopt/config.hpp>
#if SHARDOPT_HAS_MPI
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // shardopt uses the C API; the deprecated C++ bindings need extra libraries
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#endif

namespace shardopt {

/// @brief Initializes MPI (if built with MPI and not yet initialized) and Kokkos (if not yet
/// initialized); at scope exit finalizes exactly what it initialized, Kokkos first.
///
/// Create it first in `main`, before any view or communicator, so they are destroyed before it:
/// @code
/// int main(int argc, char** argv) {
///   shardopt::ScopeGuard guard(argc, argv);
///   ...
/// }
/// @endcode
class ScopeGuard {
 public:
  /// Initializes what is not initialized yet. `argc`/`argv` are passed on (and may be edited) by MPI and Kokkos.
  ScopeGuard(int& argc, char**& argv) {
#if SHARDOPT_HAS_MPI
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
      owns_mpi_ = true;
    }
#endif
    if (!Kokkos::is_initialized()) {
      Kokkos::initialize(argc, argv);
      owns_kokkos_ = true;
    }
  }
  ScopeGuard(const ScopeGuard&) = delete;             ///< not copyable
  ScopeGuard& operator=(const ScopeGuard&) = delete;  ///< not copyable
  /// Finalizes Kokkos, then MPI, each only if this guard initialized it.
  ~ScopeGuard() {
    if (owns_kokkos_) Kokkos::finalize();
#if SHARDOPT_HAS_MPI
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
#endif
  }

 private:
  bool owns_kokkos_ = false;
  [[maybe_unused]] bool owns_mpi_ = false;
};

}  // namespace shardopt
