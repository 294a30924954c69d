// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: the step engine: per lane, the bucket pipeline (pack, reduce, fused update,
/// all-gather, unpack) and the runs stepped in place; with clipping or an algorithm with per-tensor
/// sums, the reduction first (into the gradients' memory), the norms or pass 1, then the step.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

// step() after a closure (whose failure, if any, is `err`, and `thrown` on this rank).
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::step_after(detail::LocalError err, std::exception_ptr thrown,
                                                                  std::optional<float> unscale) {
  // Each stepped parameter's scalar state after this step (committed with the step counts).
  std::vector<std::vector<double>> next(params_.size());
  if (!err) {
    try {
      validate_groups();
      check_absent_gradients();
      next = advanced_scalar_state();
    } catch (const InvalidArgument& e) {
      err = {detail::LocalError::invalid_argument, e.what()};
    } catch (const std::exception& e) {
      err = {detail::LocalError::other, e.what()};
    }
  }
  try {
    // The scale every rank unscales by, compared as bits.
    agree(detail::Op::step, err, unscale ? "grad scaler inv_scale bits " + std::to_string(std::bit_cast<std::uint32_t>(*unscale)) : "");
  } catch (...) {
    if (thrown) std::rethrow_exception(thrown);  // this rank's own exception, as it was
    throw;
  }
  replan_if_needed();
  const bool skipping = skip_nonfinite_ || unscale.has_value();
  if (!clip_ && num_tensor_sums == 0 && !skipping) {
    detail::for_each_lane(lanes_, [&](auto& lane) { step_lane(lane, next, {}, {}); });
  } else {
    // Every gradient reduced first (into the gradients' memory); then the total norm (clipping),
    // the check for non-finite gradients (skip_nonfinite) and pass 1 with every tensor's sums
    // (per-tensor sums); then the step, from the gradients' memory.
    std::optional<detail::NormPieces> norms, check;
    if (clip_) norms.emplace(detail::NormPieces{detail::NormOrder{clip_->norm_type}, {}, std::vector<double>(params_.size(), 0.0)});
    if (skipping)
      check.emplace(detail::NormPieces{detail::NormOrder{std::numeric_limits<double>::infinity()}, {}, std::vector<double>(params_.size(), 0.0)});
    const float inv_scale = unscale ? *unscale : 1.0f;
    detail::for_each_lane(lanes_, [&](auto& lane) {
      using T = typename std::decay_t<decltype(lane)>::value_type;
      reduce_lane(lane, norms ? &*norms : nullptr, check ? &*check : nullptr, static_cast<T>(inv_scale));
    });
    // This rank's verdict: the largest |g| of some tensor it steps is not finite (NaN or inf).
    bool nonfinite = check && std::any_of(check->maxima.begin(), check->maxima.end(), [](double m) { return !std::isfinite(m); });
    double coef = 1.0;
    if (clip_) coef = clip_coefficient(*norms, nonfinite);  // the verdicts ride in its collective
    else if (check) nonfinite = nonfinite_anywhere(nonfinite);
    if (nonfinite) {  // skipped on every rank: nothing stepped, nothing counted but the skip
      ++skipped_steps_;
      return;
    }
    if (clip_ && clip_->error_if_nonfinite && !std::isfinite(*last_grad_norm_))
      throw Error("step(): the total norm of order " + detail::fmt(clip_->norm_type) + " of the gradients is " +
                  detail::fmt(*last_grad_norm_) +
                  ", so it cannot be clipped (clip_grad_norm(error_if_nonfinite=true)); nothing was stepped, and the "
                  "gradients of plain tensors under reducing layouts hold their reduced values");
    std::vector<double> factors;
    if constexpr (num_tensor_sums > 0) factors = tensor_factors(next, coef);
    detail::for_each_lane(lanes_, [&](auto& lane) {
      using T = typename std::decay_t<decltype(lane)>::value_type;
      step_lane(lane, next, Clipped<T>{true, static_cast<T>(coef)}, factors);
    });
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad_present) continue;
    ++params_[i].step;
    params_[i].scalar_state = std::move(next[i]);
  }
}

