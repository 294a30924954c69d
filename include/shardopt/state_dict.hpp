// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::StateDict: an optimizer's state keyed by parameter names, whole or in parts.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <shardopt/detail/shape.hpp>

namespace shardopt {

/// @brief A run of consecutive elements of a global tensor: its row-major flat offset and values.
///
/// Values are kept as double whatever the parameter's type; float32 values convert exactly.
struct StatePart {
  std::int64_t offset = 0;     ///< row-major flat index of the first element in the global tensor
  std::vector<double> values;  ///< the elements from `offset` on
};

/// @brief The state of one parameter: its step count, the state slots that exist and the
/// algorithm's per-tensor scalar state.
struct ParamState {
  std::string dtype;                                   ///< "float32" or "float64"
  std::vector<std::int64_t> shape;                     ///< the parameter's global shape
  std::int64_t step = 0;                               ///< steps the parameter took
  std::map<std::string, std::vector<StatePart>> slots;  ///< by torch's state key: the parts held here
  /// The per-tensor scalar state by torch's state key (e.g. NAdam's `mu_product`), whole on every
  /// rank; present once the parameter took a step, for algorithms that keep one.
  std::map<std::string, double> scalars;
  /// Number of elements of the global tensor.
  std::int64_t numel() const { return detail::numel(shape); }
};

/// @brief One param group: its options by name (booleans as 0 and 1) and its parameters' names.
struct ParamGroupState {
  std::vector<std::pair<std::string, double>> options;  ///< every option of the algorithm, in its order
  std::vector<std::string> params;                     ///< names, in registration order
};

/// @brief An optimizer's state keyed by parameter names, like torch's `Optimizer.state_dict()`,
/// but by name instead of by position so that it can be loaded under any layout and world size.
///
/// ShardedOptimizer::state_dict() holds the parts of each slot this rank keeps;
/// ShardedOptimizer::full_state_dict() holds every slot whole. load_state_dict() accepts either,
/// from any layout and world size: the parts passed on all ranks together must cover each slot.
struct StateDict {
  std::string algorithm;                       ///< the algorithm's name, e.g. "Adam"
  std::vector<ParamGroupState> param_groups;   ///< in group order
  std::map<std::string, ParamState> state;     ///< every registered parameter, by name

  /// Whether every slot of every parameter is held whole (no element missing).
  bool complete() const {
    for (const auto& [name, p] : state)
      for (const auto& [slot, parts] : p.slots) {
        std::vector<std::pair<std::int64_t, std::int64_t>> spans;
        for (const auto& part : parts) spans.emplace_back(part.offset, part.offset + static_cast<std::int64_t>(part.values.size()));
        std::sort(spans.begin(), spans.end());
        std::int64_t covered = 0;
        for (const auto& [b, e] : spans) {
          if (b > covered) return false;
          covered = std::max(covered, e);
        }
        if (covered < p.numel()) return false;
      }
    return true;
  }
};

}  // namespace shardopt
