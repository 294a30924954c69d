// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: state queries, state dicts (local and full), and state-dict staging: checking
/// what a state dict brings and giving each rank the elements it keeps, a window at a time.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <shardopt/detail/redistribute.hpp>

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
std::vector<T> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::local_state(const std::string& name, std::string_view slot, std::size_t run) const {
  const std::size_t i = index_of(name, "local_state");
  const auto& p = params_[i];
  const std::string where = "local_state(" + detail::quote(name) + "): ";
  if (!in_lane<T>(p)) throw InvalidArgument(where + state_type_message(p));
  const std::size_t k = slot_index(slot, where);
  const auto& plan = lane<T>();
  const auto runs = state_runs_of(plan, i);
  if (run >= runs.size() && !(run == 0 && runs.empty()))
    throw InvalidArgument(where + "run " + std::to_string(run) + " of " + std::to_string(runs.size()));
  if (runs.empty() || !p.initialized[k]) return {};
  std::vector<T> out(static_cast<std::size_t>(runs[run].length));
  copy_to_host(plan.state[k].data() + runs[run].state_offset, out);
  return out;
}

template <class Algo, class Layout, class Comm, class ExecSpace>
double ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::scalar_state(const std::string& name, std::string_view key) const {
  const auto& p = params_[index_of(name, "scalar_state")];
  const auto names = detail::scalar_state_names_of<Algo>();
  for (std::size_t k = 0; k < names.size(); ++k)
    if (names[k] == key) return p.step > 0 ? p.scalar_state[k] : detail::initial_scalar_state_of<Algo>(groups_[p.group].options)[k];
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + std::string(n);
  throw InvalidArgument("scalar_state(" + detail::quote(name) + "): " + std::string(Algo::name) + " keeps no scalar state " +
                        detail::quote(std::string(key)) + (known.empty() ? std::string(" (it keeps none)") : " (it keeps " + known + ")"));
}

template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
std::vector<T> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::gathered_state(const std::string& name, std::string_view slot) {
  require_live("gathered_state");
  const std::string where = "gathered_state(" + detail::quote(name) + "): ";
  detail::LocalError err;
  std::size_t i = 0, k = 0;
  try {
    i = index_of(name, "gathered_state");
    if (!in_lane<T>(params_[i])) throw InvalidArgument(where + state_type_message(params_[i]));
    k = slot_index(slot, where);
  } catch (const InvalidArgument& e) {
    err = {detail::LocalError::invalid_argument, e.what()};
  }
  agree(detail::Op::gather_state, err);
  replan_if_needed();
  if (!params_[i].initialized[k]) return {};
  return gather_param<T>(lane<T>(), i, k);
}

template <class Algo, class Layout, class Comm, class ExecSpace>
StateDict ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::state_dict() const {
  require_live("state_dict");
  StateDict sd = skeleton();
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (std::size_t k = 0; k < all_slots; ++k) {
      if (!params_[i].initialized[k]) continue;
      auto& parts = sd.state.at(params_[i].name).slots[std::string(slot_name(k))];
      detail::visit_lane(params_[i].dtype, [&](auto t) { local_parts<typename decltype(t)::type>(i, k, parts); });
    }
  return sd;
}

template <class Algo, class Layout, class Comm, class ExecSpace>
StateDict ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::full_state_dict() {
  require_live("full_state_dict");
  detail::LocalError none;
  agree(detail::Op::gather_state, none);
  replan_if_needed();
  StateDict sd = skeleton();
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (std::size_t k = 0; k < all_slots; ++k) {
      if (!params_[i].initialized[k]) continue;
      StatePart part;
      detail::visit_lane(params_[i].dtype, [&](auto t) {
        using T = typename decltype(t)::type;
        const auto v = gather_param<T>(lane<T>(), i, k);
        part.values.assign(v.begin(), v.end());
      });
      sd.state.at(params_[i].name).slots[std::string(slot_name(k))].push_back(std::move(part));
    }
  return sd;
}