// The scalar state each parameter whose gradient is present has after this step: Algo's
// advance_scalar_state from its state (its initial values at the first step). Nothing for
// algorithms without one.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::vector<std::vector<double>> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::advanced_scalar_state() const {
  std::vector<std::vector<double>> next(params_.size());
  if constexpr (num_scalar_states > 0) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      if (!p.grad_present) continue;
      const options_type& o = groups_[p.group].options;
      next[i] = p.step > 0 ? p.scalar_state : detail::initial_scalar_state_of<Algo>(o);
      detail::advance_scalar_state_of<Algo>(o, p.step + 1, next[i]);
    }
  }
  return next;
}

// Clipping (collective): the pieces of every lane's norms (reduce_lane) completed over the ranks,
// and the total norm (last_grad_norm_) as torch's clip_grad_norm_: each present tensor's norm in its dtype, the norm of those in float32
// if every one is float32 (else float64). Returns min(1, max_norm / (total + 1e-6)) in that dtype,
// computed as torch does (reciprocal, then the product). `nonfinite`, this rank's verdict on its
// gradients (skip_nonfinite), travels in the same collective and becomes whether any rank's is true.
template <class Algo, class Layout, class Comm, class ExecSpace>
double ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::clip_coefficient(detail::NormPieces& pieces, bool& nonfinite) {
  const ClipGradNorm c = *clip_;
  const bool max = pieces.order.is_max();
  const std::size_t n = params_.size(), ranks = static_cast<std::size_t>(comm_.size());
  std::vector<double> values;  // per parameter: its sum of |g|^p, or its largest |g|
  if (!max) {
    // The verdicts: one more sum, of one term per rank (1 where non-finite), completed with the norms.
    std::vector<std::int64_t> lengths(n + 1, static_cast<std::int64_t>(ranks));
    for (std::size_t i = 0; i < n; ++i) lengths[i] = numel_of(i);
    pieces.sums.add_run(n, comm_.rank(), comm_.rank() + 1, detail::ConstantTerm{nonfinite ? 1.0 : 0.0}, lengths[n]);
    before_collective();
    values = detail::complete_sums(comm_, pieces.sums, lengths);
    nonfinite = values[n] > 0;
    values.pop_back();
  } else if (ranks > 1) {
    // One all-gather of every rank's maxima and verdict; NaN wins, as in torch.
    pieces.maxima.push_back(nonfinite ? 1.0 : 0.0);
    std::vector<double> all((n + 1) * ranks);
    before_collective();
    comm_.all_gather(std::span<const double>(pieces.maxima), std::span<double>(all));
    values.assign(n, 0.0);
    nonfinite = false;
    for (std::size_t q = 0; q < ranks; ++q) {
      for (std::size_t i = 0; i < n; ++i) values[i] = math::maximum(values[i], all[q * (n + 1) + i]);
      nonfinite = nonfinite || all[q * (n + 1) + n] > 0;
    }
  } else {
    values = pieces.maxima;
  }
  const double p = c.norm_type;
  bool all_float = true;
  double acc = 0.0;  // sum of the tensors' norms^p, or their maximum
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad_present) continue;
    double norm = 0;  // the tensor's norm, in its dtype
    detail::visit_lane(params_[i].dtype, [&](auto t) {
      using T = typename decltype(t)::type;
      all_float = all_float && std::is_same_v<T, float>;
      norm = static_cast<T>(max ? values[i] : (p == 2.0 ? std::sqrt(values[i]) : (p == 1.0 ? values[i] : std::pow(values[i], 1.0 / p))));
    });
    if (max) acc = math::maximum(acc, norm);
    else acc += p == 2.0 ? norm * norm : (p == 1.0 ? norm : std::pow(norm, p));
  }
  const double total_d = max || p == 1.0 ? acc : (p == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / p));
  auto coefficient = [&](auto total) {
    using U = decltype(total);
    last_grad_norm_ = static_cast<double>(total);
    const U coef = (U(1) / (total + U(1e-6))) * static_cast<U>(c.max_norm);
    return static_cast<double>(coef > U(1) ? U(1) : coef);  // NaN stays NaN
  };
  return all_float ? coefficient(static_cast<float>(total_d)) : coefficient(total_d);
}

// skip_nonfinite without clipping (collective unless alone): whether any rank's verdict is true.
template <class Algo, class Layout, class Comm, class ExecSpace>
bool ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::nonfinite_anywhere(bool mine) {
  if (comm_.size() == 1) return mine;
  std::int64_t any = mine ? 1 : 0;
  before_collective();
  comm_.all_reduce(std::span<std::int64_t>(&any, 1), ReduceOp::max);
  return any != 0;
}

