// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief shardopt::GradScaler: dynamic loss scaling for 16-bit training, as torch.amp.GradScaler.

#include <cmath>
#include <cstdint>
#include <string>

#include <shardopt/detail/format.hpp>
#include <shardopt/error.hpp>

namespace shardopt {

/// torch.amp.GradScaler's constructor arguments and defaults (GradScaler::Options).
struct GradScalerOptions {
  double init_scale = 65536.0;          ///< the first scale (2^16)
  double growth_factor = 2.0;           ///< > 1: the scale after growth_interval stepped steps
  double backoff_factor = 0.5;          ///< in (0, 1): the scale after a skipped step
  std::int64_t growth_interval = 2000;  ///< >= 1: stepped steps before the scale grows
  bool enabled = true;                  ///< false: scale() is 1 and nothing is unscaled or skipped
};

/// @brief The loss scale of 16-bit training, with torch.amp.GradScaler's options, defaults and
/// update rule; `opt.step(scaler)` (ShardedOptimizer) unscales, checks, steps or skips, and updates it.
///
/// Multiply the loss by scale() before the backward pass; `opt.step(scaler)` then divides the
/// reduced gradients by it (multiplies them by the float32 reciprocal, computed in float64 as torch
/// does), skips the step on every rank if any gradient is not finite, and calls update() with the
/// verdict: after a skipped step the scale is multiplied by `backoff_factor`; after
/// `growth_interval` consecutive stepped ones, by `growth_factor` (unless that overflows float32).
/// The scale is a float32 value, as torch keeps it. Disabled, scale() is 1 and `opt.step(scaler)`
/// is `opt.step()`.
class GradScaler {
 public:
  /// The options (GradScalerOptions).
  using Options = GradScalerOptions;

  /// @throws InvalidArgument, naming the option, for an init_scale that is not a finite float32
  ///         > 0, growth_factor <= 1, backoff_factor outside (0, 1), or growth_interval < 1.
  explicit GradScaler(Options o = {}) : options_(o) {
    validate(o);
    scale_ = static_cast<float>(o.init_scale);
  }

  /// The factor to multiply the loss by: the current scale (1 when disabled).
  double scale() const noexcept { return options_.enabled ? static_cast<double>(scale_) : 1.0; }
  /// The float32 reciprocal of the scale, computed in float64 (torch's inv_scale).
  float inv_scale() const noexcept { return options_.enabled ? static_cast<float>(1.0 / static_cast<double>(scale_)) : 1.0f; }
  /// Whether scaling is on.
  bool is_enabled() const noexcept { return options_.enabled; }
  /// The options (the scale aside).
  const Options& options() const noexcept { return options_; }
  /// Consecutive stepped steps since the last growth or backoff (torch's `_growth_tracker`).
  std::int64_t growth_tracker() const noexcept { return growth_tracker_; }

  /// @brief One step's outcome, as torch._amp_update_scale_: a skipped step (`found_inf`) backs the
  /// scale off and resets the tracker; growth_interval stepped steps in a row grow it (if the grown
  /// scale is finite in float32). Nothing when disabled. `opt.step(scaler)` calls it.
  void update(bool found_inf) noexcept {
    if (!options_.enabled) return;
    if (found_inf) {
      scale_ = static_cast<float>(static_cast<double>(scale_) * options_.backoff_factor);
      growth_tracker_ = 0;
      return;
    }
    if (++growth_tracker_ == options_.growth_interval) {
      const float grown = static_cast<float>(static_cast<double>(scale_) * options_.growth_factor);
      if (std::isfinite(grown)) scale_ = grown;
      growth_tracker_ = 0;
    }
  }

  /// @brief Sets the scale (torch's `update(new_scale)`), rounded to float32.
  /// @throws InvalidArgument, changing nothing, unless it is a finite float32 > 0.
  void set_scale(double s) {
    check_scale("set_scale(" + detail::fmt(s) + ")", s);
    scale_ = static_cast<float>(s);
  }

  /// torch's state_dict(): the five entries of an enabled scaler.
  struct State {
    double scale;                 ///< "scale"
    double growth_factor;         ///< "growth_factor"
    double backoff_factor;        ///< "backoff_factor"
    std::int64_t growth_interval;  ///< "growth_interval"
    std::int64_t growth_tracker;  ///< "_growth_tracker"
    bool operator==(const State&) const = default;  ///< equal entries
  };
  /// The state, as torch's `scaler.state_dict()` (whose keys the members name).
  State state_dict() const noexcept {
    return {static_cast<double>(scale_), options_.growth_factor, options_.backoff_factor, options_.growth_interval, growth_tracker_};
  }
  /// @brief Takes a state (torch's `load_state_dict`); nothing when disabled.
  /// @throws InvalidArgument, changing nothing, for entries the constructor would reject, or a
  ///         tracker outside [0, growth_interval).
  void load_state_dict(const State& s) {
    if (!options_.enabled) return;
    Options o = options_;
    o.init_scale = s.scale;
    o.growth_factor = s.growth_factor;
    o.backoff_factor = s.backoff_factor;
    o.growth_interval = s.growth_interval;
    validate(o);
    if (s.growth_tracker < 0 || s.growth_tracker >= s.growth_interval)
      throw InvalidArgument("GradScaler::load_state_dict: _growth_tracker " + std::to_string(s.growth_tracker) +
                            " is not in [0, growth_interval = " + std::to_string(s.growth_interval) + ")");
    options_ = o;
    scale_ = static_cast<float>(s.scale);
    growth_tracker_ = s.growth_tracker;
  }

 private:
  static void check_scale(const std::string& what, double s) {
    if (!(s > 0) || !std::isfinite(static_cast<float>(s)))
      throw InvalidArgument("GradScaler: " + what + ": the scale must be a finite float32 value > 0");
  }
  static void validate(const Options& o) {
    if (!o.enabled) return;
    check_scale("init_scale=" + detail::fmt(o.init_scale), o.init_scale);
    if (!(o.growth_factor > 1) || !std::isfinite(o.growth_factor))
      throw InvalidArgument("GradScaler: growth_factor=" + detail::fmt(o.growth_factor) + ": the growth factor must be > 1.0");
    if (!(o.backoff_factor > 0 && o.backoff_factor < 1))
      throw InvalidArgument("GradScaler: backoff_factor=" + detail::fmt(o.backoff_factor) + ": the backoff factor must be in (0, 1)");
    if (o.growth_interval < 1)
      throw InvalidArgument("GradScaler: growth_interval=" + std::to_string(o.growth_interval) + ": must be >= 1");
  }

  Options options_;
  float scale_ = 1.0f;
  std::int64_t growth_tracker_ = 0;
};

}  // namespace shardopt