// The global tensor of slot k of parameter i from every rank's runs (collective); the lowest rank
// holding an element provides it.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
std::vector<T> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::gather_param(const Lane<T>& plan, std::size_t i, std::size_t k) {
  const std::int64_t numel = numel_of(i);
  // This rank's contribution: (global offset, length) pairs and their values.
  std::vector<std::int64_t> head;
  std::vector<T> values;
  for (const auto& r : state_runs_of(plan, i)) {
    std::vector<T> v(static_cast<std::size_t>(r.length));
    if (plan.state[k].size()) copy_to_host(plan.state[k].data() + r.state_offset, v);
    for (const auto& [g, at, len] : segments(i, r)) head.insert(head.end(), {g, len});
    values.insert(values.end(), v.begin(), v.end());
  }
  const auto heads = detail::all_gather_varying(comm_, head);
  const auto vals = detail::all_gather_varying(comm_, values);
  std::vector<T> out(static_cast<std::size_t>(numel));
  std::vector<char> filled(static_cast<std::size_t>(numel), 0);
  for (std::size_t q = 0; q < heads.size(); ++q) {
    std::size_t at = 0;
    for (std::size_t h = 0; h + 1 < heads[q].size(); h += 2) {
      for (std::int64_t e = 0; e < heads[q][h + 1]; ++e, ++at) {
        const auto g = static_cast<std::size_t>(heads[q][h] + e);
        if (!filled[g]) out[g] = vals[q][at], filled[g] = 1;
      }
    }
  }
  return out;
}

// The state dict of this optimizer without state: algorithm, groups, and each parameter's dtype, shape and step.
template <class Algo, class Layout, class Comm, class ExecSpace>
StateDict ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::skeleton() const {
  StateDict sd;
  sd.algorithm = std::string(Algo::name);
  for (const auto& g : groups_) sd.param_groups.push_back({option_values<Algo>(g.options), g.params_});
  for (const auto& p : params_) {
    ParamState ps;
    ps.dtype = detail::dtype_name(p.dtype);
    ps.shape = p.shape;
    ps.step = p.step;
    for (std::size_t k = 0; k < p.scalar_state.size(); ++k)  // empty before the first step
      ps.scalars[std::string(detail::scalar_state_names_of<Algo>()[k])] = p.scalar_state[k];
    sd.state.emplace(p.name, std::move(ps));
  }
  return sd;
}

// This rank's parts of slot k of parameter i, contiguous ones merged.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::local_parts(std::size_t i, std::size_t k, std::vector<StatePart>& parts) const {
  const auto& plan = lane<T>();
  for (const auto& r : state_runs_of(plan, i)) {
    std::vector<T> v(static_cast<std::size_t>(r.length));
    copy_to_host(plan.state[k].data() + r.state_offset, v);
    for (const auto& [g, at, len] : segments(i, r)) {
      if (!parts.empty() && parts.back().offset + static_cast<std::int64_t>(parts.back().values.size()) == g)
        parts.back().values.insert(parts.back().values.end(), v.begin() + at, v.begin() + at + len);
      else
        parts.push_back(StatePart{g, std::vector<double>(v.begin() + at, v.begin() + at + len)});
    }
  }
}