// The reduction first, for the element type T: each bucket packed, reduced and its reduced window
// (averaged) copied back into the gradients it steps; with `pieces` (clipping), the pieces of the
// norms of what this rank counts (each element on exactly one rank), the gradients stepped in
// place included (like writes(): a shard by its holder, a whole tensor by rank 0); with `check`
// (skip_nonfinite), the largest |g| of each tensor over every element this rank steps (or, under
// the all-reduce, the same bits as another rank steps), the gradients stepped in place all included.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::reduce_lane(Lane<T>& plan, detail::NormPieces* pieces, detail::NormPieces* check,
                                                                   T unscale) {
  const int p = comm_.size(), me = comm_.rank();
  const bool parted = strategy() == Strategy::partitioned;
  const T divisor = Layout::reduction == Reduction::mean ? static_cast<T>(p) : T(1);
  const std::int64_t max_leaves = bucket_elements<T>() / detail::sum_block;
  std::vector<detail::NormRun<T>> runs;
  const std::size_t nb = plan.layout.buckets.size();
  // 16-bit parameters: their reduced gradients in float32, where their state is (see Lane::grad32).
  const bool any16 = std::any_of(params_.begin(), params_.end(), [&](const Param& q) { return in_lane<T>(q) && has_master(q); });
  if (any16 && plan.grad32.size() == 0 && plan.layout.state_size > 0) {
    plan.grad32 = Kokkos::View<T*, memory_space>(Kokkos::view_alloc(Kokkos::WithoutInitializing, "shardopt::grad32"),
                                                 static_cast<std::size_t>(plan.layout.state_size));
    restore_tables(plan);
  }
  // Where the reduced gradient of parameter `prm` is, from its element `src` (its state at `state_offset`).
  auto reduced_grad = [&](const Param& prm, std::int64_t src, std::int64_t state_offset) -> const T* {
    return has_master(prm) ? plan.grad32.data() + state_offset : static_cast<const T*>(prm.pieces[0].grad) + src;
  };
  auto width = [&](std::size_t b) { return static_cast<std::size_t>(plan.layout.buckets[b].width); };
  auto buffer = [&](std::size_t b) { return plan.bucket[b % plan.depth].data(); };
  auto send = [&](std::size_t b) { return std::span<const T>(buffer(b), width(b) * (parted ? p : 1)); };
  auto recv = [&](std::size_t b) { return std::span<T>(parted ? plan.reduced[b % plan.depth].data() : buffer(b), width(b)); };
  // Bucket b reduced: its reduced window (averaged) into the gradients, and the pieces of its norms:
  // all of this rank's window, or under the all-reduce (every rank holds the same bits of all of
  // it) the rank's P-th of the bucket.
  auto reduced = [&](std::size_t b) {
    detail::copy_runs(exec_, plan.tables[b].restore, divisor, unscale);
    if (!pieces && !check) return;
    const auto w = static_cast<std::int64_t>(width(b));
    const std::int64_t lo = parted ? 0 : w * me / p, hi = parted ? w : w * (me + 1) / p;
    for (const auto& u : plan.layout.buckets[b].update) {
      const auto& prm = params_[u.param];
      const std::int64_t a = std::max(u.at, lo) - u.at, e = std::min(u.at + u.length, hi) - u.at;  // within u
      if (!prm.grad_present || a >= e) continue;
      runs.push_back({reduced_grad(prm, u.src + a, u.state_offset + a), u.src + a, u.src + e, prm.numel(), u.param, 0});
    }
    if (pieces) detail::norm_pieces(exec_, runs, plan.norm, *pieces, max_leaves);
    if (check) detail::norm_pieces(exec_, runs, plan.norm, *check, max_leaves);
    runs.clear();
  };
  if constexpr (can_start) {
    // Bucket b + 1 packed and its reduction started before bucket b's norms are taken (two buffers).
    using Request = decltype(comm_.start_all_gather(std::span<const T>(), std::span<T>()));
    std::array<Request, 2> reducing;
    auto start = [&](std::size_t b) {
      detail::copy_runs(exec_, plan.tables[b].pack);
      before_collective();
      if (parted) reducing[b % 2] = comm_.start_reduce_scatter(send(b), recv(b), ReduceOp::sum);
      else reducing[b % 2] = comm_.start_all_reduce(recv(b), ReduceOp::sum);
    };
    if (nb > 0) start(0);
    for (std::size_t b = 0; b < nb; ++b) {
      if (b + 1 < nb) start(b + 1);
      reducing[b % 2].wait();
      reduced(b);
    }
  } else {
    for (std::size_t b = 0; b < nb; ++b) {
      detail::copy_runs(exec_, plan.tables[b].pack);
      before_collective();
      if (parted) comm_.reduce_scatter(send(b), recv(b), ReduceOp::sum);
      else comm_.all_reduce(recv(b), ReduceOp::sum);
      reduced(b);
    }
  }
  // The runs stepped in place: 16-bit gradients widened (and unscaled) into grad32, the others
  // unscaled in place (torch's unscale_); then for the norms those this rank counts, for the check all of them.
  using Copy = typename detail::CopyTable<T, execution_space, memory_space>::Run;
  std::vector<Copy> widened, scaled;
  std::vector<detail::NormRun<T>> counted;
  for (const auto& r : plan.layout.state_runs) {
    const auto& prm = params_[r.param];
    if (r.packed || !prm.grad_present) continue;
    const bool counts = writes(r.param, r);
    void* grad = prm.pieces[r.piece].grad;
    if (has_master(prm))
      widened.push_back({plan.grad32.data() + r.state_offset, grad, static_cast<std::size_t>(r.length), detail::Storage::lane,
                         detail::storage_of(prm.dtype)});
    else if (unscale != T(1))
      scaled.push_back({grad, nullptr, static_cast<std::size_t>(r.length)});
    const T* g = has_master(prm) ? plan.grad32.data() + r.state_offset : static_cast<const T*>(grad);
    for (const auto& [global, within, length] : segments(r.param, r)) {
      const detail::NormRun<T> run{g + within, global, global + length, prm.numel(), r.param, 0};
      runs.push_back(run);
      if (counts) counted.push_back(run);
    }
  }
  plan.widen.assign(exec_, std::move(widened));
  detail::copy_runs(exec_, plan.widen, T(1), unscale);
  plan.unscale.assign(exec_, std::move(scaled));
  detail::scale_runs(exec_, plan.unscale, unscale);
  if (!pieces && !check) return;
  if (pieces) detail::norm_pieces(exec_, counted, plan.norm, *pieces, max_leaves);
  if (check) detail::norm_pieces(exec_, runs, plan.norm, *check, max_leaves);
}

