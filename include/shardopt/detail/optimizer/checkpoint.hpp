// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: save() and load(): the checkpoint file header (the slots, step counts and scalar state), the atomic write protocol, each
/// rank writing and reading only the elements it keeps, and the checksums.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <fcntl.h>   // O_CREAT, O_EXCL, O_WRONLY, O_RDONLY
#include <unistd.h>  // unlink

#include <cstdio>  // rename
#include <optional>

#include <nlohmann/json.hpp>

#include <shardopt/detail/checkpoint_format.hpp>
#include <shardopt/detail/safetensors.hpp>

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::save_checkpoint(const std::string& path, const GradScaler* scaler) {
  require_live("save");
  detail::LocalError err;
  if (path.empty()) err = {detail::LocalError::invalid_argument, "save(): the path is empty"};
  try {
    validate_groups();  // a file must be loadable: no option it cannot hold
  } catch (const InvalidArgument& e) {
    if (!err) err = {detail::LocalError::invalid_argument, std::string("save(): ") + e.what()};
  }
  // The scaler's state is part of what the ranks agree on: rank 0 writes it for all of them.
  const std::string scaler_state = scaler && scaler->is_enabled() ? detail::grad_scaler_json(scaler->state_dict()) : std::string();
  agree(detail::Op::save, err, scaler_state.empty() ? std::string() : "\nGradScaler " + scaler_state);
  replan_if_needed();
  detail::FileLayout layout = file_layout(scaler_state);
  // The temporary file is named after the process that creates it (rank 0), so that another
  // writer's cleanup can tell whether it is still being written (detail::st::stale_temp).
  std::string suffix = comm_.rank() == 0 ? detail::st::temp_suffix() : std::string();
  std::int64_t length = static_cast<std::int64_t>(suffix.size());
  comm_.broadcast(std::span<std::int64_t>(&length, 1), 0);
  suffix.resize(static_cast<std::size_t>(length));
  comm_.broadcast(std::span<char>(suffix.data(), suffix.size()), 0);
  const std::string tmp = path + detail::st::temp_marker + suffix;
  const bool root = comm_.rank() == 0;
  auto cleanup = [&] {
    if (root) ::unlink(tmp.c_str());
  };
  io_phase(detail::Op::save, cleanup, [&] {
    if (!root) return;
    detail::st::remove_stale_temps(path);
    std::optional<detail::st::File> created;
    try {
      created.emplace(tmp, O_CREAT | O_EXCL | O_WRONLY);
    } catch (const IoError& e) {
      detail::st::fail(path, std::string("cannot create the temporary file next to it (") + e.what() + ")");
    }
    detail::st::File& f = *created;
    const std::string head = detail::st::encode(layout.header);
    f.write_at(head.data(), head.size(), 0);
    f.resize(layout.header.data_start + layout.header.data_size);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      f.write_at(&params_[i].step, 8, layout.header.data_start + layout.header.tensors.at(step_key(i)).begin);
      for (std::size_t k = 0; k < params_[i].scalar_state.size(); ++k)
        f.write_at(&params_[i].scalar_state[k], 8, layout.header.data_start + layout.header.tensors.at(scalar_key(i, k)).begin);
    }
    checkpoint_hook("header_written");
    f.close();
  });
  std::vector<detail::st::Checksum> sums(params_.size() * all_slots);  // of the elements this rank writes
  auto write_all = [&](auto& f) {
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < all_slots; ++k) {
        if (!params_[i].initialized[k]) continue;
        const auto& t = layout.header.tensors.at(slot_key(i, k));
        auto& sum = sums[i * all_slots + k];
        detail::visit_lane(params_[i].dtype, [&](auto e) {
          write_owned<typename decltype(e)::type>(f, i, k, layout.header.data_start + t.begin, sum);
        });
      }
    checkpoint_hook("before_fsync");
  };
  io_phase(detail::Op::save, cleanup, [&] {
    if constexpr (requires { comm_.open_shared(tmp); }) {
      // MPI-IO: a collective open, each rank's writes, then a collective sync and close that
      // every rank reaches even if its own writes failed (the failure is raised after them).
      auto f = comm_.open_shared(tmp);
      std::exception_ptr failed;
      try {
        write_all(f);
      } catch (...) {
        failed = std::current_exception();
      }
      for (auto collective : {&decltype(f)::sync, &decltype(f)::close}) {
        try {
          (f.*collective)();
        } catch (...) {
          if (!failed) failed = std::current_exception();
        }
      }
      if (failed) std::rethrow_exception(failed);
    } else {
      detail::st::File f(tmp, O_WRONLY);
      write_all(f);
      f.sync();
      f.close();
    }
  });
  // Every rank wrote its part: the checksums of the whole tensors go into the header (the same
  // length as the placeholders it was written with), then the rename.
  const auto total = detail::all_reduce_checksums(comm_, sums);
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (std::size_t k = 0; k < all_slots; ++k)
      if (params_[i].initialized[k]) layout.checksums[slot_key(i, k)] = total[i * all_slots + k].hex();
  layout.header.metadata["shardopt.checksums"] = layout.checksums.dump();
  io_phase(detail::Op::save, cleanup, [&] {
    if (!root) return;
    const std::string head = detail::st::encode(layout.header);
    if (head.size() != layout.header.data_start) throw Error("save(): the header changed size when its checksums were written");
    {
      detail::st::File f(tmp, O_WRONLY);
      f.write_at(head.data(), head.size(), 0);
      f.sync();
      f.close();
    }
    checkpoint_hook("before_rename");
    if (::rename(tmp.c_str(), path.c_str()) != 0) detail::st::fail_errno(path, "cannot rename " + tmp + " to it");
    checkpoint_hook("after_rename");
    detail::st::sync_directory(path);
  });
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::load_checkpoint(const std::string& path, GradScaler* scaler) {
  require_live("load");
  detail::LocalError err;
  std::optional<detail::st::File> file;
  detail::st::Header header;
  std::map<std::string, std::string> checksums;
  StateDict sd;
  Incoming in;
  const bool with_scaler = scaler && scaler->is_enabled();
  std::optional<GradScaler> next_scaler;  // the scaler as it will be, taken with the state
  const std::string where = "load(" + detail::quote(path) + ")";
  try {
    file.emplace(path, O_RDONLY);
    header = detail::st::read_header(*file, path);
    checksums = detail::checksums_of(header, path);
    sd = detail::dict_from_header(*file, header, checksums, path, detail::scalar_state_names_of<Algo>());
    in = check_incoming(sd, false, where);
    if (with_scaler) {
      const auto s = detail::grad_scaler_of(header, path);
      if (!s)
        throw InvalidArgument(where + ": the file holds no GradScaler state (it was saved without a scaler, or with a "
                              "disabled one), so the scaler cannot resume from it; load(path) loads the optimizer alone");
      next_scaler = *scaler;
      try {
        next_scaler->load_state_dict(*s);
      } catch (const InvalidArgument& e) {
        throw InvalidArgument(where + ": its " + detail::grad_scaler_key + ": " + e.what());
      }
    }
  } catch (const InvalidArgument& e) {
    err = {detail::LocalError::invalid_argument, e.what()};
  } catch (const IoError& e) {
    err = {detail::LocalError::io, e.what()};
  } catch (const std::exception& e) {
    err = {detail::LocalError::other, where + ": " + e.what()};
  }
  const std::string incoming = detail::describe_incoming(sd) + (with_scaler ? "\nwith a GradScaler" : "");
  agree(detail::Op::load, err, incoming);
  replan_if_needed();
  std::vector<std::vector<double>> staged;
  std::vector<detail::st::Checksum> sums(params_.size() * all_slots);
  io_phase(detail::Op::load, [] {}, [&] { staged = stage_from_file(*file, header, sums); }, incoming);
  verify_checksums(checksums, path, detail::all_reduce_checksums(comm_, sums));  // the same verdict on every rank
  commit_loaded(in, std::move(staged));
  if (next_scaler) *scaler = *next_scaler;
}