// Checks `sd` against this optimizer, listing every problem in one InvalidArgument.
template <class Algo, class Layout, class Comm, class ExecSpace>
auto ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::check_incoming(const StateDict& sd, bool check_parts, const std::string& where) const -> Incoming {
  std::vector<std::string> problems;
  Incoming in;
  if (sd.algorithm != Algo::name)
    problems.push_back("the state is of algorithm " + detail::quote(sd.algorithm) + " but this optimizer is " + std::string(Algo::name));
  if (sd.param_groups.size() != groups_.size())
    problems.push_back("the state has " + std::to_string(sd.param_groups.size()) + " param group(s) but this optimizer has " +
                       std::to_string(groups_.size()));
  std::unordered_map<std::string, std::size_t> group_of;
  for (std::size_t g = 0; g < sd.param_groups.size(); ++g) {
    const auto& sg = sd.param_groups[g];
    const std::string pg = "param group " + std::to_string(g) + ": ";
    options_type o = g < groups_.size() ? groups_[g].options : defaults_;
    std::vector<std::string> seen;
    for (const auto& [name, value] : sg.options) {
      seen.push_back(name);
      if (!std::isfinite(value)) problems.push_back(pg + "option " + name + " is not finite (" + detail::fmt(value) + ")");
      else if (!set_option<Algo>(o, name, value)) problems.push_back(pg + "unknown option " + detail::quote(name) + " for " + std::string(Algo::name));
      else if (is_bool_option(name) && value != 0.0 && value != 1.0)
        problems.push_back(pg + "option " + name + " is a flag but has the value " + detail::fmt(value));
    }
    for (const auto& [name, value] : option_values<Algo>(o))
      if (std::find(seen.begin(), seen.end(), name) == seen.end()) problems.push_back(pg + "option " + name + " is missing");
    try {
      Algo::validate(o);
    } catch (const InvalidArgument& e) {
      problems.push_back(pg + e.what());
    }
    if (g < groups_.size()) {
      std::string differ;
      auto same_slots = [](const options_type& x, const options_type& y) {
        for (std::size_t k = 0; k < num_slots; ++k)
          if (Algo::slot_used(x, k) != Algo::slot_used(y, k)) return false;
        return true;
      };
      if (!same_slots(o, groups_[g].options)) {
        // Name the options that decide the slots: those whose value alone changes them.
        const auto mine = option_values<Algo>(groups_[g].options), theirs = option_values<Algo>(o);
        for (std::size_t f = 0; f < mine.size(); ++f) {
          options_type one = groups_[g].options;
          set_option<Algo>(one, theirs[f].first, theirs[f].second);
          if (mine[f].second != theirs[f].second && !same_slots(one, groups_[g].options))
            differ += " " + mine[f].first + "=" + detail::fmt(theirs[f].second) + " (here " + detail::fmt(mine[f].second) + ")";
        }
        problems.push_back(pg + "the state's options keep different state slots than this optimizer's:" + differ);
      }
    }
    in.options.push_back(o);
    for (const auto& name : sg.params) {
      if (!group_of.emplace(name, g).second) {
        problems.push_back("parameter " + detail::quote(name) + " is listed in two param groups (" + std::to_string(group_of[name]) +
                           " and " + std::to_string(g) + ")");
        continue;
      }
      auto it = index_.find(name);
      if (it == index_.end()) problems.push_back(pg + "unknown parameter " + detail::quote(name));
      else if (params_[it->second].group != g)
        problems.push_back("parameter " + detail::quote(name) + " is in param group " + std::to_string(params_[it->second].group) +
                           " here but in group " + std::to_string(g) + " in the state");
    }
  }
  for (const auto& p : params_)
    if (!group_of.count(p.name)) problems.push_back("parameter " + detail::quote(p.name) + " is in no param group of the state");
  for (const auto& [name, ps] : sd.state)
    if (!index_.count(name)) problems.push_back("the state has unknown parameter " + detail::quote(name));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    const std::string pp = "parameter " + detail::quote(p.name) + ": ";
    in.steps.push_back(0);
    in.present.push_back({});
    in.scalar_state.push_back({});
    auto it = sd.state.find(p.name);
    if (it == sd.state.end()) {
      problems.push_back(pp + "no state for it");
      continue;
    }
    const auto& ps = it->second;
    const bool described = !(ps.dtype.empty() && ps.slots.empty());  // a file lists dtype and shape with the slots
    // A 16-bit parameter's state is float32: a float32 state fits it (a file gives the state's type).
    if (described && ps.dtype != detail::dtype_name(p.dtype) && ps.dtype != detail::dtype_name(detail::lane_dtype(p.dtype)))
      problems.push_back(pp + "the state is " + ps.dtype + " but the parameter is " + detail::dtype_name(p.dtype));
    if (described && ps.shape != p.shape)
      problems.push_back(pp + "the state has shape " + detail::fmt_shape(ps.shape) + " but the parameter " + detail::fmt_shape(p.shape));
    if (ps.step < 0) problems.push_back(pp + "negative step count " + std::to_string(ps.step));
    in.steps.back() = ps.step;
    for (const auto& [slot, parts] : ps.slots) {
      std::size_t k = all_slots;
      for (std::size_t s = 0; s < all_slots; ++s)
        if (slot_name(s) == slot) k = s;
      if (k == all_slots) {
        problems.push_back(pp + "unknown state slot " + detail::quote(slot) + " for " + std::string(Algo::name));
        continue;
      }
      if (k == master_slot && !has_master(p)) {
        problems.push_back(pp + "the state has master weights (slot master) but the parameter is " + detail::dtype_name(p.dtype) +
                           ": only bfloat16 and float16 parameters keep them");
        continue;
      }
      in.present.back()[k] = true;
      if (!check_parts) continue;
      for (const auto& part : parts)
        if (part.offset < 0 || part.offset + static_cast<std::int64_t>(part.values.size()) > numel_of(i)) {
          problems.push_back(pp + "slot " + slot + " has a part at offset " + std::to_string(part.offset) + " of " +
                             std::to_string(part.values.size()) + " elements, outside the " + std::to_string(numel_of(i)) + " elements");
          break;
        }
    }
    // The scalar state: all of it once the parameter took a step, none before.
    const auto scalar_names = detail::scalar_state_names_of<Algo>();
    for (const auto& [key, value] : ps.scalars)
      if (std::find(scalar_names.begin(), scalar_names.end(), key) == scalar_names.end())
        problems.push_back(pp + "unknown scalar state " + detail::quote(key) + " for " + std::string(Algo::name));
      else if (ps.step == 0)
        problems.push_back(pp + "the state has scalar state " + detail::quote(key) + " but step 0 (it starts at its initial value at the first step)");
    if (ps.step > 0)
      for (const auto& key : scalar_names) {
        auto v = ps.scalars.find(std::string(key));
        if (v == ps.scalars.end()) problems.push_back(pp + "scalar state " + std::string(key) + " is missing (the parameter took " + std::to_string(ps.step) + " step(s))");
        else in.scalar_state.back().push_back(v->second);
      }
    // A parameter has all of its state or none: a slot missing whole would silently restart at
    // its initial value while the step count goes on.
    const auto& present = in.present.back();
    if (std::find(present.begin(), present.end(), true) != present.end() && p.group < in.options.size())
      for (std::size_t k = 0; k < num_slots; ++k)
        if (!present[k] && Algo::slot_used(in.options[p.group], k))
          problems.push_back(pp + "state slot " + std::string(Algo::slot_names[k]) +
                             " is missing (the state has other slots of this parameter, and its options keep this one)");
  }
  if (!problems.empty()) {
    std::string msg = where + ": the state does not fit this optimizer (" + std::to_string(problems.size()) + " problem(s)):";
    for (std::size_t i = 0; i < problems.size() && i < 32; ++i) msg += "\n  - " + problems[i];
    if (problems.size() > 32) msg += "\n  - ...";
    throw InvalidArgument(msg);
  }
  return in;
}