// Pass 1 of an algorithm with per-tensor sums (collective): Algo::accumulate over every element
// each lane steps, the sums completed over the ranks (every rank's pieces; where ranks step the
// same elements, the lowest rank's count), and each present tensor's factor (Algo::tensor_factor,
// a value of its dtype), 1 for the others. Whole tensors stepped in place (Replicated, or one
// process) are each rank's own: their sums are this rank's, nothing communicated.
template <class Algo, class Layout, class Comm, class ExecSpace>
std::vector<double> ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::tensor_factors(const std::vector<std::vector<double>>& next,
                                                                                     double coef) {
  constexpr std::size_t K = num_tensor_sums;
  detail::SumPieces sums, own;  // own: whole tensors stepped in place
  detail::for_each_lane(lanes_, [&](auto& lane) {
    using T = typename std::decay_t<decltype(lane)>::value_type;
    accumulate_lane(lane, next, Clipped<T>{true, static_cast<T>(coef)}, sums, own);
  });
  std::vector<std::int64_t> lengths(params_.size() * K);
  for (std::size_t i = 0; i < lengths.size(); ++i) lengths[i] = numel_of(i / K);
  before_collective();
  const std::vector<double> values = detail::complete_sums(comm_, sums, lengths);
  const std::vector<double> own_values = detail::complete_sums_from({own.data()}, lengths);
  std::vector<double> factors(params_.size(), 1.0);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad_present) continue;
    const double* v = (own_sums(i) ? own_values : values).data() + i * K;
    detail::visit_lane(params_[i].dtype, [&](auto t) {
      using T = typename decltype(t)::type;
      factors[i] = static_cast<double>(static_cast<T>(Algo::template tensor_factor<T>(groups_[params_[i].group].options, std::span<const double>(v, K))));
    });
  }
  return factors;
}

