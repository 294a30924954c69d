// The three policies, each checked by its conformance suite. This file belongs to a Boost.Test
// executable: one of its files defines BOOST_TEST_MODULE and writes SHARDOPT_TESTING_GLOBAL_FIXTURE();
// run it under mpiexec at every world size you support.
#pragma once
#include <shardopt/testing.hpp>

#include "adadelta.hpp"
#include "greedy_layout.hpp"
#include "ordered_mpi.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

// Adadelta's definition for one element, straight from torch.optim.Adadelta; T is float or double.
inline const auto adadelta_reference = [](const Adadelta::Options& o, std::int64_t /*step*/, auto& p, auto grad, auto state) {
  using T = std::remove_reference_t<decltype(p)>;
  T g = o.maximize ? -grad : grad;
  if (o.weight_decay != 0) g = g + T(o.weight_decay) * p;
  T& square_avg = state[0];
  T& acc_delta = state[1];
  square_avg = square_avg * T(o.rho) + (T(1 - o.rho) * g) * g;
  const T delta = std::sqrt(acc_delta + T(o.eps)) / std::sqrt(square_avg + T(o.eps)) * g;
  acc_delta = acc_delta * T(o.rho) + (T(1 - o.rho) * delta) * delta;
  p = p + T(-o.lr) * delta;
};

// The defaults, plus options that take every branch of update().
SHARDOPT_ALGORITHM_CONFORMANCE(adadelta_conformance, Adadelta, adadelta_reference,
                               {.lr = 0.5, .rho = 0.5, .weight_decay = 0.1}, {.eps = 1e-3, .maximize = true});

SHARDOPT_LAYOUT_CONFORMANCE(greedy_conformance, Greedy);

// The factory makes the communicator under test over the processes of the MPI communicator it is given.
SHARDOPT_COMM_CONFORMANCE(ordered_mpi_conformance, [](MPI_Comm c) { return OrderedMpi(c); });
