// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The small model the conformance checks step: whole tensors of awkward shapes in float and
/// double, one ShardedTensor, two param groups, deterministic inputs. Part of `<shardopt/testing.hpp>`.

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <shardopt/layout_support.hpp>
#include <shardopt/sharded_tensor.hpp>

namespace shardopt::testing::detail {

inline std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// A value in [-1, 1) determined by four integers.
inline double unit(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t d) {
  const std::uint64_t h = mix(a ^ mix(b ^ mix(c ^ mix(d))));
  return static_cast<double>(h >> 11) * 0x1.0p-52 - 1.0;
}

inline std::int64_t numel(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool is_double;
  int group;  // 0 or 1
};

// The whole tensors: prime and unit extents, ranks 1 to 3, both element types, both groups.
inline const std::vector<TensorSpec>& model_tensors() {
  static const std::vector<TensorSpec> t = {{"t0", {7, 5}, false, 0}, {"t1", {13}, false, 0},  {"t2", {1}, false, 0},
                                            {"t3", {3, 2, 4}, false, 1}, {"d0", {2, 3}, true, 0}, {"d1", {11}, true, 1}};
  return t;
}
// The ShardedTensor "s": float [5, 2] cut in rows over the ranks, in group 1 (tensor index 6 for inputs).
inline const std::vector<std::int64_t>& sharded_shape() {
  static const std::vector<std::int64_t> s = {5, 2};
  return s;
}
inline constexpr std::size_t sharded_key = 6;
inline constexpr const char* sharded_name = "s";

inline double initial_value(std::size_t t, std::int64_t i) { return unit(1, t, static_cast<std::uint64_t>(i), 0); }
// Gradient of tensor t at flat index i in step k on rank r (r < 0: the same on every rank); some are 0.
inline double gradient_value(std::size_t t, std::int64_t i, int k, int r) {
  if ((static_cast<std::uint64_t>(i) * 7 + static_cast<std::uint64_t>(k) * 3 + t) % 13 == 5) return 0.0;
  return unit(2, t, static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(k) * 1000 + static_cast<std::uint64_t>(r + 1));
}

template <class T, class View>
std::vector<T> to_host(const View& v) {
  std::vector<T> out(v.size());
  if (!out.empty())
    Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(out.data(), out.size()),
                      Kokkos::View<const T*, typename View::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(v.data(), v.size()));
  return out;
}
template <class T, class View>
void from_host(const View& v, const std::vector<T>& data) {
  if (!data.empty())
    Kokkos::deep_copy(Kokkos::View<T*, typename View::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(v.data(), v.size()),
                      Kokkos::View<const T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(data.data(), data.size()));
}

// Row-major flat index in `shape` of local element `local` of a shard.
inline std::int64_t global_index(const ShardMetadata& m, const std::vector<std::int64_t>& shape, std::int64_t local) {
  std::vector<std::int64_t> idx(shape.size());
  std::int64_t rem = local;
  for (std::size_t d = shape.size(); d-- > 0;) {
    const std::int64_t e = m.sizes[d] > 0 ? m.sizes[d] : 1;
    idx[d] = m.offsets[d] + rem % e;
    rem /= e;
  }
  std::int64_t g = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) g = g * shape[d] + idx[d];
  return g;
}

// What every layout must reproduce for whole tensor t in step k: the gradients of ranks 0..P-1
// combined in rank order (and divided by P for a mean), as one process would receive them.
template <class T>
std::vector<T> combined_gradient(std::size_t t, int k, int world, Reduction red) {
  const auto n = static_cast<std::size_t>(numel(model_tensors()[t].shape));
  std::vector<T> acc(n);
  for (std::size_t i = 0; i < n; ++i) acc[i] = T(gradient_value(t, static_cast<std::int64_t>(i), k, 0));
  for (int r = 1; r < world; ++r)
    for (std::size_t i = 0; i < n; ++i) acc[i] = acc[i] + T(gradient_value(t, static_cast<std::int64_t>(i), k, r));
  if (red == Reduction::mean)
    for (auto& a : acc) a = a / T(world);
  return acc;
}
template <class T>
std::vector<T> rank_gradient(std::size_t t, int k, int rank) {
  const auto n = static_cast<std::size_t>(numel(model_tensors()[t].shape));
  std::vector<T> g(n);
  for (std::size_t i = 0; i < n; ++i) g[i] = T(gradient_value(t, static_cast<std::int64_t>(i), k, rank));
  return g;
}

// The model's tensors on one process. Declare it before the optimizers it is registered in: they
// keep unmanaged views of its allocations.
template <class Comm>
class Model {
 public:
  // `sharded_as_whole`: register "s" as a whole tensor (for a one-process reference).
  Model(const Comm& comm, bool sharded_as_whole) {
    const auto& ts = model_tensors();
    for (std::size_t t = 0; t < ts.size(); ++t) {
      const auto n = static_cast<std::size_t>(numel(ts[t].shape));
      if (ts[t].is_double) {
        dv_.emplace_back(ts[t].name, n), dg_.emplace_back(ts[t].name + ".grad", n);
        fv_.emplace_back(), fg_.emplace_back();
        std::vector<double> init(n);
        for (std::size_t i = 0; i < n; ++i) init[i] = initial_value(t, static_cast<std::int64_t>(i));
        from_host(dv_.back(), init);
      } else {
        fv_.emplace_back(ts[t].name, n), fg_.emplace_back(ts[t].name + ".grad", n);
        dv_.emplace_back(), dg_.emplace_back();
        std::vector<float> init(n);
        for (std::size_t i = 0; i < n; ++i) init[i] = float(initial_value(t, static_cast<std::int64_t>(i)));
        from_host(fv_.back(), init);
      }
    }
    const auto& s = sharded_shape();
    if (sharded_as_whole) {
      sv_ = Kokkos::View<float*>("s", static_cast<std::size_t>(numel(s)));
      sg_ = Kokkos::View<float*>("s.grad", sv_.size());
      std::vector<float> init(sv_.size());
      for (std::size_t i = 0; i < init.size(); ++i) init[i] = float(initial_value(sharded_key, static_cast<std::int64_t>(i)));
      from_host(sv_, init);
    } else {
      sharded_.emplace(ShardedTensor<float>::chunk(comm, s, 0));
      for (auto& sh : sharded_->local_shards()) {
        std::vector<float> init(sh.value.size());
        for (std::size_t j = 0; j < init.size(); ++j)
          init[j] = float(initial_value(sharded_key, global_index(sh.metadata, s, static_cast<std::int64_t>(j))));
        from_host(sh.value, init);
      }
    }
  }

