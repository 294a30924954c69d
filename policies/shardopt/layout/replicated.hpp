#pragma once
/// @file
/// @brief layout::Replicated: each rank steps what it holds.

#include <string_view>

#include <shardopt/concepts.hpp>

namespace shardopt::layout {

/// @brief Each rank keeps the optimizer state of everything it holds and steps it: whole tensors
/// entirely, sharded tensors in their local shards. Nothing is communicated by the update (the
/// seed's semantics: torch's ShardedOptimizer with a local optimizer).
///
/// Use it as a template for your own layout: a layout declares its category and name, and
/// `step(ctx)` runs one step through the members of shardopt::StepContext.
struct Replicated {
  using layout_category = layout_policy_tag;              ///< declares this type a layout
  static constexpr std::string_view name = "Replicated";  ///< shown in messages

  /// One step: update every local piece with its own gradient.
  template <class Ctx>
  static void step(Ctx& ctx) {
    ctx.update_local();
  }
};

}  // namespace shardopt::layout
