// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: the plans of the lanes (detail::make_plan), their bucket buffers and tables,
/// and the state carried over when the registration changes.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <shardopt/detail/redistribute.hpp>

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

// Rebuilds the plans after the registration changed, carrying existing state over (collective);
// after set_bucket_bytes(), only the buckets.
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::replan_if_needed() {
  if (plans_valid_) {
    detail::for_each_lane(lanes_, [&](auto& lane) { rebucket(lane); });
    return;
  }
  detail::for_each_lane(lanes_, [&](auto& lane) { replan(lane); });
  plans_valid_ = true;
}

// After set_bucket_bytes(): the same state runs, new buckets (local: nothing moves).
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::rebucket(Lane<T>& plan) {
  if (!plan.built || plan.layout.bucket_elements == bucket_elements<T>()) return;
  Lane<T> next = build_plan<T>();
  next.state = std::move(plan.state);
  plan = std::move(next);
}

// Rebuilds the plan of T after the registration changed and carries the existing state over
// (collective): runs a rank keeps before and after are copied in place; under a partitioned
// strategy the packed parameters' state goes to its new owners a window at a time (O(N/P) per
// rank plus a bucket, never a whole tensor).
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::replan(Lane<T>& plan) {
  Lane<T> next = build_plan<T>();
  if (plan.built) carry_state(plan, next);
  plan = std::move(next);
}

template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::carry_state(const Lane<T>& old, Lane<T>& next) {
  for (std::size_t k = 0; k < all_slots; ++k) {
    bool any = false;
    for (const auto& prm : params_) any = any || (in_lane<T>(prm) && prm.initialized[k]);
    if (any && next.layout.state_size > 0)
      next.state[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(slot_name(k)), next.layout.state_size);
  }
  // Where a run's elements sit in its parameter: the flat offset of a packed run, the position
  // among the parameter's local runs of a local one (local runs never change hands).
  auto positions = [](const Lane<T>& plan, std::size_t i) {
    std::vector<std::pair<std::int64_t, StateRun>> out;
    std::int64_t local = 0;
    for (const auto& r : state_runs_of(plan, i)) {
      out.push_back({r.packed ? r.src : local, r});
      if (!r.packed) local += r.length;
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return out;
  };
  const bool exchange = strategy() == Strategy::partitioned;
  std::vector<detail::Span> have, need;
  std::vector<T*> where;  // of each span's first element
  std::int64_t total = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& prm = params_[i];
    if (!in_lane<T>(prm)) continue;
    const auto before = positions(old, i), after = positions(next, i);
    for (std::size_t k = 0; k < all_slots; ++k) {
      if (!prm.initialized[k]) continue;  // the same on every rank, as `total` must be
      if (exchange && prm.shards.empty()) {  // packed: through the windows
        for (const auto& [at, r] : before) {
          have.push_back({total + at, r.length, where.size()});
          where.push_back(const_cast<T*>(old.state[k].data()) + r.state_offset);
        }
        for (const auto& [at, r] : after) {
          need.push_back({total + at, r.length, where.size()});
          where.push_back(next.state[k].data() + r.state_offset);
        }
        total += numel_of(i);
        continue;
      }
      // Every element this rank keeps after, it kept before: copies in place.
      std::size_t b = 0;
      for (const auto& [at, r] : after) {
        while (b < before.size() && before[b].first + before[b].second.length <= at) ++b;
        for (std::size_t c = b; c < before.size() && before[c].first < at + r.length; ++c) {
          const std::int64_t lo = std::max(at, before[c].first), hi = std::min(at + r.length, before[c].first + before[c].second.length);
          copy_in_space(next.state[k].data() + r.state_offset + (lo - at),
                        old.state[k].data() + before[c].second.state_offset + (lo - before[c].first), static_cast<std::size_t>(hi - lo));
        }
      }
    }
  }
  if (total == 0) return;
  std::vector<T> host;
  const std::int64_t lost = detail::redistribute<T>(
      comm_, total, std::max<std::int64_t>(1, bucket_elements<T>() / comm_.size()), std::move(have), std::move(need),
      [&](std::size_t id, std::int64_t off, T* out, std::size_t n) {
        host.resize(n);
        copy_to_host(where[id] + off, host);
        std::copy(host.begin(), host.end(), out);
      },
      [&](std::size_t id, std::int64_t off, const T* in, const char*, std::size_t n) {
        host.assign(in, in + n);
        copy_from_host(where[id] + off, host);
      });
  if (lost != 0)  // every element kept after was kept by some rank before
    throw Error("ShardedOptimizer: internal error: " + std::to_string(lost) + " elements of state found no previous owner");
}

// The plan of T (detail::make_plan) and its buckets' buffers and tables; no state.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
auto ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::build_plan() const -> Lane<T> {
  const int p = comm_.size(), me = comm_.rank();
  Lane<T> plan;
  plan.built = true;
  std::vector<detail::PlanTensor> tensors;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& prm = params_[i];
    if (!in_lane<T>(prm)) continue;
    detail::PlanTensor t{i, prm.shape, prm.shards.empty(), {}};
    for (const auto& pc : prm.pieces) t.pieces.push_back(static_cast<std::int64_t>(pc.numel));
    tensors.push_back(std::move(t));
  }
  plan.layout = detail::make_plan<Layout>(tensors, params_.size(), strategy(), p, me, bucket_elements<T>());
  bucket_tables(plan);
  return plan;
}