// Pass 1 for the element type T: every element this rank steps (its packed windows, its local runs),
// from the reduced gradients in their memory, into `sums` (sum K * i + k of parameter i), or `own`
// for whole tensors stepped in place (own_sums).
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::accumulate_lane(Lane<T>& plan, const std::vector<std::vector<double>>& next,
                                                                      Clipped<T> clipped, detail::SumPieces& sums, detail::SumPieces& own) {
  if constexpr (num_tensor_sums > 0 && valid_) {
    init_state(plan);
    const std::vector<double> no_factors;
    SegmentTable<T> segment{*this, plan, next, clipped, no_factors};
    std::vector<detail::SumRun<T, num_slots>> runs;
    for (const auto& bk : plan.layout.buckets)
      for (const auto& u : bk.update) {
        const auto& prm = params_[u.param];
        if (!prm.grad_present) continue;
        auto s = segment(prm, u.state_offset, static_cast<std::size_t>(u.length));
        segment.place(s, prm, prm.pieces[0], u.src, u.state_offset);
        runs.push_back({s, u.src, u.src + u.length, prm.numel(), u.param, 0});
      }
    for (const auto& r : plan.layout.state_runs) {
      const auto& prm = params_[r.param];
      if (r.packed || !prm.grad_present) continue;
      for (const auto& [global, within, length] : segments(r.param, r)) {
        auto s = segment(prm, r.state_offset + within, static_cast<std::size_t>(length));
        segment.place(s, prm, prm.pieces[r.piece], within, r.state_offset + within);
        runs.push_back({s, global, global + length, prm.numel(), r.param, 0});
      }
    }
    // The runs of whole tensors stepped in place into `own`, the others into `sums`.
    std::vector<detail::SumRun<T, num_slots>> own_runs;
    std::erase_if(runs, [&](const auto& r) {
      if (!own_sums(r.param)) return false;
      own_runs.push_back(r);
      return true;
    });
    const std::int64_t max_leaves = bucket_elements<T>() / detail::sum_block;
    detail::accumulate_pieces<Algo, num_tensor_sums>(exec_, runs, segment.scalars, plan.accumulate, sums, max_leaves);
    detail::accumulate_pieces<Algo, num_tensor_sums>(exec_, own_runs, segment.scalars, plan.accumulate, own, max_leaves);
  }
}

// The segments of one step of the element type T and their scalars: the scalars of each (group,
// step, scalar state) triple computed once (parameters usually share all three, a scalar state by
// its bits), a segment's index into them, its clipping coefficient and its tensor's factor.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
struct ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::SegmentTable {
  using Key = std::tuple<std::size_t, std::int64_t, std::vector<std::uint64_t>>;
  const ShardedOptimizer& opt;
  const Lane<T>& plan;
  const std::vector<std::vector<double>>& next;  // each parameter's scalar state after the step
  Clipped<T> clipped;
  const std::vector<double>& factors;  // per parameter; empty: 1
  std::vector<Scalars<T>> scalars;
  std::map<Key, unsigned> index;
  Key last_key{SIZE_MAX, -1, {}};
  unsigned last = 0;

  SegmentTable(const ShardedOptimizer& o, const Lane<T>& l, const std::vector<std::vector<double>>& n, Clipped<T> c,
               const std::vector<double>& f)
      : opt(o), plan(l), next(n), clipped(c), factors(f) {}