// The file's header, the same on every rank: tensors in registration order, slots, then the step;
// `grad_scaler` (a GradScaler's JSON, or empty) in the metadata.
template <class Algo, class Layout, class Comm, class ExecSpace>
detail::FileLayout ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::file_layout(const std::string& grad_scaler) const {
  detail::FileLayout f;
  std::uint64_t at = 0;
  f.checksums = nlohmann::json::object();
  // An 8-byte scalar tensor (a step count, a scalar state): its place and its checksum.
  auto scalar_tensor = [&](const std::string& key, const char* dtype, const auto& value) {
    f.header.tensors[key] = {dtype, {}, at, at + 8};
    at += 8;
    detail::st::Checksum sum;
    sum.add(0, &value, 1);
    f.checksums[key] = sum.hex();
  };
  for (std::size_t i = 0; i < params_.size(); ++i) {
    // The state's type: the parameter's, float32 for a 16-bit one (its state and master weights).
    const detail::Dtype state_dtype = detail::lane_dtype(params_[i].dtype);
    const std::uint64_t bytes = static_cast<std::uint64_t>(numel_of(i)) * detail::dtype_size(state_dtype);
    for (std::size_t k = 0; k < all_slots; ++k) {
      if (!params_[i].initialized[k]) continue;
      f.header.tensors[slot_key(i, k)] = {detail::file_dtype(state_dtype), params_[i].shape, at, at + bytes};
      at += bytes;
    }
    scalar_tensor(step_key(i), "I64", params_[i].step);
    for (std::size_t k = 0; k < params_[i].scalar_state.size(); ++k) scalar_tensor(scalar_key(i, k), "F64", params_[i].scalar_state[k]);
  }
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : groups_) {
    nlohmann::json options = nlohmann::json::object();
    options_type o = g.options;
    for_each_option<Algo>(o, [&](std::string_view n, auto v) { options[std::string(n)] = v; });
    groups.push_back({{"options", options}, {"params", g.params_}});
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t k = 0; k < all_slots; ++k)
      if (params_[i].initialized[k]) f.checksums[slot_key(i, k)] = detail::st::checksum_placeholder;
  }
  f.header.metadata = {{"shardopt.format", "1"},
                       {"shardopt.algorithm", std::string(Algo::name)},
                       {"shardopt.param_groups", groups.dump()},
                       {"shardopt.checksums", f.checksums.dump()}};
  if (!grad_scaler.empty()) f.header.metadata[detail::grad_scaler_key] = grad_scaler;
  f.header.data_start = detail::st::encode(f.header).size();
  f.header.data_size = at;
  return f;
}

