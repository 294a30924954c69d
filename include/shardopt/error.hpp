// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Exceptions thrown by shardopt.

#include <stdexcept>
#include <string>

namespace shardopt {

/// @brief Base of every exception shardopt throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief A value the caller passed is invalid (an option, a view, a name, a group index).
///
/// Thrown before anything is changed (strong exception guarantee).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// @brief The ranks disagree: different parameters, shapes, options or call order.
///
/// Thrown on every rank of the communicator, never a hang.
class CollectiveMismatch : public Error {
 public:
  using Error::Error;
};

/// @brief A communication library (MPI, NCCL) reported an error.
class CommError : public Error {
 public:
  using Error::Error;
};

/// @brief Reading or writing a checkpoint file failed, or the file is not a valid checkpoint.
///
/// Thrown on every rank; the optimizer (and, for save(), the previous checkpoint) is unchanged.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace shardopt
