// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The umbrella header: the core, every bundled policy, ScopeGuard and the version macros.
///
/// @code
/// #include <shardopt/shardopt.hpp>
/// using Opt = shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::Replicated,
///                                        shardopt::comm::Mpi>;
/// @endcode

#include <shardopt/algorithm.hpp>
#include <shardopt/comm_stats.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>
#include <shardopt/half.hpp>
#include <shardopt/layout_support.hpp>
#include <shardopt/options.hpp>
#include <shardopt/scope_guard.hpp>
#include <shardopt/sharded_optimizer.hpp>
#include <shardopt/sharded_tensor.hpp>
#include <shardopt/version.hpp>

#include <shardopt/algo/adagrad.hpp>
#include <shardopt/algo/adam.hpp>
#include <shardopt/algo/adamax.hpp>
#include <shardopt/algo/adamw.hpp>
#include <shardopt/algo/lamb.hpp>
#include <shardopt/algo/lars.hpp>
#include <shardopt/algo/nadam.hpp>
#include <shardopt/algo/radam.hpp>
#include <shardopt/algo/rmsprop.hpp>
#include <shardopt/algo/sgd.hpp>

#include <shardopt/layout/chunk.hpp>
#include <shardopt/layout/data_parallel.hpp>
#include <shardopt/layout/flat_partition.hpp>
#include <shardopt/layout/replicated.hpp>

#include <shardopt/comm/serial.hpp>
#include <shardopt/config.hpp>
#if SHARDOPT_HAS_MPI
#include <shardopt/comm/mpi.hpp>
#endif

/// @brief Everything of shardopt: the optimizer, sharded tensors, policies and their concepts.
namespace shardopt {
/// @brief Optimizer algorithm policies (the `Algo` of ShardedOptimizer).
namespace algo {}
/// @brief Sharding layout policies (the `Layout` of ShardedOptimizer).
namespace layout {}
/// @brief Communicator policies (the `Comm` of ShardedOptimizer).
namespace comm {}
}  // namespace shardopt