// Writes this rank's elements of slot k of parameter i (those it writes(): each element once over
// the ranks) at `base` of the file, adding them to `sum`.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T, class File>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::write_owned(File& f, std::size_t i, std::size_t k, std::uint64_t base, detail::st::Checksum& sum) const {
  const auto& plan = lane<T>();
  for (const auto& r : state_runs_of(plan, i)) {
    if (!writes(i, r)) continue;
    std::vector<T> v(static_cast<std::size_t>(r.length));
    copy_to_host(plan.state[k].data() + r.state_offset, v);
    for (const auto& [g, at, len] : segments(i, r)) {
      f.write_at(v.data() + at, static_cast<std::uint64_t>(len) * sizeof(T), base + static_cast<std::uint64_t>(g) * sizeof(T));
      sum.add(static_cast<std::uint64_t>(g), v.data() + at, static_cast<std::size_t>(len));
    }
  }
}

// The slots' checksums (checksums_of) against what every rank read (`read`, all ranks' parts added up).
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::verify_checksums(const std::map<std::string, std::string>& sums, const std::string& path,
                                                                      const std::vector<detail::st::Checksum>& read) const {
  std::string bad;
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (std::size_t k = 0; k < all_slots; ++k) {
      auto it = sums.find(slot_key(i, k));
      if (it != sums.end() && it->second != read[i * all_slots + k].hex()) bad += (bad.empty() ? "" : ", ") + detail::quote(it->first);
    }
  if (!bad.empty()) detail::checksum_mismatch(path, bad);
}

// The values of every slot the file holds for this rank's state runs, as stage_from_dict() gives
// them, read from the file (only the elements this rank keeps).
// `sums` gets the checksums of the elements this rank would write (each element counted on one rank).
template <class Algo, class Layout, class Comm, class ExecSpace>
std::vector<std::vector<double>> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::stage_from_file(const detail::st::File& f, const detail::st::Header& h,
                                                                                                  std::vector<detail::st::Checksum>& sums) const {
  std::vector<std::vector<double>> staged(params_.size() * all_slots);
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (std::size_t k = 0; k < all_slots; ++k) {
      auto it = h.tensors.find(slot_key(i, k));
      if (it == h.tensors.end()) continue;
      const std::size_t j = i * all_slots + k;
      detail::visit_lane(params_[i].dtype, [&](auto t) {
        read_owned<typename decltype(t)::type>(f, i, h.data_start + it->second.begin, staged[j], sums[j]);
      });
    }
  return staged;
}

// Reads this rank's elements of one slot of parameter i from `base` of the file, appending them to
// `out` in state order; those it writes() go into `sum`.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::read_owned(const detail::st::File& f, std::size_t i, std::uint64_t base, std::vector<double>& out,
                                                             detail::st::Checksum& sum) const {
  std::vector<T> v;
  for (const auto& r : state_runs_of(lane<T>(), i)) {
    const bool counted = writes(i, r);
    for (const auto& [g, at, len] : segments(i, r)) {
      v.resize(static_cast<std::size_t>(len));
      f.read_at(v.data(), static_cast<std::uint64_t>(len) * sizeof(T), base + static_cast<std::uint64_t>(g) * sizeof(T));
      if (counted) sum.add(static_cast<std::uint64_t>(g), v.data(), v.size());
      out.insert(out.end(), v.begin(), v.end());
    }
  }
}

}  // namespace shardopt