// Whether option `name` of the algorithm is a flag.
template <class Algo, class Layout, class Comm, class ExecSpace>
bool ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::is_bool_option(std::string_view name) {
  bool is_bool = false;
  options_type o{};
  for_each_option<Algo>(o, [&](std::string_view n, auto& v) {
    if (n == name) is_bool = std::is_same_v<std::remove_reference_t<decltype(v)>, bool>;
  });
  return is_bool;
}

// The values of every present slot of every parameter for this rank's state runs, concatenated
// in state_runs_of order, from the parts passed on all ranks. A rank whose own parts cover what
// it keeps takes them (where they overlap, the part with the lowest offset, the earlier if
// equal); slots some rank cannot fill from its own parts travel through detail::redistribute, a
// window at a time (collective; no rank builds a whole tensor), and there the lowest rank's
// parts count.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::vector<std::vector<double>> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::stage_from_dict(const StateDict& sd, const Incoming& in) {
  const std::size_t n = params_.size();
  std::vector<std::vector<double>> staged(n * all_slots);
  std::vector<std::int64_t> need(n * all_slots, 0);
  auto parts_of = [&](std::size_t j) -> const std::vector<StatePart>& {
    return sd.state.at(params_[j / all_slots].name).slots.at(std::string(slot_name(j % all_slots)));
  };
  // This rank's segments of parameter i: (global offset, length), in state order.
  auto own = [&](std::size_t i) {
    std::vector<std::pair<std::int64_t, std::int64_t>> out;
    for (const auto& r : runs_of(i))
      for (const auto& [g, at, len] : segments(i, r)) out.push_back({g, len});
    return out;
  };
  for (std::size_t j = 0; j < n * all_slots; ++j) {
    if (!in.present[j / all_slots][j % all_slots]) continue;
    std::vector<const StatePart*> parts;
    for (const auto& part : parts_of(j)) parts.push_back(&part);
    std::stable_sort(parts.begin(), parts.end(), [](const StatePart* a, const StatePart* b) { return a->offset < b->offset; });
    std::vector<std::int64_t> reach(parts.size());  // the furthest end of parts[0..q]: where to start looking
    for (std::size_t q = 0; q < parts.size(); ++q)
      reach[q] = std::max(q ? reach[q - 1] : 0, parts[q]->offset + static_cast<std::int64_t>(parts[q]->values.size()));
    auto& out = staged[j];
    std::vector<char> filled;
    for (const auto& [g, len] : own(j / all_slots)) {
      const std::size_t base = out.size();
      out.resize(base + static_cast<std::size_t>(len), 0.0);
      filled.resize(out.size(), 0);
      const auto first = static_cast<std::size_t>(std::upper_bound(reach.begin(), reach.end(), g) - reach.begin());
      for (std::size_t q = first; q < parts.size() && parts[q]->offset < g + len; ++q) {
        const StatePart* part = parts[q];
        const std::int64_t lo = std::max(g, part->offset), hi = std::min(g + len, part->offset + static_cast<std::int64_t>(part->values.size()));
        for (std::int64_t e = lo; e < hi; ++e) {
          const std::size_t at = base + static_cast<std::size_t>(e - g);
          if (!filled[at]) out[at] = part->values[static_cast<std::size_t>(e - part->offset)], filled[at] = 1;
        }
      }
    }
    need[j] = std::find(filled.begin(), filled.end(), 0) != filled.end() ? 1 : 0;
  }
  if (comm_.size() > 1 && !need.empty()) comm_.all_reduce(std::span<std::int64_t>(need), ReduceOp::max);
  // The slots some rank lacks elements of, concatenated: every rank's parts, a window at a time.
  std::vector<detail::Span> have, want;
  std::vector<const double*> from;
  std::vector<std::pair<double*, std::size_t>> to;  // where, and which slot (for the verdict)
  std::int64_t total = 0;
  for (std::size_t j = 0; j < n * all_slots; ++j) {
    if (!need[j]) continue;
    for (const auto& part : parts_of(j)) {
      have.push_back({total + part.offset, static_cast<std::int64_t>(part.values.size()), from.size()});
      from.push_back(part.values.data());
    }
    std::size_t at = 0;
    for (const auto& [g, len] : own(j / all_slots)) {
      want.push_back({total + g, len, to.size()});
      to.push_back({staged[j].data() + at, j});
      at += static_cast<std::size_t>(len);
    }
    total += numel_of(j / all_slots);
  }
  if (total == 0) return staged;
  std::vector<std::int64_t> absent(n * all_slots, 0);
  detail::redistribute<double>(
      comm_, total, std::max<std::int64_t>(1, bucket_elements<double>() / comm_.size()), std::move(have), std::move(want),
      [&](std::size_t id, std::int64_t off, double* out, std::size_t count) { std::copy(from[id] + off, from[id] + off + count, out); },
      [&](std::size_t id, std::int64_t off, const double* values, const char* filled, std::size_t count) {
        std::copy(values, values + count, to[id].first + off);
        absent[to[id].second] += std::count(filled, filled + count, 0);
      });
  // The same verdict on every rank: elements every rank keeps were counted on each (max), the
  // others on their one owner (sum).
  std::vector<std::int64_t> most(absent);
  comm_.all_reduce(std::span<std::int64_t>(absent), ReduceOp::sum);
  comm_.all_reduce(std::span<std::int64_t>(most), ReduceOp::max);
  std::string missing;
  for (std::size_t j = 0; j < n * all_slots; ++j) {
    const std::size_t i = j / all_slots;
    const bool copies = params_[i].shards.empty() && strategy() != Strategy::partitioned;
    const std::int64_t count = copies ? most[j] : absent[j];
    if (need[j] && count > 0)
      missing += "\n  - slot " + std::string(slot_name(j % all_slots)) + " of " + detail::quote(params_[i].name) + ": " +
                 std::to_string(count) + " of " + std::to_string(numel_of(i)) + " elements in no rank's parts";
  }
  if (!missing.empty())
    throw InvalidArgument("load_state_dict(): the parts passed on all ranks together do not cover the state:" + missing);
  return staged;
}