  // A segment of `length` elements of `prm` whose state is at `state_offset` (parameter and
  // gradient pointers left to the caller).
  detail::Segment<T, num_slots> operator()(const Param& prm, std::int64_t state_offset, std::size_t length) {
    detail::Segment<T, num_slots> s{};
    s.size = length;
    const auto i = static_cast<std::size_t>(&prm - opt.params_.data());
    const std::vector<double>& state = next[i];
    const auto& last_bits = std::get<2>(last_key);
    const bool same = prm.group == std::get<0>(last_key) && prm.step == std::get<1>(last_key) && state.size() == last_bits.size() &&
                      (state.empty() || std::memcmp(state.data(), last_bits.data(), state.size() * sizeof(double)) == 0);
    if (!same) {  // the key (with a copy of the state's bits) is built only when it changes
      Key key{prm.group, prm.step, std::vector<std::uint64_t>(state.size())};
      if (!state.empty()) std::memcpy(std::get<2>(key).data(), state.data(), state.size() * sizeof(double));
      auto [it, added] = index.try_emplace(key, static_cast<unsigned>(scalars.size()));
      if (added) scalars.push_back(detail::prepare_step<Algo, T>(opt.groups_[prm.group].options, prm.step + 1, state));
      last = it->second;
      last_key = std::move(key);
    }
    s.scalars = last;
    s.grad_divisor = T(1);
    s.grad_scale = clipped.scale;
    s.factor = factors.empty() ? T(1) : static_cast<T>(factors[i]);
    for (std::size_t k = 0; k < num_slots; ++k) s.slot[k] = plan.state[k].size() ? plan.state[k].data() + state_offset : nullptr;
    return s;
  }
  // Points `s` at elements [at, at + s.size) of piece `pc` of `prm`: the parameter and its gradient
  // in their memory; for a 16-bit parameter, its master weights (at `state_offset`, like its state)
  // stepped from its 16-bit gradient (or, reduced first, its float32 one in grad32) and rounded
  // into its 16-bit memory.
  void place(detail::Segment<T, num_slots>& s, const Param& prm, const detail::Piece& pc, std::int64_t at, std::int64_t state_offset) const {
    if (has_master(prm)) {
      s.param = plan.state[master_slot].data() + state_offset;
      s.grad = clipped.pre_reduced ? plan.grad32.data() + state_offset : nullptr;  // reduced there by reduce_lane
      s.grad16 = clipped.pre_reduced ? nullptr : element<T>(prm, pc.grad, at);
      s.out16 = element<T>(prm, pc.value, at);
      s.storage = detail::storage_of(prm.dtype);
    } else {
      s.param = static_cast<T*>(pc.value) + at;
      s.grad = static_cast<const T*>(pc.grad) + at;
    }
  }
};

