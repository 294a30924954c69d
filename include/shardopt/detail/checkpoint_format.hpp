// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief What a shardopt checkpoint holds beyond the safetensors format (detail/safetensors.hpp):
/// the `__metadata__` keys (format, algorithm, param groups, checksums), reading them back into a
/// StateDict without values, and the checksums summed over ranks. Pure functions of the file and
/// the Comm; ShardedOptimizer::save() and load() (detail/optimizer/checkpoint.hpp) use them.

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <shardopt/concepts.hpp>
#include <shardopt/detail/format.hpp>
#include <shardopt/detail/lanes.hpp>
#include <shardopt/detail/safetensors.hpp>
#include <shardopt/grad_scaler.hpp>
#include <shardopt/state_dict.hpp>

namespace shardopt::detail {

/// The header a save() writes, and the checksums it carries (placeholders until every rank wrote).
struct FileLayout {
  st::Header header;
  nlohmann::json checksums;
};

/// The safetensors key of slot `slot` of parameter `name`, and of its step count.
inline std::string slot_key(const std::string& name, std::string_view slot) { return "state." + name + "." + std::string(slot); }
inline std::string step_key(const std::string& name) { return "state." + name + ".step"; }

/// "shardopt.checksums" of a file, checked for form; empty for files written without (by other tools).
inline std::map<std::string, std::string> checksums_of(const st::Header& h, const std::string& path) {
  std::map<std::string, std::string> out;
  auto it = h.metadata.find("shardopt.checksums");
  if (it == h.metadata.end()) return out;
  const auto j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_discarded() || !j.is_object()) st::fail(path, "shardopt.checksums is not a JSON object");
  for (const auto& [key, v] : j.items()) {
    if (!h.tensors.count(key)) st::fail(path, "shardopt.checksums lists " + quote(key) + ", which is no tensor of the file");
    if (!v.is_string() || v.template get<std::string>().size() != 16)
      st::fail(path, "the checksum of " + quote(key) + " is not 16 hexadecimal digits");
    out.emplace(key, v.template get<std::string>());
  }
  for (const auto& [key, t] : h.tensors)
    if (!out.count(key)) st::fail(path, "shardopt.checksums has no checksum of " + quote(key));
  return out;
}

/// The `__metadata__` key of a GradScaler's state (save(path, scaler)).
inline constexpr const char* grad_scaler_key = "shardopt.grad_scaler";

/// A GradScaler's state as the JSON object of torch's `scaler.state_dict()` (its keys and types).
inline std::string grad_scaler_json(const GradScaler::State& s) {
  return nlohmann::json{{"scale", s.scale},
                        {"growth_factor", s.growth_factor},
                        {"backoff_factor", s.backoff_factor},
                        {"growth_interval", s.growth_interval},
                        {"_growth_tracker", s.growth_tracker}}
      .dump();
}

/// The GradScaler state of a file's header; empty if it has none. Its values are checked by
/// GradScaler::load_state_dict(), its form here.
/// @throws IoError naming the entry if it is not such an object.
inline std::optional<GradScaler::State> grad_scaler_of(const st::Header& h, const std::string& path) {
  auto it = h.metadata.find(grad_scaler_key);
  if (it == h.metadata.end()) return std::nullopt;
  const auto j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_discarded() || !j.is_object()) st::fail(path, std::string(grad_scaler_key) + " is not a JSON object");
  auto number = [&](const char* key, bool integer) {
    auto v = j.find(key);
    if (v == j.end() || !(integer ? v->is_number_integer() : v->is_number()))
      st::fail(path, std::string(grad_scaler_key) + " has no " + (integer ? "integer" : "number") + " '" + key + "'");
    return v;
  };
  GradScaler::State s;
  s.scale = number("scale", false)->template get<double>();
  s.growth_factor = number("growth_factor", false)->template get<double>();
  s.backoff_factor = number("backoff_factor", false)->template get<double>();
  s.growth_interval = number("growth_interval", true)->template get<std::int64_t>();
  s.growth_tracker = number("_growth_tracker", true)->template get<std::int64_t>();
  return s;
}

[[noreturn]] inline void checksum_mismatch(const std::string& path, const std::string& tensors) {
  st::fail(path, "the data of " + tensors + " does not match its checksum (written incompletely, or changed since)");
}

