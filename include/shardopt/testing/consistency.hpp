// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief Checks of an (Algo, Layout) pair on the test's world: the same bits as one process, and
/// state that survives state_dict(), load_state_dict() and full_state_dict(). Part of
/// `<shardopt/testing.hpp>`.

#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <shardopt/comm/serial.hpp>
#include <shardopt/layout/replicated.hpp>
#include <shardopt/options.hpp>
#include <shardopt/sharded_optimizer.hpp>
#include <shardopt/state_dict.hpp>
#include <shardopt/testing/compare.hpp>
#include <shardopt/testing/environment.hpp>
#include <shardopt/testing/findings.hpp>
#include <shardopt/testing/model.hpp>
#include <shardopt/testing/slot_guard.hpp>

namespace shardopt::testing {

/// @brief The differences between two state dicts: algorithm, param groups (options by name and
/// parameter names), and per parameter dtype, shape, step count, the values of every slot (parts
/// merged, compared bit for bit) and the scalar state (bit for bit). Empty if they hold the same state.
inline std::vector<std::string> state_dict_differences(const StateDict& got, const StateDict& expected) {
  std::vector<std::string> out;
  using shardopt::detail::fmt;
  using shardopt::detail::fmt_shape;
  using shardopt::detail::quote;
  if (got.algorithm != expected.algorithm) out.push_back("algorithm " + quote(got.algorithm) + " instead of " + quote(expected.algorithm));
  if (got.param_groups.size() != expected.param_groups.size()) {
    out.push_back(std::to_string(got.param_groups.size()) + " param groups instead of " + std::to_string(expected.param_groups.size()));
  } else {
    for (std::size_t g = 0; g < got.param_groups.size(); ++g) {
      const auto& a = got.param_groups[g];
      const auto& b = expected.param_groups[g];
      if (a.params != b.params) out.push_back("param group " + std::to_string(g) + " lists other parameters");
      std::string opts;
      auto show = [](const std::vector<std::pair<std::string, double>>& o) {
        std::string s;
        for (const auto& [n, v] : o) s += (s.empty() ? "" : " ") + n + "=" + fmt(v);
        return s;
      };
      if (a.options != b.options)
        out.push_back("param group " + std::to_string(g) + " has options {" + show(a.options) + "} instead of {" + show(b.options) + "}");
    }
  }
  for (const auto& [name, e] : expected.state) {
    auto it = got.state.find(name);
    if (it == got.state.end()) {
      out.push_back("no state for parameter " + quote(name));
      continue;
    }
    const auto& s = it->second;
    const std::string p = "parameter " + quote(name) + ": ";
    if (s.dtype != e.dtype) out.push_back(p + "dtype " + s.dtype + " instead of " + e.dtype);
    if (s.shape != e.shape) out.push_back(p + "shape " + fmt_shape(s.shape) + " instead of " + fmt_shape(e.shape));
    if (s.step != e.step) out.push_back(p + "step " + std::to_string(s.step) + " instead of " + std::to_string(e.step));
    for (const auto& [slot, eparts] : e.slots) {
      auto si = s.slots.find(slot);
      if (si == s.slots.end()) {
        out.push_back(p + "no state slot " + quote(slot));
        continue;
      }
      const auto n = static_cast<std::size_t>(e.numel());
      auto dense = [n](const std::vector<StatePart>& parts) {
        std::vector<double> v(n, std::nan(""));
        for (const auto& part : parts)
          for (std::size_t i = 0; i < part.values.size(); ++i)
            if (part.offset >= 0 && static_cast<std::size_t>(part.offset) + i < n) v[static_cast<std::size_t>(part.offset) + i] = part.values[i];
        return v;
      };
      const auto a = dense(si->second), b = dense(eparts);
      const std::string m = compare_values<double>("state slot " + quote(slot) + " of " + quote(name), a, b, {}, -1, e.shape);
      if (!m.empty()) out.push_back(m);
    }
    for (const auto& [slot, parts] : s.slots)
      if (!e.slots.count(slot)) out.push_back(p + "an extra state slot " + quote(slot));
    for (const auto& [key, v] : e.scalars) {
      auto si = s.scalars.find(key);
      if (si == s.scalars.end()) out.push_back(p + "no scalar state " + quote(key));
      else if (ulp_distance(si->second, v) != 0)
        out.push_back(p + "scalar state " + quote(key) + " is " + describe_value(si->second) + " instead of " + describe_value(v));
    }
    for (const auto& [key, v] : s.scalars)
      if (!e.scalars.count(key)) out.push_back(p + "an extra scalar state " + quote(key));
  }
  for (const auto& [name, s] : got.state)
    if (!expected.state.count(name)) out.push_back("state for an unknown parameter " + quote(name));
  return out;
}

/// @brief Boost.Test assertion: two state dicts hold the same state (see state_dict_differences()).
inline boost::test_tools::assertion_result same_state(const StateDict& got, const StateDict& expected) {
  const auto d = state_dict_differences(got, expected);
  boost::test_tools::assertion_result r(d.empty());
  for (std::size_t i = 0; i < d.size(); ++i) r.message() << (i ? "; " : "") << d[i];
  return r;
}

namespace detail {

template <class Algo>
std::string describe_groups(const typename Algo::Options& o0, const typename Algo::Options& o1) {
  const std::string a = describe_options<Algo>(o0), b = describe_options<Algo>(o1);
  return "options {" + a + "}" + (a == b ? std::string() : " (second param group {" + b + "})");
}

// This rank's parameters and state under `sharded` against the one-process `single`; one message per difference.
template <class Opt, class Ref, class MineModel, class RefModel>
std::vector<std::string> compare_with_one_process(const Opt& sharded, const Ref& single, const MineModel& mine, const RefModel& ref,
                                                  int rank) {
  std::vector<std::string> out;
  const auto& ts = model_tensors();
  auto add = [&](std::string m) {
    if (!m.empty()) out.push_back(std::move(m));
  };
  for (std::size_t t = 0; t < ts.size(); ++t) {
    const std::string what = "parameter '" + ts[t].name + "' " + shardopt::detail::fmt_shape(ts[t].shape);
    if (ts[t].is_double) add(compare_values<double>(what, mine.template whole_values<double>(t), ref.template whole_values<double>(t), {}, rank, ts[t].shape));
    else add(compare_values<float>(what, mine.template whole_values<float>(t), ref.template whole_values<float>(t), {}, rank, ts[t].shape));
  }
  {
    const auto whole = ref.sharded_values();
    std::vector<float> expected(whole.size()), got(whole.size());
    for (const auto& [i, v] : whole) expected[static_cast<std::size_t>(i)] = got[static_cast<std::size_t>(i)] = v;
    for (const auto& [i, v] : mine.sharded_values()) got[static_cast<std::size_t>(i)] = v;
    add(compare_values<float>("parameter 's' [5, 2] (a ShardedTensor, this rank's shards)", got, expected, {}, rank, sharded_shape()));
  }
  const StateDict sd = sharded.state_dict();
  for (const auto& [name, ps] : sd.state) {
    for (const auto& [slot, parts] : ps.slots) {
      const std::string what = "state slot '" + slot + "' of '" + name + "'";
      auto check = [&]<class T>() {
        const auto expected = single.template local_state<T>(name, slot);
        if (expected.empty()) {
          if (!parts.empty()) out.push_back(what + " on rank " + std::to_string(rank) + " exists, but one process keeps no such slot");
          return;
        }
        for (const auto& part : parts) {
          std::vector<T> got(part.values.begin(), part.values.end());
          const auto at = static_cast<std::size_t>(part.offset);
          if (at + got.size() > expected.size()) {
            out.push_back(what + " on rank " + std::to_string(rank) + " has a part outside the tensor");
            continue;
          }
          add(compare_values<T>(what, got, std::span<const T>(expected.data() + at, got.size()), {}, rank, ps.shape, part.offset));
        }
      };
      if (ps.dtype == "float64") check.template operator()<double>();
      else check.template operator()<float>();
    }
  }
  return out;
}

}  // namespace detail

/// @brief Steps the kit's model (whole tensors of awkward shapes in float and double, a
/// ShardedTensor, two param groups) `steps` times under `ShardedOptimizer<Algo, Layout, WorldComm>`
/// on every process of the test, with different gradients on every rank, and compares each step
/// bit for bit with one process (`Replicated`, `comm::Serial`) stepping what the layout promises:
/// the gradients of all ranks summed in rank order (and divided by the world size for
/// Reduction::mean), or, for Strategy::local, this rank's own gradients. Under the other strategies
/// every rank must also hold the same whole tensors. Collective.
/// @param options option sets to run; set j is used for the first param group, set j + 1 for the second
/// @param steps steps per option set
template <class Algo, class Layout>
Findings check_same_bits_as_one_process(std::span<const typename Algo::Options> options, int steps = 4) {
  Findings out = detail::not_run_if_unused_slots_touched<Algo>(options, "The comparison with one process");
  if (!out.empty()) return out;  // the same on every rank: a local check of the policy
  WorldComm world = world_comm();
  const int p = world.size(), r = world.rank();
  const bool local = Layout::strategy == Strategy::local;
  for (std::size_t j = 0; j < options.size(); ++j) {
    const auto& o0 = options[j];
    const auto& o1 = options[(j + 1) % options.size()];
    const std::string context = std::string(Algo::name) + " under layout " + std::string(Layout::name) + " at world size " +
                                std::to_string(p) + ", " + detail::describe_groups<Algo>(o0, o1);
    out.add(detail::guarded(context, [&](Findings& f) {
      detail::Model<WorldComm> mine(world, false);  // before the optimizers, which keep views of it
      detail::Model<comm::Serial> ref(comm::Serial{}, true);
      ShardedOptimizer<Algo, Layout, WorldComm> sharded(world, o0);
      ShardedOptimizer<Algo, layout::Replicated, comm::Serial> single(comm::Serial{}, o0);
      mine.register_in(sharded, sharded.add_param_group(o1));
      ref.register_in(single, single.add_param_group(o1));
      // With per-tensor sums, a user-sharded tensor's sums are over all its shards even under a
      // local layout: there every rank steps the same gradients (rank 0's), as one process would.
      const int g = local && shardopt::detail::has_tensor_sums<Algo> ? 0 : r;
      for (int k = 1; k <= steps; ++k) {
        mine.set_gradients(k, [&]<class T>(std::size_t t) { return detail::rank_gradient<T>(t, k, g); });
        ref.set_gradients(k, [&]<class T>(std::size_t t) {
          return local ? detail::rank_gradient<T>(t, k, g) : detail::combined_gradient<T>(t, k, p, Layout::reduction);
        });
        sharded.step();
        single.step();
        const auto mismatches = detail::compare_with_one_process(sharded, single, mine, ref, r);
        std::vector<std::string> across;
        if (!local) {
          const auto& ts = detail::model_tensors();
          for (std::size_t t = 0; t < ts.size(); ++t) {
            const std::string what = "parameter '" + ts[t].name + "'";
            const std::string m = ts[t].is_double
                                      ? differences_across_ranks<WorldComm, double>(world, what, mine.template whole_values<double>(t), ts[t].shape)
                                      : differences_across_ranks<WorldComm, float>(world, what, mine.template whole_values<float>(t), ts[t].shape);
            if (!m.empty()) across.push_back(m);
          }
        }
        const auto bad = ranks_where(world, !mismatches.empty());
        if (bad.empty() && across.empty()) continue;
        const std::string reference =
            local ? "one process (layout Replicated, comm Serial) stepping this rank's own gradients"
                  : std::string("one process (layout Replicated, comm Serial) stepping the gradients of all ranks summed in rank order") +
                        (Layout::reduction == Reduction::mean ? " and divided by " + std::to_string(p) : std::string());
        const std::string why =
            " An element-wise algorithm gives the same bits under every layout and world size: update() may read only its own "
            "element's parameter, gradient and state slots, and the scalars prepare() computed from the options and the step. A "
            "value that depends on the rank, on the element's position, on other elements or on earlier calls (a counter or a "
            "random generator in prepare()) breaks this.";
        std::string ranks;
        for (int q : bad) ranks += (ranks.empty() ? "" : ", ") + std::to_string(q);
        if (!mismatches.empty()) {
          std::string list;
          for (std::size_t i = 0; i < mismatches.size() && i < 4; ++i) list += "\n    - " + mismatches[i];
          if (mismatches.size() > 4) list += "\n    - ... and " + std::to_string(mismatches.size() - 4) + " more";
          f.add(context + ": after step " + std::to_string(k) + ", this rank (" + std::to_string(r) + ") differs from " + reference +
                ":" + list + "\n  " + why);
        } else if (!bad.empty()) {
          f.add(context + ": after step " + std::to_string(k) + ", rank(s) " + ranks + " differ from " + reference +
                " (their output shows where)." + why);
        }
        if (!across.empty()) {
          std::string list;
          for (std::size_t i = 0; i < across.size() && i < 4; ++i) list += "\n    - " + across[i];
          if (across.size() > 4) list += "\n    - ... and " + std::to_string(across.size() - 4) + " more";
          f.add(context + ": after step " + std::to_string(k) + ", the ranks hold different whole tensors:" + list + "\n  Under " +
                std::string(Layout::name) + " every rank must hold the same parameters; the update must not depend on the rank.");
        }
        return;  // the first step that differs says most; every rank stops here
      }
      for (const auto& name : sharded.param_names())
        if (sharded.step_count(name) != steps)
          f.add(context + ": step_count('" + name + "') is " + std::to_string(sharded.step_count(name)) + " after " +
                std::to_string(steps) + " steps");
    }));
  }
  return out;
}

/// @brief Steps the kit's model under `LayoutA`, then checks that its state moves, bit for bit,
/// into a fresh optimizer under `LayoutB` through `state_dict()` / `load_state_dict()` (each rank
/// passing its own local dict) and into one under `LayoutC` through `full_state_dict()`, that the
/// options come along (the receiving optimizers start with another `lr` when the algorithm has
/// one), and that all three then take the same further steps. Collective.
template <class Algo, class LayoutA, class LayoutB, class LayoutC>
Findings check_state_round_trip(std::span<const typename Algo::Options> options, int steps_before = 3, int steps_after = 2) {
  Findings out = detail::not_run_if_unused_slots_touched<Algo>(options, "The state round trip");
  if (!out.empty()) return out;  // the same on every rank: a local check of the policy
  WorldComm world = world_comm();
  const int p = world.size(), r = world.rank();
  const std::string hint =
      " The state must survive state_dict()/load_state_dict(): option_fields must list every member of Options (the "
      "options travel by name), slot_names must name every state slot update() uses, and slot_used() must say which slots "
      "the options keep.";
  for (std::size_t j = 0; j < options.size(); ++j) {
    const auto& o0 = options[j];
    const auto& o1 = options[(j + 1) % options.size()];
    const std::string context = std::string(Algo::name) + " at world size " + std::to_string(p) + ", " +
                                detail::describe_groups<Algo>(o0, o1) + ", state moved from layout " + std::string(LayoutA::name);
    out.add(detail::guarded(context, [&](Findings& f) {
      auto other = [](typename Algo::Options o) {  // the receivers start from another lr: load must bring the options
        double lr = 0;
        for (const auto& [n, v] : option_values<Algo>(o))
          if (n == "lr") lr = v;
        set_option<Algo>(o, "lr", lr > 0 ? lr * 0.5 : 0.125);
        return o;
      };
      detail::Model<WorldComm> ma(world, false), mb(world, false), mc(world, false);
      ShardedOptimizer<Algo, LayoutA, WorldComm> a(world, o0);
      ShardedOptimizer<Algo, LayoutB, WorldComm> b(world, other(o0));
      ShardedOptimizer<Algo, LayoutC, WorldComm> c(world, other(o0));
      ma.register_in(a, a.add_param_group(o1));
      mb.register_in(b, b.add_param_group(other(o1)));
      mc.register_in(c, c.add_param_group(other(o1)));
      auto grads = [&](int k) { return [k, r]<class T>(std::size_t t) { return detail::rank_gradient<T>(t, k, r); }; };
      for (int k = 1; k <= steps_before; ++k) {
        ma.set_gradients(k, grads(k));
        a.step();
      }
      const StateDict local = a.state_dict();
      const StateDict full = a.full_state_dict();
      // What the full dict must hold.
      std::vector<std::string> problems;
      if (full.algorithm != Algo::name) problems.push_back("its algorithm is '" + full.algorithm + "', not '" + std::string(Algo::name) + "'");
      if (!full.complete()) problems.push_back("full_state_dict() does not hold every slot whole");
      if (full.param_groups.size() != 2) problems.push_back("it has " + std::to_string(full.param_groups.size()) + " param groups, not 2");
      else if (full.param_groups[0].options != option_values<Algo>(o0) || full.param_groups[1].options != option_values<Algo>(o1))
        problems.push_back("its param groups' options differ from the optimizer's");
      for (const auto& name : a.param_names()) {
        auto it = full.state.find(name);
        if (it == full.state.end()) problems.push_back("it has no state for '" + name + "'");
        else if (it->second.step != steps_before)
          problems.push_back("'" + name + "' has step " + std::to_string(it->second.step) + ", not " + std::to_string(steps_before));
      }
      for (const auto& m : problems) f.add(context + ": full_state_dict() after " + std::to_string(steps_before) + " steps: " + m + ".");
      if (!problems.empty()) return;

      mb.copy_params_from(ma);  // parameters travel separately, as in any training code
      mc.copy_params_from(ma);
      b.load_state_dict(local);
      c.load_state_dict(full);
      const StateDict fb = b.full_state_dict(), fc = c.full_state_dict();
      for (const auto& d : state_dict_differences(fb, full))
        f.add(context + " to layout " + std::string(LayoutB::name) + " with load_state_dict(state_dict()): " + d + "." + hint);
      for (const auto& d : state_dict_differences(fc, full))
        f.add(context + " to layout " + std::string(LayoutC::name) + " with load_state_dict(full_state_dict()): " + d + "." + hint);
      if (!f.empty()) return;

      for (int k = steps_before + 1; k <= steps_before + steps_after; ++k) {
        ma.set_gradients(k, grads(k));
        mb.set_gradients(k, grads(k));
        mc.set_gradients(k, grads(k));
        a.step();
        b.step();
        c.step();
      }
      const StateDict after = a.full_state_dict();
      const StateDict after_b = b.full_state_dict(), after_c = c.full_state_dict();
      auto params_differ = [&](const detail::Model<WorldComm>& m) {
        std::vector<std::string> d;
        const auto& ts = detail::model_tensors();
        for (std::size_t t = 0; t < ts.size(); ++t) {
          const std::string what = "parameter '" + ts[t].name + "'";
          const std::string s = ts[t].is_double
                                    ? compare_values<double>(what, m.template whole_values<double>(t), ma.template whole_values<double>(t), {}, r, ts[t].shape)
                                    : compare_values<float>(what, m.template whole_values<float>(t), ma.template whole_values<float>(t), {}, r, ts[t].shape);
          if (!s.empty()) d.push_back(s);
        }
        const auto x = m.sharded_values(), y = ma.sharded_values();
        for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
          if (ulp_distance(x[i].second, y[i].second) != 0) {
            d.push_back("parameter 's' on rank " + std::to_string(r) + " differs at " + describe_index(x[i].first, detail::sharded_shape()));
            break;
          }
        return d;
      };
      for (const auto& d : params_differ(mb))
        f.add(context + " to layout " + std::string(LayoutB::name) + " and stepping on: " + d + " (the original optimizer is the reference)." + hint);
      for (const auto& d : params_differ(mc))
        f.add(context + " to layout " + std::string(LayoutC::name) + " and stepping on: " + d + " (the original optimizer is the reference)." + hint);
      for (const auto& d : state_dict_differences(after_b, after))
        f.add(context + " to layout " + std::string(LayoutB::name) + " and stepping on, the state: " + d + "." + hint);
      for (const auto& d : state_dict_differences(after_c, after))
        f.add(context + " to layout " + std::string(LayoutC::name) + " and stepping on, the state: " + d + "." + hint);
    }));
  }
  return out;
}

}  // namespace shardopt::testing