// The buffers and device tables of plan's buckets.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::bucket_tables(Lane<T>& plan) const {
  const auto& buckets = plan.layout.buckets;
  plan.tables.clear();
  plan.tables.resize(buckets.size());
  std::int64_t width = 0;
  for (const auto& b : buckets) width = std::max(width, b.width);
  const bool parted = strategy() == Strategy::partitioned;
  plan.depth = can_start && buckets.size() > 1 ? 2 : 1;
  for (std::size_t d = 0; d < plan.depth && width > 0; ++d) {
    plan.bucket[d] = Kokkos::View<T*, memory_space>("shardopt::bucket", static_cast<std::size_t>(width * (parted ? comm_.size() : 1)));
    if (parted) plan.reduced[d] = Kokkos::View<T*, memory_space>("shardopt::reduced", static_cast<std::size_t>(width));
  }
  using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
  constexpr auto lane_storage = detail::Storage::lane;
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    T* buf = plan.bucket[b % plan.depth].data();
    std::vector<Run> pack, unpack;
    // 16-bit gradients widened into the float32 bucket, gathered values rounded into 16-bit parameters.
    for (const auto& c : buckets[b].pack) {
      const Param& prm = params_[c.param];
      pack.push_back({buf + c.at, element<T>(prm, prm.pieces[0].grad, c.src), static_cast<std::size_t>(c.length), lane_storage,
                      detail::storage_of(prm.dtype)});
    }
    for (const auto& c : buckets[b].unpack) {
      const Param& prm = params_[c.param];
      unpack.push_back({element<T>(prm, prm.pieces[0].value, c.src), buf + c.at, static_cast<std::size_t>(c.length),
                        detail::storage_of(prm.dtype), lane_storage});
    }
    plan.tables[b].pack.assign(exec_, std::move(pack));
    plan.tables[b].unpack.assign(exec_, std::move(unpack));
  }
  restore_tables(plan);
}

// The copies of this rank's reduced windows into the gradients it steps (the reduction first):
// into their memory, or for 16-bit parameters into grad32, in float32, where their state is.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::restore_tables(Lane<T>& plan) const {
  const bool parted = strategy() == Strategy::partitioned;
  using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
  for (std::size_t b = 0; b < plan.layout.buckets.size(); ++b) {
    std::vector<Run> restore;
    T* red = parted ? plan.reduced[b % plan.depth].data() : plan.bucket[b % plan.depth].data();
    for (const auto& u : plan.layout.buckets[b].update) {
      const Param& prm = params_[u.param];
      T* dst = has_master(prm) ? plan.grad32.data() + u.state_offset : static_cast<T*>(prm.pieces[0].grad) + u.src;
      restore.push_back({dst, red + u.at, static_cast<std::size_t>(u.length)});
    }
    plan.tables[b].restore.assign(exec_, std::move(restore));
  }
}

// Allocates the slots the coming step needs and sets the state of parameters stepped for the first
// time to the algorithm's initial value, and their master weights (16-bit parameters) to their values.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::init_state(Lane<T>& plan) {
  using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
  std::vector<Run> masters;  // each new master run from its parameter's elements, widened exactly
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& prm = params_[i];
    if (!in_lane<T>(prm) || !has_master(prm) || !prm.grad_present || prm.initialized[master_slot]) continue;
    if (plan.state[master_slot].size() == 0 && plan.layout.state_size > 0)
      plan.state[master_slot] = Kokkos::View<T*, memory_space>("shardopt::state.master", plan.layout.state_size);
    for (const std::size_t r : plan.layout.runs_of(i)) {
      const StateRun& run = plan.layout.state_runs[r];
      const auto& pc = prm.pieces[run.packed ? 0 : run.piece];
      masters.push_back({plan.state[master_slot].data() + run.state_offset, element<T>(prm, pc.value, run.packed ? run.src : 0),
                         static_cast<std::size_t>(run.length), detail::Storage::lane, detail::storage_of(prm.dtype)});
    }
    prm.initialized[master_slot] = true;
  }
  if (!masters.empty()) {
    detail::CopyTable<T, execution_space, memory_space> table;
    table.assign(exec_, std::move(masters));
    detail::copy_runs(exec_, table);
    exec_.fence();  // the table's device copy is freed here
  }
  for (std::size_t k = 0; k < num_slots; ++k) {
    // The runs to set, merged where contiguous with the same value: one fill per slot when every
    // parameter starts together, however many tensors there are.
    std::vector<std::tuple<std::int64_t, std::int64_t, T>> fills;  // offset, length, value
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& prm = params_[i];
      if (!in_lane<T>(prm) || !prm.grad_present || prm.initialized[k]) continue;
      const auto& o = groups_[prm.group].options;
      if (!Algo::slot_used(o, k)) continue;
      if (plan.state[k].size() == 0 && plan.layout.state_size > 0)
        plan.state[k] = Kokkos::View<T*, memory_space>("shardopt::state." + std::string(Algo::slot_names[k]), plan.layout.state_size);
      const T value = static_cast<T>(Algo::initial_value(o, k));
      for (const std::size_t r : plan.layout.runs_of(i))
        fills.emplace_back(plan.layout.state_runs[r].state_offset, plan.layout.state_runs[r].length, value);
      prm.initialized[k] = true;
    }
    std::sort(fills.begin(), fills.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    for (std::size_t f = 0; f < fills.size();) {
      auto [at, length, value] = fills[f];
      std::size_t g = f + 1;
      for (; g < fills.size() && std::get<0>(fills[g]) == at + length && std::get<2>(fills[g]) == value; ++g) length += std::get<1>(fills[g]);
      detail::fill(exec_, plan.state[k].data() + at, static_cast<std::size_t>(length), value);
      f = g;
    }
  }
}

}  // namespace shardopt
