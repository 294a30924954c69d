// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief ShardedOptimizer: registration (add_param, the memory check, gradient presence) and option
/// validation.
/// Part of shardopt/sharded_optimizer.hpp, which declares these members and includes this file.

#include <shardopt/sharded_optimizer.hpp>

namespace shardopt {

template <class Algo, class Layout, class Comm, class ExecSpace>
template <class PView, class GView>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::add_param(const std::string& name, const PView& param, const GView& grad, int group) {
  require_live("add_param");
  static_assert(Kokkos::is_view<PView>::value && Kokkos::is_view<GView>::value,
                "ShardedOptimizer::add_param: the parameter and its gradient must be Kokkos views.");
  using U = typename PView::non_const_value_type;  // the views' type; T, the type it is stepped as
  using T = detail::element_t<U>;
  static_assert(detail::is_element_type<T>,
                "ShardedOptimizer::add_param: the parameter's element type must be float, double, shardopt::bfloat16, "
                "shardopt::float16 or a type declared the same bits as one of the last two (shardopt::element_alias).");
  static_assert(std::is_same_v<typename PView::value_type, U> && std::is_same_v<typename GView::value_type, U>,
                "ShardedOptimizer::add_param: the parameter and its gradient must be non-const views of the same "
                "element type.");
  static_assert(PView::rank >= 1 && PView::rank <= 4 && std::size_t(GView::rank) == std::size_t(PView::rank),
                "ShardedOptimizer::add_param: the parameter and its gradient must be views of the same rank, 1 to 4.");
  static_assert(std::is_same_v<typename PView::array_layout, typename GView::array_layout>,
                "ShardedOptimizer::add_param: the parameter and its gradient must have the same array layout.");
  static_assert(can_access<typename PView::memory_space> && can_access<typename GView::memory_space>,
                "ShardedOptimizer::add_param: the views must live in memory the optimizer's execution space can access.");
  const std::string where = "add_param(" + detail::quote(name) + "): ";
  check_new_name(name, group);
  std::vector<std::int64_t> shape, gshape;
  for (unsigned d = 0; d < PView::rank; ++d) {
    shape.push_back(static_cast<std::int64_t>(param.extent(d)));
    gshape.push_back(static_cast<std::int64_t>(grad.extent(d)));
  }
  if (shape != gshape)
    throw InvalidArgument(where + "the gradient's shape " + detail::fmt_shape(gshape) + " differs from the parameter's shape " +
                          detail::fmt_shape(shape));
  if (!param.span_is_contiguous() || !grad.span_is_contiguous())
    throw InvalidArgument(where + "the " + std::string(param.span_is_contiguous() ? "gradient" : "parameter") +
                          " view is not contiguous");
  if (param.size() > 0 && param.data() == grad.data())
    throw InvalidArgument(where + "the gradient view is the parameter view itself");
  if (!detail::row_major(param) || !detail::row_major(grad))
    throw InvalidArgument(where + "the " + std::string(detail::row_major(param) ? "gradient" : "parameter") +
                          " view is not in row-major order (e.g. LayoutLeft): shardopt keeps the optimizer state, state "
                          "dicts and checkpoints in a tensor's logical row-major order, as torch does, so it steps views "
                          "whose memory is in that order; use Kokkos::LayoutRight (Kokkos' default for views of rank 2 "
                          "and more on CUDA and HIP is LayoutLeft)");
  Param p;
  p.name = name;
  p.group = static_cast<std::size_t>(group);
  p.dtype = detail::dtype_of<T>();
  p.shape = shape;
  p.keepalive = std::make_shared<std::pair<PView, GView>>(param, grad);
  p.pieces.push_back(detail::Piece{param.data(), grad.data(), param.size(), ShardMetadata{std::vector<std::int64_t>(shape.size(), 0), shape, comm_.rank()}});
  commit_param(std::move(p));
}

template <class Algo, class Layout, class Comm, class ExecSpace>
template <class U, class MS>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::add_param(const std::string& name, const ShardedTensor<U, MS>& tensor, int group) {
  require_live("add_param");
  using T = detail::element_t<U>;  // the type it is stepped as
  static_assert(detail::is_element_type<T>,
                "ShardedOptimizer::add_param: the sharded tensor's element type must be float, double, shardopt::bfloat16, "
                "shardopt::float16 or a type declared the same bits as one of the last two (shardopt::element_alias).");
  static_assert(can_access<MS>,
                "ShardedOptimizer::add_param: the shards must live in memory the optimizer's execution space can access.");
  const std::string where = "add_param(" + detail::quote(name) + "): ";
  check_new_name(name, group);
  try {
    detail::validate_tiling(tensor.shape(), tensor.shards_metadata(), comm_.size());
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(where + e.what());
  }
  Param p;
  p.name = name;
  p.group = static_cast<std::size_t>(group);
  p.dtype = detail::dtype_of<T>();
  p.shape = tensor.shape();
  p.shards = tensor.shards_metadata();
  p.keepalive = std::make_shared<std::vector<typename ShardedTensor<U, MS>::Shard>>(tensor.local_shards());
  std::size_t mine = 0;
  for (const auto& m : p.shards) mine += m.rank == comm_.rank();
  if (mine != tensor.local_shards().size())
    throw InvalidArgument(where + "this rank holds " + std::to_string(tensor.local_shards().size()) +
                          " shard(s) but the metadata places " + std::to_string(mine) + " on rank " +
                          std::to_string(comm_.rank()) + ": the tensor was sharded for another communicator");
  for (const auto& s : tensor.local_shards()) {
    if (s.metadata.rank != comm_.rank() || s.value.size() != static_cast<std::size_t>(s.metadata.numel()) ||
        s.grad.size() != s.value.size())
      throw InvalidArgument(where + "local shard (" + detail::describe(s.metadata) +
                            ") does not match its metadata on rank " + std::to_string(comm_.rank()));
    p.pieces.push_back(detail::Piece{s.value.data(), s.grad.data(), s.value.size(), s.metadata});
  }
  commit_param(std::move(p));
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::zero_grad(bool set_to_none) {
  require_live("zero_grad");
  // One launch per element type, however many tensors: each lane's table of every gradient, built
  // again when parameters were added (registration only appends).
  detail::for_each_lane(lanes_, [&](auto& lane) {
    using T = typename std::decay_t<decltype(lane)>::value_type;
    if (lane.zero_of != params_.size()) {
      std::vector<typename detail::CopyTable<T, execution_space, memory_space>::Run> runs;
      for (const auto& p : params_)
        if (in_lane<T>(p))
          for (const auto& pc : p.pieces) runs.push_back({pc.grad, nullptr, pc.numel, detail::storage_of(p.dtype), detail::Storage::lane});
      lane.zero.assign(exec_, std::move(runs));
      lane.zero_of = params_.size();
    }
    detail::copy_runs(exec_, lane.zero);
  });
  for (auto& p : params_) p.grad_present = !set_to_none;
  exec_.fence();
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::check_new_name(const std::string& name, int group) const {
  const std::string where = "add_param(" + detail::quote(name) + "): ";
  if (name.empty() || name.find_first_of(" \n") != std::string::npos)
    throw InvalidArgument(where + "a parameter name must be non-empty and contain no spaces or newlines");
  if (index_.count(name)) throw InvalidArgument(where + "a parameter of that name is already registered");
  if (group < 0 || group >= static_cast<int>(groups_.size()))
    throw InvalidArgument(where + "unknown param group " + std::to_string(group) + " (the optimizer has " +
                          std::to_string(groups_.size()) + " group(s): 0 to " + std::to_string(groups_.size() - 1) + ")");
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::commit_param(Param&& p) {
  const auto ranges = detail::memory_ranges(p, params_.size());
  memory_.check(ranges, "add_param(" + detail::quote(p.name) + "): ",
                [&](std::size_t i) { return i < params_.size() ? params_[i].name : std::string(); });
  // Room first (growing geometrically: registration stays linear), so that no push_back below throws.
  auto room = [](auto& v) {
    if (v.size() == v.capacity()) v.reserve(std::max<std::size_t>(8, 2 * v.capacity()));
  };
  room(params_);
  room(groups_[p.group].params_);
  index_.emplace(p.name, params_.size());  // may throw: nothing changed yet
  try {
    memory_.insert(ranges);
  } catch (...) {
    index_.erase(p.name);
    throw;
  }
  groups_[p.group].params_.push_back(p.name);
  params_.push_back(std::move(p));
  registration_.clear();
  plans_valid_ = false;
}

template <class Algo, class Layout, class Comm, class ExecSpace>
std::size_t ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::index_of(const std::string& name, const char* call) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw InvalidArgument(std::string(call) + "(" + detail::quote(name) + "): no parameter of that name");
  return it->second;
}

template <class Algo, class Layout, class Comm, class ExecSpace>
std::size_t ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::slot_index(std::string_view slot, const std::string& where) const {
  for (std::size_t k = 0; k < all_slots; ++k)
    if (slot_name(k) == slot) return k;
  throw InvalidArgument(where + "no state slot " + detail::quote(slot) + " in " + std::string(Algo::name));
}

// Torch's checks of the algorithm, and every option finite: an infinite learning rate, say, would
// turn the parameters into NaN at once, and could not be written to a checkpoint (JSON has no inf).
template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::validate_options(const options_type& o) {
  Algo::validate(o);  // first: torch's words for what torch rejects
  for (const auto& [n, v] : option_values<Algo>(o))
    if (!std::isfinite(v)) throw InvalidArgument("option " + n + " is not finite (" + detail::fmt(v) + ")");
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::validate_groups() const {
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    try {
      validate_options(groups_[g].options);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("param group " + std::to_string(g) + ": " + e.what());
    }
  }
}

template <class Algo, class Layout, class Comm, class ExecSpace>
void ShardedOptimizer<Algo, Layout, Comm, ExecSpace>::check_absent_gradients() const {
  for (const auto& p : params_) {
    if (p.grad_present) continue;
    for (const auto& pc : p.pieces) {
      bool written = false;
      detail::visit_dtype(p.dtype, [&](auto t) {
        written = detail::any_nonzero(exec_, static_cast<const typename decltype(t)::type*>(pc.grad), pc.numel);
      });
      if (written)
        throw InvalidArgument("step(): the gradient of " + detail::quote(p.name) +
                              " holds non-zero values but is marked absent since zero_grad(set_to_none=true); call "
                              "mark_grad_present(" + detail::quote(p.name) + ") after writing it, or zero_grad(false)");
    }
  }
}

}  // namespace shardopt