// One step of the element type T: each bucket in turn (pack, reduce, update, and under a
// partitioned strategy the all-gather and unpack), then the runs stepped in place in one launch.
template <class Algo, class Layout, class Comm, class ExecSpace>
template <class T>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::step_lane(Lane<T>& plan, const std::vector<std::vector<double>>& next,
                                                                 Clipped<T> clipped, const std::vector<double>& factors) {
  init_state(plan);
  SegmentTable<T> segment{*this, plan, next, clipped, factors};
  const auto& scalars = segment.scalars;
  std::vector<detail::Segment<T, num_slots>> segs;
  for (const auto& r : plan.layout.state_runs) {
    const auto& prm = params_[r.param];
    if (r.packed || !prm.grad_present) continue;
    auto s = segment(prm, r.state_offset, static_cast<std::size_t>(r.length));
    segment.place(s, prm, prm.pieces[r.piece], 0, r.state_offset);
    segs.push_back(s);
  }
  // This rank's scalars are all known before the first launch (the packed parameters' are added
  // here, in state order), so every launch gets the same table.
  for (const auto& r : plan.layout.state_runs)
    if (r.packed && params_[r.param].grad_present) segment(params_[r.param], 0, 0);
  std::vector<detail::Segment<T, num_slots>> local = std::move(segs);
  segs.clear();
  const int p = comm_.size(), me = comm_.rank();
  const bool parted = strategy() == Strategy::partitioned;
  const T divisor = Layout::reduction == Reduction::mean ? static_cast<T>(p) : T(1);
  const std::size_t nb = plan.layout.buckets.size();
  auto buffer = [&](std::size_t b) { return plan.bucket[b % plan.depth].data(); };
  auto reduced = [&](std::size_t b) { return parted ? plan.reduced[b % plan.depth].data() : buffer(b); };
  auto width = [&](std::size_t b) { return static_cast<std::size_t>(plan.layout.buckets[b].width); };
  // Steps this rank's elements of bucket b once it is reduced, writing them also into this rank's
  // window of the buffer for the all-gather (with the parameters of absent gradients).
  auto update = [&](std::size_t b) {
    T* mine = parted ? buffer(b) + me * width(b) : nullptr;
    using Run = typename detail::CopyTable<T, execution_space, memory_space>::Run;
    std::vector<Run> absent;  // not stepped, but the all-gather still carries this rank's part of it
    for (const auto& u : plan.layout.buckets[b].update) {
      const auto& prm = params_[u.param];
      if (!prm.grad_present) {
        if (parted)
          absent.push_back({mine + u.at, element<T>(prm, prm.pieces[0].value, u.src), static_cast<std::size_t>(u.length),
                            detail::Storage::lane, detail::storage_of(prm.dtype)});
        continue;
      }
      auto s = segment(prm, u.state_offset, static_cast<std::size_t>(u.length));
      segment.place(s, prm, prm.pieces[0], u.src, u.state_offset);  // the gradient reduced and averaged there by reduce_lane
      if (!clipped.pre_reduced) {  // or from the bucket
        s.grad = reduced(b) + u.at;
        s.grad16 = nullptr;
        s.grad_divisor = divisor;
      }
      s.mirror = parted ? mine + u.at : nullptr;
      segs.push_back(s);
    }
    detail::fused_update<Algo>(exec_, std::move(segs), std::vector<Scalars<T>>(scalars), plan.tables[b].workspace);
    segs.clear();
    if (!parted) return;
    plan.tables[b].absent.assign(exec_, std::move(absent));
    detail::copy_runs(exec_, plan.tables[b].absent);
  };
  // The runs stepped in place, after the buckets: a collective that fails leaves them unchanged.
  auto step_local = [&](std::vector<detail::Segment<T, num_slots>>& l) {
    detail::fused_update<Algo>(exec_, std::move(l), std::vector<Scalars<T>>(scalars), plan.local);
  };
  auto reduce_span = [&](std::size_t b) { return std::span<T>(buffer(b), width(b) * (parted ? p : 1)); };
  auto gather_spans = [&](std::size_t b) {
    return std::pair{std::span<const T>(buffer(b) + me * width(b), width(b)), std::span<T>(buffer(b), width(b) * p)};
  };
  if constexpr (can_start) {
    // Pipelined: bucket b + 1 is packed and its reduction started before bucket b is stepped,
    // and bucket b's all-gather runs while bucket b + 1 is reduced and stepped (two buffers).
    using Request = decltype(comm_.start_all_gather(std::span<const T>(), std::span<T>()));
    std::array<Request, 2> reducing, gathering;
    auto start = [&](std::size_t b) {
      if (clipped.pre_reduced) return;
      detail::copy_runs(exec_, plan.tables[b].pack);
      before_collective();
      if (parted)
        reducing[b % 2] = comm_.start_reduce_scatter(std::span<const T>(reduce_span(b)), std::span<T>(reduced(b), width(b)), ReduceOp::sum);
      else
        reducing[b % 2] = comm_.start_all_reduce(reduce_span(b), ReduceOp::sum);
    };
    auto finish = [&](std::size_t b) {
      if (!parted) return;
      gathering[b % 2].wait();
      detail::copy_runs(exec_, plan.tables[b].unpack);
    };
    if (nb > 0) start(0);
    for (std::size_t b = 0; b < nb; ++b) {
      if (b + 1 < nb) {
        if (b >= 1) finish(b - 1);  // frees the buffer bucket b + 1 packs into
        start(b + 1);
      }
      if (!clipped.pre_reduced) reducing[b % 2].wait();
      update(b);
      if (!parted) continue;
      before_collective();
      const auto [send, recv] = gather_spans(b);
      gathering[b % 2] = comm_.start_all_gather(send, recv);
    }
    if (nb >= 2) finish(nb - 2);
    if (nb >= 1) finish(nb - 1);
    step_local(local);
  } else {
    // One bucket at a time, with the Comm's blocking collectives.
    for (std::size_t b = 0; b < nb; ++b) {
      if (!clipped.pre_reduced) {
        detail::copy_runs(exec_, plan.tables[b].pack);
        before_collective();
        if (parted) comm_.reduce_scatter(std::span<const T>(reduce_span(b)), std::span<T>(reduced(b), width(b)), ReduceOp::sum);
        else comm_.all_reduce(reduce_span(b), ReduceOp::sum);
      }
      update(b);
      if (!parted) continue;
      before_collective();
      const auto [send, recv] = gather_spans(b);
      comm_.all_gather(send, recv);
      detail::copy_runs(exec_, plan.tables[b].unpack);
    }
    step_local(local);
  }
}

}  // namespace shardopt
