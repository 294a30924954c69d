// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What shardopt is built with: `SHARDOPT_HAS_MPI` (comm::Mpi, MPI in ScopeGuard).
///
/// The CMake target defines `SHARDOPT_HAS_MPI` (1, or 0 with `SHARDOPT_ENABLE_MPI=OFF`). Code that
/// includes the headers with `-I` alone gets `SHARDOPT_HAS_MPI=1` when `<mpi.h>` is on its include
/// path; define `SHARDOPT_HAS_MPI=0` to leave MPI out all the same.

#ifndef SHARDOPT_HAS_MPI
#if __has_include(<mpi.h>)
#define SHARDOPT_HAS_MPI 1
#else
#define SHARDOPT_HAS_MPI 0
#endif
#endif
