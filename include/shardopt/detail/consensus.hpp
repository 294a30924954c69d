// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// Agreement across ranks before every collective operation of the optimizer: the same operation,
// the same registration and options, and no local error; otherwise every rank throws the same error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>

namespace shardopt::detail {

enum class Op : std::int64_t { step = 1, check_consistency = 2, gather_state = 3, load_state_dict = 4, save = 5, load = 6 };

inline const char* op_name(std::int64_t op) {
  switch (op) {
    case 1: return "step()";
    case 2: return "check_consistency()";
    case 3: return "gathered_state() or full_state_dict()";
    case 4: return "load_state_dict()";
    case 5: return "save()";
    case 6: return "load()";
  }
  return "an unknown operation";
}

// The collective timeout's default: SHARDOPT_COLLECTIVE_TIMEOUT (seconds, 0 for none), else 30 minutes
// (torch.distributed's default process-group timeout).
inline double default_collective_timeout() {
  const char* env = std::getenv("SHARDOPT_COLLECTIVE_TIMEOUT");
  if (env == nullptr || *env == '\0') return 1800.0;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  if (end == env || *end != '\0' || !std::isfinite(v) || v < 0)
    throw InvalidArgument(std::string("SHARDOPT_COLLECTIVE_TIMEOUT='") + env + "' is not a number of seconds >= 0 (0 for no limit)");
  return v;
}

// An error found on this rank before a collective operation.
struct LocalError {
  enum Kind : std::int64_t { none = 0, invalid_argument = 1, mismatch = 2, other = 3, io = 4 } kind = none;
  std::string message;
  explicit operator bool() const { return kind != none; }
};

[[noreturn]] inline void raise(LocalError::Kind kind, const std::string& message) {
  if (kind == LocalError::invalid_argument) throw InvalidArgument(message);
  if (kind == LocalError::mismatch) throw CollectiveMismatch(message);
  if (kind == LocalError::io) throw IoError(message);
  throw Error(message);
}

// FNV-1a, for digests of descriptions (equal on every rank for equal input).
inline std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (std::size_t i = 0; i < ranks.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  if (ranks.size() > 8) s += ", ...";
  return s;
}

// Describes how the per-rank descriptions differ. A description is lines "<kind> <key> <value...>";
// the first two words are the key. Lines whose key is "order" are compared as a whole.
inline std::string explain_difference(const std::vector<std::string>& descriptions) {
  const int p = static_cast<int>(descriptions.size());
  std::vector<std::string> keys;                               // in first-seen order
  std::map<std::string, std::map<std::string, std::vector<int>>> values;  // key -> value -> ranks
  for (int r = 0; r < p; ++r) {
    std::istringstream in(descriptions[r]);
    for (std::string line; std::getline(in, line);) {
      const auto sp1 = line.find(' '), sp2 = line.find(' ', sp1 == std::string::npos ? sp1 : sp1 + 1);
      const std::string key = line.substr(0, sp2), value = sp2 == std::string::npos ? "" : line.substr(sp2 + 1);
      if (!values.count(key)) keys.push_back(key);
      values[key][value].push_back(r);
    }
  }
  std::vector<std::string> problems;
  for (const auto& key : keys) {
    const auto& by_value = values[key];
    std::vector<int> has;
    for (const auto& [v, ranks] : by_value) has.insert(has.end(), ranks.begin(), ranks.end());
    std::sort(has.begin(), has.end());
    const auto what = key.substr(key.find(' ') + 1), kind = key.substr(0, key.find(' '));
    const std::string subject = kind == "param" ? "parameter '" + what + "'"
                                : kind == "grad" ? "the gradient of '" + what + "'"
                                : kind == "group" ? "param group " + what
                                                  : kind + " " + what;
    if (static_cast<int>(has.size()) < p) {
      std::vector<int> missing;
      for (int r = 0; r < p; ++r)
        if (!std::binary_search(has.begin(), has.end(), r)) missing.push_back(r);
      problems.push_back(subject + " exists on rank(s) " + rank_list(has) + " but not on rank(s) " + rank_list(missing));
    } else if (by_value.size() > 1) {
      std::string s = subject + " differs:";
      for (const auto& [v, ranks] : by_value) s += " rank(s) " + rank_list(ranks) + " have '" + v + "';";
      s.pop_back();
      problems.push_back(s);
    }
  }
  if (problems.empty()) problems.push_back("the parameters are registered in a different order on different ranks");
  std::string out = "shardopt: the ranks disagree (" + std::to_string(problems.size()) + " problem(s)):";
  for (std::size_t i = 0; i < problems.size() && i < 16; ++i) out += "\n  - " + problems[i];
  if (problems.size() > 16) out += "\n  - ...";
  return out;
}

// The collective call a rank is in: which operation, and its number among this optimizer's calls.
struct CallId {
  Op op;
  std::int64_t seq;  // 1 for the optimizer's first collective call, and so on
};
inline std::string describe_call(std::int64_t op, std::int64_t seq) {
  return std::string(op_name(op)) + " (collective call #" + std::to_string(seq) + " of this optimizer)";
}

// Every rank's `mine`, in rank order, on every rank (collective): the lengths, then the strings
// padded to the longest.
template <class Comm>
std::vector<std::string> all_gather_strings(Comm& comm, const std::string& mine) {
  const auto p = static_cast<std::size_t>(comm.size());
  std::vector<std::int64_t> lengths(p);
  const auto my_length = static_cast<std::int64_t>(mine.size());
  comm.all_gather(std::span<const std::int64_t>(&my_length, 1), std::span<std::int64_t>(lengths));
  const auto width = static_cast<std::size_t>(*std::max_element(lengths.begin(), lengths.end()));
  std::vector<std::string> out(p);
  if (width == 0) return out;
  std::string padded = mine;
  padded.resize(width, '\0');
  std::string all(width * p, '\0');
  comm.all_gather(std::span<const char>(padded.data(), width), std::span<char>(all.data(), all.size()));
  for (std::size_t r = 0; r < p; ++r) out[r] = all.substr(r * width, static_cast<std::size_t>(lengths[r]));
  return out;
}

// Every rank calls this at the start of a collective operation. Throws on every rank if the ranks
// called different operations or are at different calls (a rank skipped one), if any rank has a
// local error (its message is sent to all), or if the digests differ (the descriptions are gathered
// and compared). Where the Comm can wait for the other ranks with a time limit (comm::Mpi's
// arrive()), a rank that waits longer than `timeout` seconds reports which ranks have not arrived
// and aborts the job instead of hanging (timeout 0: no arrival check, no limit). Returns the bytes
// it sent.
template <class Comm, class Describe>
std::uint64_t agree(Comm& comm, CallId call, std::uint64_t digest, const LocalError& local, Describe&& describe,
                    double timeout = 0) {
  const int p = comm.size(), rank = comm.rank();
  if (p == 1) {
    if (local) raise(local.kind, local.message);
    return 0;
  }
  const auto bytes_before = comm.stats().bytes_sent;
  if constexpr (requires { comm.arrive(call.seq, timeout, std::string()); })
    if (timeout > 0) comm.arrive(call.seq, timeout, describe_call(static_cast<std::int64_t>(call.op), call.seq));
  const auto o = static_cast<std::int64_t>(call.op);
  const auto hi = static_cast<std::int64_t>(digest >> 32), lo = static_cast<std::int64_t>(digest & 0xffffffffu);
  std::int64_t v[9] = {local ? rank : p, o, -o, call.seq, -call.seq, hi, -hi, lo, -lo};
  comm.all_reduce(std::span<std::int64_t>(v, 9), ReduceOp::min);
  if (v[1] != -v[2])
    throw CollectiveMismatch(std::string("shardopt: the ranks called different collective operations: some called ") +
                             op_name(v[1]) + ", others " + op_name(-v[2]) + " (every rank must make the same calls in the same order)");
  if (v[3] != -v[4])
    throw CollectiveMismatch("shardopt: the ranks are at different collective calls of this optimizer: some at call #" +
                             std::to_string(v[3]) + ", others at call #" + std::to_string(-v[4]) + " (both " + op_name(o) +
                             "): a rank skipped or repeated a call, and calls of another optimizer on the same communicator took its place");
  if (v[0] < p) {
    const int root = static_cast<int>(v[0]);
    std::int64_t head[2] = {static_cast<std::int64_t>(local.kind), static_cast<std::int64_t>(local.message.size())};
    comm.broadcast(std::span<std::int64_t>(head, 2), root);
    std::string text = rank == root ? local.message : std::string(static_cast<std::size_t>(head[1]), '\0');
    comm.broadcast(std::span<char>(text.data(), text.size()), root);
    raise(static_cast<LocalError::Kind>(head[0]), "rank " + std::to_string(root) + ": " + text);
  }
  if (v[5] != -v[6] || v[7] != -v[8]) {
    throw CollectiveMismatch(explain_difference(all_gather_strings(comm, describe())));
  }
  return comm.stats().bytes_sent - bytes_before;
}

}  // namespace shardopt::detail
