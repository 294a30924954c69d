// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief <mpi.h> for shardopt's communicators, without the deprecated MPI-2 C++ bindings (shardopt
/// uses the C API; the bindings need extra libraries). Included by comm::Mpi and comm::Nccl.

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