// Replaces state, steps and options; allocates first so that a failure changes nothing.
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::commit_loaded(const Incoming& in, std::vector<std::vector<double>> staged) {
  try {
    detail::for_each_lane(lanes_, [&](auto& lane) { lane.loading = loaded_state(lane, in, staged); });
  } catch (...) {
    detail::for_each_lane(lanes_, [](auto& lane) { lane.loading = {}; });
    throw;
  }
  detail::for_each_lane(lanes_, [](auto& lane) { lane.state = std::exchange(lane.loading, {}); });
  for (std::size_t i = 0; i < params_.size(); ++i) {
    params_[i].step = in.steps[i];
    params_[i].initialized = in.present[i];
    params_[i].scalar_state = in.scalar_state[i];
  }
  for (std::size_t g = 0; g < groups_.size(); ++g) groups_[g].options = in.options[g];
}

// The state of lane T holding `staged` (allocated here: the old state stays until commit_loaded swaps).
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
auto ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::loaded_state(const Lane<T>& plan, const Incoming& in, const std::vector<std::vector<double>>& staged) const
    -> std::array<Kokkos::View<T*, memory_space>, all_slots> {
  std::array<Kokkos::View<T*, memory_space>, all_slots> out;
  for (std::size_t k = 0; k < all_slots; ++k)
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!in_lane<T>(params_[i]) || !in.present[i][k]) continue;
      if (out[k].size() == 0 && plan.layout.state_size > 0)
        out[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(slot_name(k)), plan.layout.state_size);
      const auto& src = staged[i * all_slots + k];
      std::size_t at = 0;
      for (const auto& r : state_runs_of(plan, i)) {
        std::vector<T> v(src.begin() + at, src.begin() + at + r.length);
        copy_from_host(out[k].data() + r.state_offset, v);
        at += static_cast<std::size_t>(r.length);
      }
    }
  return out;
}

}  // namespace shardopt
