// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: agreement across ranks before every collective (what the ranks compare:
/// registration, bucket size, options, gradient presence), and I/O phases whose outcome every rank
/// shares.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

// Registration (cached), options and gradient presence, one line each.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::string ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::describe() const {
  if (registration_.empty()) {
    for (const auto& p : params_) registration_ += p.describe() + "\n";
    registration_digest_ = detail::fnv1a(registration_);
  }
  std::string d = registration_ + "bucket_bytes " + std::to_string(bucket_bytes_) + "\n" + describe_clip() + "\n" + describe_skip() + "\n";
  for (std::size_t g = 0; g < groups_.size(); ++g)
    d += "group " + std::to_string(g) + " " + describe_options<Algo>(groups_[g].options) + "\n";
  for (const auto& p : params_) d += "grad " + p.name + (p.grad_present ? " present\n" : " absent\n");
  return d;
}

// The clipping setting, as the ranks compare it.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::string ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::describe_clip() const {
  if (!clip_) return "clip_grad_norm setting off";
  return "clip_grad_norm setting max_norm=" + detail::fmt(clip_->max_norm) + " norm_type=" + detail::fmt(clip_->norm_type) +
         " error_if_nonfinite=" + (clip_->error_if_nonfinite ? "True" : "False");
}

// The skipping of non-finite steps, as the ranks compare it.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::string ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::describe_skip() const {
  return std::string("skip_nonfinite setting ") + (skip_nonfinite_ ? "on" : "off");
}

// The digest of describe(), without building it (the registration's part is cached).
template <class Algo, class Layout, class Comm, class ExecSpace>
std::uint64_t ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::digest() const {
  if (registration_.empty()) describe();
  std::uint64_t h = detail::fnv1a(std::to_string(bucket_bytes_) + describe_clip() + describe_skip(), registration_digest_);
  for (const auto& g : groups_) h = detail::fnv1a(describe_options<Algo>(g.options), h);
  std::string presence(params_.size(), '0');
  for (std::size_t i = 0; i < params_.size(); ++i) presence[i] = params_[i].grad_present ? '1' : '0';
  return detail::fnv1a(presence, h);
}

// `extra`: further lines every rank must agree on (what load_state_dict() or load() brings).
// Every call counts (seq_), on every rank alike, failed ones too: the agreement checks the count.
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::agree(detail::Op op, const detail::LocalError& err, const std::string& extra) {
  const std::uint64_t d = extra.empty() ? digest() : detail::fnv1a(extra, digest());
  control_bytes_ += detail::agree(comm_, detail::CallId{op, ++seq_}, d, err, [this, &extra] { return describe() + extra; },
                                  collective_timeout_);
}

// Runs `body` on every rank and agrees on the outcome: any rank's failure is thrown on every rank
// after `cleanup` (run on every rank).
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class Cleanup, class Body>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::io_phase(detail::Op op, Cleanup&& cleanup, Body&& body, const std::string& extra) {
  detail::LocalError err;
  try {
    body();
  } catch (const IoError& e) {
    err = {detail::LocalError::io, e.what()};
  } catch (const std::exception& e) {
    err = {detail::LocalError::other, e.what()};
  }
  try {
    agree(op, err, extra);
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace shardopt