  // Registers every tensor: group 0 is the optimizer's first group, group 1 `second_group`.
  template <class Opt>
  void register_in(Opt& opt, int second_group) const {
    const auto& ts = model_tensors();
    for (std::size_t t = 0; t < ts.size(); ++t) {
      const int g = ts[t].group == 0 ? 0 : second_group;
      if (ts[t].is_double) add_whole(opt, ts[t].name, dv_[t], dg_[t], ts[t].shape, g);
      else add_whole(opt, ts[t].name, fv_[t], fg_[t], ts[t].shape, g);
    }
    if (sharded_) opt.add_param(sharded_name, *sharded_, second_group);
    else add_whole(opt, sharded_name, sv_, sg_, sharded_shape(), second_group);
  }

  // Gradients of step k: whole tensor t gets `whole(t)` (a std::vector of its element type); "s" the
  // gradient every rank shares.
  template <class Whole>
  void set_gradients(int k, Whole&& whole) {
    const auto& ts = model_tensors();
    for (std::size_t t = 0; t < ts.size(); ++t) {
      if (ts[t].is_double) from_host(dg_[t], whole.template operator()<double>(t));
      else from_host(fg_[t], whole.template operator()<float>(t));
    }
    const auto& s = sharded_shape();
    if (sharded_) {
      for (auto& sh : sharded_->local_shards()) {
        std::vector<float> g(sh.grad.size());
        for (std::size_t j = 0; j < g.size(); ++j)
          g[j] = float(gradient_value(sharded_key, global_index(sh.metadata, s, static_cast<std::int64_t>(j)), k, -1));
        from_host(sh.grad, g);
      }
    } else {
      std::vector<float> g(sg_.size());
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = float(gradient_value(sharded_key, static_cast<std::int64_t>(i), k, -1));
      from_host(sg_, g);
    }
  }

  // Copies every parameter's values from `o` (a model over the same communicator).
  void copy_params_from(const Model& o) {
    for (std::size_t t = 0; t < fv_.size(); ++t) {
      if (fv_[t].size()) Kokkos::deep_copy(fv_[t], o.fv_[t]);
      if (dv_[t].size()) Kokkos::deep_copy(dv_[t], o.dv_[t]);
    }
    if (sharded_)
      for (std::size_t j = 0; j < sharded_->local_shards().size(); ++j)
        Kokkos::deep_copy(sharded_->local_shards()[j].value, o.sharded_->local_shards()[j].value);
    else
      Kokkos::deep_copy(sv_, o.sv_);
  }

  template <class T>
  std::vector<T> whole_values(std::size_t t) const {
    if constexpr (std::is_same_v<T, double>) return to_host<double>(dv_[t]);
    else return to_host<float>(fv_[t]);
  }
  // "s" on this rank: (global flat index, value) of every element it holds.
  std::vector<std::pair<std::int64_t, float>> sharded_values() const {
    std::vector<std::pair<std::int64_t, float>> out;
    if (sharded_) {
      for (const auto& sh : sharded_->local_shards()) {
        const auto v = to_host<float>(sh.value);
        for (std::size_t j = 0; j < v.size(); ++j)
          out.emplace_back(global_index(sh.metadata, sharded_shape(), static_cast<std::int64_t>(j)), v[j]);
      }
    } else {
      const auto v = to_host<float>(sv_);
      for (std::size_t i = 0; i < v.size(); ++i) out.emplace_back(static_cast<std::int64_t>(i), v[i]);
    }
    return out;
  }

 private:
  template <class Opt, class T>
  static void add_whole(Opt& opt, const std::string& name, const Kokkos::View<T*>& v, const Kokkos::View<T*>& g,
                        const std::vector<std::int64_t>& s, int group) {
    using U = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
    const auto e = [&](std::size_t d) { return static_cast<std::size_t>(s[d]); };
    if (s.size() == 1) opt.add_param(name, v, g, group);
    else if (s.size() == 2)
      opt.add_param(name, Kokkos::View<T**, U>(v.data(), e(0), e(1)), Kokkos::View<T**, U>(g.data(), e(0), e(1)), group);
    else
      opt.add_param(name, Kokkos::View<T***, U>(v.data(), e(0), e(1), e(2)), Kokkos::View<T***, U>(g.data(), e(0), e(1), e(2)), group);
  }

  std::vector<Kokkos::View<float*>> fv_, fg_;
  std::vector<Kokkos::View<double*>> dv_, dg_;
  Kokkos::View<float*> sv_, sg_;
  std::optional<ShardedTensor<float>> sharded_;
};

}  // namespace shardopt::testing::detail