/// The state a checkpoint holds, without the slots' values: algorithm, groups, steps and the
/// per-tensor scalar state named in `scalar_names` (float64 scalars; both checked against `sums`,
/// the file's checksums_of), slots present.
inline StateDict dict_from_header(const st::File& file, const st::Header& h, const std::map<std::string, std::string>& sums,
                                  const std::string& path, std::span<const std::string_view> scalar_names = {}) {
  auto meta = [&](const char* key) {
    auto it = h.metadata.find(key);
    if (it == h.metadata.end()) st::fail(path, std::string("not a shardopt checkpoint: __metadata__ has no ") + key);
    return it->second;
  };
  if (meta("shardopt.format") != "1") st::fail(path, "unsupported shardopt.format " + quote(meta("shardopt.format")));
  StateDict sd;
  sd.algorithm = meta("shardopt.algorithm");
  nlohmann::json groups;
  try {
    groups = nlohmann::json::parse(meta("shardopt.param_groups"));
  } catch (const nlohmann::json::exception& e) {
    st::fail(path, std::string("shardopt.param_groups is not valid JSON (") + e.what() + ")");
  }
  if (!groups.is_array()) st::fail(path, "shardopt.param_groups is not a JSON array");
  for (const auto& g : groups) {
    if (!g.is_object() || !g.contains("options") || !g["options"].is_object() || !g.contains("params") || !g["params"].is_array())
      st::fail(path, "a param group in shardopt.param_groups lacks its options object or params array");
    ParamGroupState pg;
    for (const auto& [n, v] : g["options"].items()) {
      if (!v.is_number() && !v.is_boolean()) st::fail(path, "option " + quote(n) + " is neither a number nor a boolean");
      pg.options.emplace_back(n, v.is_boolean() ? (v.template get<bool>() ? 1.0 : 0.0) : v.template get<double>());
    }
    for (const auto& n : g["params"]) {
      if (!n.is_string()) st::fail(path, "a parameter name in shardopt.param_groups is not a string");
      pg.params.push_back(n.template get<std::string>());
    }
    sd.param_groups.push_back(std::move(pg));
  }
  std::set<std::string> with_step;
  // An 8-byte scalar (the step count, a scalar state) read into `value` and checked against its checksum.
  auto read_scalar = [&](const std::string& key, const st::Tensor& t, auto& value) {
    file.read_at(&value, 8, h.data_start + t.begin);
    st::Checksum sum;
    sum.add(0, &value, 1);
    if (!sums.empty() && sums.at(key) != sum.hex()) checksum_mismatch(path, quote(key));
  };
  for (const auto& [key, t] : h.tensors) {
    const auto dot = key.rfind('.');
    if (key.rfind("state.", 0) != 0 || dot == std::string::npos || dot <= 6)
      st::fail(path, "tensor " + quote(key) + " is not named state.<parameter>.<slot or step>");
    const std::string name = key.substr(6, dot - 6), what = key.substr(dot + 1);
    auto& ps = sd.state[name];
    if (what == "step") {
      if (t.dtype != "I64" || !t.shape.empty()) st::fail(path, "tensor " + quote(key) + " is not an int64 scalar");
      read_scalar(key, t, ps.step);
      with_step.insert(name);
      continue;
    }
    if (std::find(scalar_names.begin(), scalar_names.end(), what) != scalar_names.end()) {
      if (t.dtype != "F64" || !t.shape.empty()) st::fail(path, "tensor " + quote(key) + " is not a float64 scalar");
      read_scalar(key, t, ps.scalars[what]);
      continue;
    }
    const auto dtype = dtype_of_file(t.dtype);
    if (!dtype) {
      std::string known;
      for (std::size_t i = 0; i < num_element_types; ++i) known += (i ? " or " : "") + file_dtype(static_cast<Dtype>(i));
      st::fail(path, "tensor " + quote(key) + " has dtype " + t.dtype + ", not " + known);
    }
    const std::string name_of_dtype = dtype_name(*dtype);
    if ((!ps.dtype.empty() && ps.dtype != name_of_dtype) || (!ps.slots.empty() && ps.shape != t.shape))
      st::fail(path, "the state slots of " + quote(name) + " differ in dtype or shape");
    ps.dtype = name_of_dtype;
    ps.shape = t.shape;
    ps.slots[what];
  }
  for (auto& [name, ps] : sd.state)
    if (!with_step.count(name)) st::fail(path, "tensor state." + name + ".step is missing");
  return sd;
}

/// The checksums of all ranks' parts added up (collective over `comm`).
template <class Comm>
std::vector<st::Checksum> all_reduce_checksums(Comm& comm, const std::vector<st::Checksum>& mine) {
  // The low and high 32 bits summed apart (< P * 2^32 each: no overflow), then put together mod 2^64.
  std::vector<std::int64_t> halves(2 * mine.size());
  for (std::size_t j = 0; j < mine.size(); ++j)
    halves[2 * j] = static_cast<std::int64_t>(mine[j].sum & 0xffffffffu), halves[2 * j + 1] = static_cast<std::int64_t>(mine[j].sum >> 32);
  if (comm.size() > 1 && !halves.empty()) comm.all_reduce(std::span<std::int64_t>(halves), ReduceOp::sum);
  std::vector<st::Checksum> out(mine.size());
  for (std::size_t j = 0; j < mine.size(); ++j)
    out[j].sum = static_cast<std::uint64_t>(halves[2 * j]) + (static_cast<std::uint64_t>(halves[2 * j + 1]) << 32);
  return out;
}

/// The lines every rank must agree on when loading `sd`: the same algorithm, steps, options and slots.
inline std::string describe_incoming(const StateDict& sd) {
  std::string d = "loading algorithm " + sd.algorithm + "\n";
  for (std::size_t g = 0; g < sd.param_groups.size(); ++g) {
    d += "loading-group " + std::to_string(g);
    for (const auto& [n, v] : sd.param_groups[g].options) d += " " + n + "=" + fmt(v);
    d += "\n";
  }
  for (const auto& [name, ps] : sd.state) {
    d += "loading " + name + " step=" + std::to_string(ps.step) + " slots=";
    for (const auto& [slot, parts] : ps.slots) d += slot + ",";
    for (const auto& [key, value] : ps.scalars) d += " " + key + "=" + fmt(value);
    d += "\n";
  }
  return d;
}

}  // namespace shardopt::detail
