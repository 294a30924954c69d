// SPDX-License-Identifier: BSD-3-Clause
// State dicts and checkpoints, run at world sizes 1 to 4: state keyed by names, loaded under any
// layout and world size (sub-communicators of every size stand in for other runs), validation that
// lists every problem and changes nothing, resuming bitwise, save -> load -> save byte-identical.
#include <boost/test/unit_test.hpp>

#include "device_like.hpp"
#include "support.hpp"

#include <sys/resource.h>

#include <bit>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace so = shardopt;
using so::comm::Mpi;
namespace layout = so::layout;

namespace {

using Layouts = std::tuple<layout::Replicated, layout::DataParallel, layout::FlatPartition, layout::ChunkRows, layout::ChunkCols>;

// A communicator of the first `size` ranks of the world (MPI_COMM_NULL elsewhere).
struct SubComm {
  MPI_Comm c = MPI_COMM_NULL;
  explicit SubComm(int size) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_split(MPI_COMM_WORLD, rank < size ? 0 : MPI_UNDEFINED, rank, &c);
  }
  ~SubComm() {
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
  }
  bool member() const { return c != MPI_COMM_NULL; }
};

int world_size() {
  int p = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}
int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A directory every rank sees, removed at the end.
struct TempDir {
  std::string path;
  TempDir() {
    std::string name(64, '\0');
    if (world_rank() == 0) {
      char tmpl[] = "/tmp/shardopt-ckpt-XXXXXX";
      name = mkdtemp(tmpl);
      name.resize(64, '\0');
    }
    MPI_Bcast(name.data(), 64, MPI_CHAR, 0, MPI_COMM_WORLD);
    path = name.c_str();
  }
  ~TempDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) std::filesystem::remove_all(path);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The parameters a, b, c and the shards of e of model `from` into model `to`.
template <class To, class From>
void copy_params(To& to, const From& from) {
  Kokkos::deep_copy(to.a, from.a);
  Kokkos::deep_copy(to.b, from.b);
  Kokkos::deep_copy(to.c, from.c);
  for (std::size_t i = 0; i < to.e.local_shards().size(); ++i) Kokkos::deep_copy(to.e.local_shards()[i].value, from.e.local_shards()[i].value);
}

// A model of whole tensors in float and double and one row-sharded tensor, with per-rank gradients,
// on `Device` (execution space, or Kokkos::Device) with communicator `C`.
template <class Layout, class Algo = so::algo::Adam, class Device = Kokkos::DefaultExecutionSpace, class C = Mpi>
struct Model {
  using Opt = so::ShardedOptimizer<Algo, Layout, C, Device>;
  using M = typename Device::memory_space;
  C comm;
  Kokkos::View<float**, M> a{"a", 7, 3}, ga{"ga", 7, 3};
  Kokkos::View<double*, M> b{"b", 5}, gb{"gb", 5};
  Kokkos::View<float***, M> c{"c", 2, 3, 2}, gc{"gc", 2, 3, 2};
  so::ShardedTensor<float, M> e;
  std::unique_ptr<Opt> opt;

  explicit Model(MPI_Comm mc, typename Algo::Options options = {.lr = 0.05, .weight_decay = 0.1, .amsgrad = true})
      : comm(mc), e(so::ShardedTensor<float, M>::chunk(comm, {6, 4}, 0)) {
    test::from_host(a, initial<float>(0, a.size()));
    test::from_host(b, initial<double>(1, b.size()));
    test::from_host(c, initial<float>(2, c.size()));
    for (auto& s : e.local_shards()) test::from_host(s.value, initial<float>(3, s.value.size(), s.metadata.offsets[0] * 4));
    opt = std::make_unique<Opt>(comm, options);
    opt->add_param("a", a, ga);
    opt->add_param("b", b, gb);
    int g = opt->add_param_group([](auto& o) { o.lr = 0.02; });
    opt->add_param("c", c, gc, g);
    opt->add_param("emb", e, g);
  }
  template <class T>
  static std::vector<T> initial(int t, std::size_t n, std::int64_t offset = 0) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = T(test::initial_value(t, offset + static_cast<std::int64_t>(i)));
    return v;
  }
  // Step k: whole tensors get per-rank gradients; the sharded tensor its global gradient.
  void step(int k) {
    const int r = comm.rank();
    test::from_host(ga, grads<float>(0 + 7 * r, ga.size(), k));
    test::from_host(gb, grads<double>(1 + 7 * r, gb.size(), k));
    test::from_host(gc, grads<float>(2 + 7 * r, gc.size(), k));
    for (auto& s : e.local_shards()) test::from_host(s.grad, grads<float>(3, s.grad.size(), k, s.metadata.offsets[0] * 4));
    opt->step();
  }
  // The parameters travel separately from the optimizer state, as in any training code.
  template <class Other>
  void copy_params_from(const Other& o) {
    copy_params(*this, o);
  }
  template <class T>
  static std::vector<T> grads(int t, std::size_t n, int k, std::int64_t offset = 0) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = T(test::gradient_value(t, offset + static_cast<std::int64_t>(i), k));
    return v;
  }
};

// Bitwise equality of two complete state dicts (values compared as bits of double).
void check_same(const so::StateDict& x, const so::StateDict& y, const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    BOOST_TEST(x.algorithm == y.algorithm);
    BOOST_REQUIRE(x.param_groups.size() == y.param_groups.size());
    for (std::size_t g = 0; g < x.param_groups.size(); ++g) {
      BOOST_TEST(x.param_groups[g].params == y.param_groups[g].params, boost::test_tools::per_element());
      BOOST_TEST((x.param_groups[g].options == y.param_groups[g].options));
    }
    BOOST_REQUIRE(x.state.size() == y.state.size());
    for (const auto& [name, ps] : x.state) {
      const auto& qs = y.state.at(name);
      BOOST_TEST(ps.step == qs.step, name);
      BOOST_TEST(ps.shape == qs.shape, boost::test_tools::per_element());
      BOOST_REQUIRE_MESSAGE(ps.slots.size() == qs.slots.size(), name);
      for (const auto& [slot, parts] : ps.slots) {
        const auto& other = qs.slots.at(slot);
        BOOST_REQUIRE(parts.size() == 1 && other.size() == 1);
        BOOST_REQUIRE(parts[0].values.size() == other[0].values.size());
        bool same = true;
        for (std::size_t i = 0; i < parts[0].values.size(); ++i)
          same = same && std::memcmp(&parts[0].values[i], &other[0].values[i], sizeof(double)) == 0;
        BOOST_TEST(same, name << "." << slot << " differs");
      }
      BOOST_REQUIRE_MESSAGE(ps.scalars.size() == qs.scalars.size(), name);
      for (const auto& [key, v] : ps.scalars)
        BOOST_TEST(std::memcmp(&v, &qs.scalars.at(key), sizeof(double)) == 0, name << "." << key << " differs");
    }
  }
}

// While alive, this process may not write files beyond `bytes` bytes (RLIMIT_FSIZE, SIGXFSZ ignored):
// its writes past that fail, as on a full disk or over a quota. Inactive where `on` is false.
struct FileSizeLimit {
  bool on;
  rlimit before{};
  void (*handler)(int) = SIG_DFL;
  FileSizeLimit(bool on_, rlim_t bytes) : on(on_) {
    if (!on) return;
    getrlimit(RLIMIT_FSIZE, &before);
    handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lower = before;
    lower.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lower);
  }
  ~FileSizeLimit() {
    if (!on) return;
    setrlimit(RLIMIT_FSIZE, &before);
    std::signal(SIGXFSZ, handler);
  }
};

// load_state_dict(sd) throws InvalidArgument holding every phrase, and the state stays `before`.
template <class Opt>
void expect_rejected(Opt& opt, const so::StateDict& sd, const std::vector<std::string>& phrases, const so::StateDict& before) {
  bool thrown = false;
  try {
    opt.load_state_dict(sd);
  } catch (const so::InvalidArgument& e) {
    thrown = true;
    for (const auto& p : phrases) BOOST_TEST(std::string(e.what()).find(p) != std::string::npos, "'" << p << "' not in: " << e.what());
  }
  BOOST_TEST(thrown);
  check_same(before, opt.full_state_dict(), "unchanged");
}

template <class F>
void for_each_layout(F&& f) {
  std::apply([&](auto... l) { (f(l), ...); }, Layouts{});
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint)

BOOST_AUTO_TEST_CASE(state_dict_is_keyed_by_names_and_holds_this_ranks_part) {
  Model<layout::FlatPartition> m(MPI_COMM_WORLD);
  for (int k = 1; k <= 3; ++k) m.step(k);
  const auto sd = m.opt->state_dict();
  BOOST_TEST(sd.algorithm == "Adam");
  BOOST_TEST(sd.param_groups.size() == 2u);
  BOOST_TEST(sd.param_groups[1].params == (std::vector<std::string>{"c", "emb"}), boost::test_tools::per_element());
  BOOST_TEST(sd.state.at("a").step == 3);
  BOOST_TEST(sd.state.at("a").dtype == "float32");
  BOOST_TEST(sd.state.at("b").dtype == "float64");
  BOOST_TEST(sd.state.at("a").shape == (std::vector<std::int64_t>{7, 3}), boost::test_tools::per_element());
  BOOST_TEST(sd.state.at("a").slots.size() == 3u);  // amsgrad: exp_avg, exp_avg_sq, max_exp_avg_sq
  // This rank's part of the flat buffer only; the full dict holds all of it.
  std::size_t held = 0;
  for (const auto& part : sd.state.at("a").slots.at("exp_avg")) held += part.values.size();
  BOOST_TEST(held <= 21u);
  BOOST_TEST(sd.complete() == (world_size() == 1));
  const auto full = m.opt->full_state_dict();
  BOOST_TEST(full.complete());
  // Rank r's part sits at its global offsets: compare with the full dict.
  for (const auto& [name, ps] : sd.state)
    for (const auto& [slot, parts] : ps.slots)
      for (const auto& part : parts)
        for (std::size_t i = 0; i < part.values.size(); ++i)
          BOOST_TEST(part.values[i] == full.state.at(name).slots.at(slot)[0].values[part.offset + i]);
}

// Every layout's state_dict() (parts on each rank) loads into every other layout at the same size,
// and the full state dict of rank 0 alone loads too (the others pass no parts).
BOOST_AUTO_TEST_CASE(load_state_dict_reshards_between_layouts) {
  for_each_layout([](auto from) {
    using From = decltype(from);
    Model<From> src(MPI_COMM_WORLD);
    for (int k = 1; k <= 3; ++k) src.step(k);
    const auto reference = src.opt->full_state_dict();
    const auto mine = src.opt->state_dict();
    Model<From> snapshot(MPI_COMM_WORLD);  // the parameters at step 3
    snapshot.copy_params_from(src);
    auto only_rank0 = reference;
    if (src.comm.rank() != 0)
      for (auto& [name, ps] : only_rank0.state)
        for (auto& [slot, parts] : ps.slots) parts.clear();
    for_each_layout([&](auto to) {
      using To = decltype(to);
      const std::string what = std::string(From::name) + " -> " + std::string(To::name);
      // Under Replicated each rank steps its whole tensors with its own gradient, so at P > 1 the
      // ranks' copies differ: the full dict (and a file) hold rank 0's, each rank's dict its own.
      const bool coherent = src.comm.size() == 1 || (!std::is_same_v<From, layout::Replicated> && !std::is_same_v<To, layout::Replicated>);
      Model<To> dst(MPI_COMM_WORLD);
      dst.opt->load_state_dict(mine);
      if (coherent || !std::is_same_v<From, layout::Replicated>) check_same(reference, dst.opt->full_state_dict(), what + " (parts)");
      Model<To> dst0(MPI_COMM_WORLD);
      dst0.opt->load_state_dict(only_rank0);
      check_same(reference, dst0.opt->full_state_dict(), what + " (rank 0's full dict)");
      // Loaded state steps on like the source.
      dst.copy_params_from(src);
      src.step(4);
      dst.step(4);
      if (coherent) check_same(src.opt->full_state_dict(), dst.opt->full_state_dict(), what + " (one more step)");
      src.opt->load_state_dict(reference);  // back to step 3 for the next target
      src.copy_params_from(snapshot);
    });
  });
}

// The re-sharding matrix through files: saved by s ranks under one layout, loaded by s' ranks under
// another, for every s, s' up to the world size.
BOOST_AUTO_TEST_CASE(files_reshard_across_world_sizes_and_layouts) {
  TempDir dir;
  const int w = world_size();
  int count = 0;
  for (int s = 1; s <= w; ++s) {
    SubComm sc(s);
    int li = 0;
    for_each_layout([&](auto from) {
      const std::string path = dir.path + "/s" + std::to_string(s) + "_" + std::to_string(li++) + ".safetensors";
      if (!sc.member()) return;
      Model<decltype(from)> m(sc.c);
      for (int k = 1; k <= 2; ++k) m.step(k);
      m.opt->save(path);
    });
  }
  // Gradients differ per rank, so each file has its own state: its reference is what one loader
  // (the world, Replicated) reads; file_holds_the_writers_state checks that against the writer.
  for (int s = 1; s <= w; ++s) {
    int li = 0;
    for_each_layout([&](auto from) {
      const std::string path = dir.path + "/s" + std::to_string(s) + "_" + std::to_string(li++) + ".safetensors";
      so::StateDict ref;
      {
        // Any loader gives the reference; use the world with Replicated.
        Model<layout::Replicated> r(MPI_COMM_WORLD);
        r.opt->load(path);
        ref = r.opt->full_state_dict();
      }
      for (int s2 = 1; s2 <= w; ++s2) {
        SubComm sc(s2);
        if (!sc.member()) continue;
        for_each_layout([&](auto to) {
          Model<decltype(to)> m(sc.c);
          m.opt->load(path);
          check_same(ref, m.opt->full_state_dict(),
                     "saved by " + std::to_string(s) + " ranks with " + std::string(decltype(from)::name) + ", loaded by " +
                         std::to_string(s2) + " with " + std::string(decltype(to)::name));
          ++count;
        });
      }
    });
  }
  BOOST_TEST_MESSAGE("re-sharding matrix: " << count << " loads on rank " << world_rank());
}

// The state a file holds equals the state of the run that wrote it, whatever the layout.
BOOST_AUTO_TEST_CASE(file_holds_the_writers_state) {
  TempDir dir;
  for_each_layout([&](auto l) {
    Model<decltype(l)> m(MPI_COMM_WORLD);
    for (int k = 1; k <= 2; ++k) m.step(k);
    m.opt->save(dir.path + "/x.safetensors");
    Model<layout::FlatPartition> r(MPI_COMM_WORLD);
    r.opt->load(dir.path + "/x.safetensors");
    check_same(m.opt->full_state_dict(), r.opt->full_state_dict(), std::string(decltype(l)::name));
  });
}

// N + M steps straight equal N steps, save, a fresh optimizer (another layout) loads, M steps; and
// save -> load -> save writes the same bytes.
BOOST_AUTO_TEST_CASE(resume_is_bitwise_and_save_is_reproducible) {
  TempDir dir;
  Model<layout::ChunkRows> straight(MPI_COMM_WORLD);
  Model<layout::ChunkRows> first(MPI_COMM_WORLD);
  for (int k = 1; k <= 6; ++k) straight.step(k);
  for (int k = 1; k <= 3; ++k) first.step(k);
  first.opt->save(dir.path + "/n.safetensors");
  Model<layout::FlatPartition> second(MPI_COMM_WORLD);
  second.copy_params_from(first);
  second.opt->load(dir.path + "/n.safetensors");
  BOOST_TEST(second.opt->step_count("a") == 3);
  BOOST_TEST(second.opt->param_groups()[1].options.lr == 0.02);
  for (int k = 4; k <= 6; ++k) second.step(k);
  check_same(straight.opt->full_state_dict(), second.opt->full_state_dict(), "resumed state");
  BOOST_TEST((test::to_host<float>(straight.a) == test::to_host<float>(second.a)));
  BOOST_TEST((test::to_host<double>(straight.b) == test::to_host<double>(second.b)));
  BOOST_TEST((test::to_host<float>(straight.c) == test::to_host<float>(second.c)));

  second.opt->save(dir.path + "/1.safetensors");
  Model<layout::DataParallel> third(MPI_COMM_WORLD);
  third.opt->load(dir.path + "/1.safetensors");
  third.opt->save(dir.path + "/2.safetensors");
  MPI_Barrier(MPI_COMM_WORLD);
  const auto one = read_file(dir.path + "/1.safetensors"), two = read_file(dir.path + "/2.safetensors");
  BOOST_TEST(one.size() > 0u);
  BOOST_TEST((one == two), "save -> load -> save changed the file");
  // No temporary files are left.
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 3u);
}

#if SHARDOPT_TEST_DEVICE_LIKE
// The device path (device_like.hpp) through state dicts and files: the same state as the host path,
// and a resume from either that continues with the same bits.
BOOST_AUTO_TEST_CASE(device_path_checkpoints_resume_bitwise) {
  using Device = Model<layout::FlatPartition, so::algo::Adam, test::OnDeviceLike, test::DeviceMpi>;
  test::guard::Scope guarded;  // host code touching device memory faults
  TempDir dir;
  Model<layout::ChunkRows> host(MPI_COMM_WORLD);
  Device dev(MPI_COMM_WORLD);
  for (int k = 1; k <= 3; ++k) {
    host.step(k);
    dev.step(k);
  }
  check_same(host.opt->full_state_dict(), dev.opt->full_state_dict(), "device path after 3 steps");
  dev.opt->save(dir.path + "/d.safetensors");
  Device from_file(MPI_COMM_WORLD), from_dict(MPI_COMM_WORLD);
  from_file.copy_params_from(dev);
  from_file.opt->load(dir.path + "/d.safetensors");
  from_dict.copy_params_from(dev);
  from_dict.opt->load_state_dict(host.opt->state_dict());  // every rank passes its part of the host run's state
  for (int k = 4; k <= 5; ++k) {
    host.step(k);
    from_file.step(k);
    from_dict.step(k);
  }
  check_same(host.opt->full_state_dict(), from_file.opt->full_state_dict(), "resumed from a file");
  check_same(host.opt->full_state_dict(), from_dict.opt->full_state_dict(), "resumed from a state dict");
  BOOST_TEST((test::to_host<float>(host.a) == test::to_host<float>(from_file.a)));
  BOOST_TEST((test::to_host<double>(host.b) == test::to_host<double>(from_dict.b)));
  BOOST_TEST((test::to_host<float>(host.c) == test::to_host<float>(from_file.c)));
}
#endif

BOOST_AUTO_TEST_CASE(parameters_without_state_and_added_groups) {
  TempDir dir;
  Model<layout::FlatPartition> m(MPI_COMM_WORLD);
  m.step(1);
  // A group and a parameter added after steps: empty state until its first step.
  Kokkos::View<float*> z("z", 9), gz("gz", 9);
  const int g = m.opt->add_param_group({.lr = 0.5, .beta1 = 0.8});
  m.opt->add_param("z", z, gz, g);
  // A name in two groups is an error (a name is registered once).
  BOOST_CHECK_EXCEPTION(m.opt->add_param("z", z, gz, 0), so::InvalidArgument,
                        [](const so::InvalidArgument& e) { return std::string(e.what()).find("already registered") != std::string::npos; });
  auto sd = m.opt->state_dict();
  BOOST_TEST(sd.param_groups.size() == 3u);
  BOOST_TEST(sd.state.at("z").step == 0);
  BOOST_TEST(sd.state.at("z").slots.empty());
  m.opt->save(dir.path + "/z.safetensors");
  m.opt->mark_grad_present();
  m.step(2);
  BOOST_TEST(m.opt->step_count("z") == 1);
  BOOST_TEST(m.opt->step_count("a") == 2);
  // Back to the saved point: z has no state again, and steps like a fresh parameter.
  m.opt->load(dir.path + "/z.safetensors");
  BOOST_TEST(m.opt->step_count("z") == 0);
  BOOST_TEST(m.opt->full_state_dict().state.at("z").slots.empty());
  BOOST_TEST(m.opt->param_groups()[2].options.lr == 0.5);
  BOOST_TEST(m.opt->param_groups()[2].options.beta1 == 0.8);
}

// Every problem is listed, on every rank, and nothing changes.
BOOST_AUTO_TEST_CASE(load_state_dict_rejects_what_does_not_fit) {
  Model<layout::FlatPartition> m(MPI_COMM_WORLD);
  for (int k = 1; k <= 2; ++k) m.step(k);
  const auto before = m.opt->full_state_dict();
  auto expect_error = [&](const so::StateDict& sd, std::vector<std::string> phrases) {
    expect_rejected(*m.opt, sd, phrases, before);
    BOOST_TEST(m.opt->param_groups()[0].options.lr == 0.05);
  };
  auto sd = before;
  sd.algorithm = "SGD";
  sd.state["ghost"] = sd.state.at("a");
  sd.state.erase("b");
  sd.state.at("c").shape = {2, 3, 3};
  sd.state.at("a").dtype = "float64";
  expect_error(sd, {"algorithm 'SGD'", "unknown parameter 'ghost'", "'b': no state", "shape [2, 3, 3]", "'a': the state is float64", "5 problem(s)"});

  sd = before;
  sd.param_groups[0].options[0].second = std::nan("");  // lr
  sd.param_groups[1].options[0].second = -1;
  expect_error(sd, {"param group 0: option lr is not finite", "param group 1: Invalid learning rate: -1"});

  sd = before;
  for (auto& [n, v] : sd.param_groups[0].options)
    if (n == "amsgrad") v = 0;
  expect_error(sd, {"param group 0: the state's options keep different state slots", "amsgrad=0 (here 1)"});

  sd = before;
  sd.param_groups[1].params.push_back("a");
  expect_error(sd, {"'a' is listed in two param groups"});

  sd = before;
  sd.state.at("a").slots.at("exp_avg")[0].offset = 5;
  sd.state.at("a").slots["bogus"] = {};
  expect_error(sd, {"slot exp_avg has a part at offset 5", "unknown state slot 'bogus'"});

  sd = before;
  sd.state.at("a").slots.at("exp_avg")[0].values.resize(10);  // elements 10..20 nowhere
  expect_error(sd, {"do not cover", "slot exp_avg of 'a': 11 of 21 elements"});
}

// An algorithm with per-tensor sums (LAMB: its trust ratio from norms over whole tensors) resumes
// from a checkpoint of another layout, and from local state dicts, with the bits of a run that
// never stopped.
BOOST_AUTO_TEST_CASE(lamb_resumes_under_another_layout) {
  using LAMB = so::algo::LAMB;
  const LAMB::Options o{.lr = 0.05, .weight_decay = 0.1};
  TempDir dir;
  Model<layout::ChunkCols, LAMB> straight(MPI_COMM_WORLD, o), first(MPI_COMM_WORLD, o);
  for (int k = 1; k <= 6; ++k) straight.step(k);
  for (int k = 1; k <= 3; ++k) first.step(k);
  first.opt->save(dir.path + "/l.safetensors");
  MPI_Barrier(MPI_COMM_WORLD);
  Model<layout::FlatPartition, LAMB> second(MPI_COMM_WORLD, o);
  second.copy_params_from(first);
  second.opt->load(dir.path + "/l.safetensors");
  Model<layout::DataParallel, LAMB> third(MPI_COMM_WORLD, o);
  third.copy_params_from(first);
  third.opt->load_state_dict(first.opt->state_dict());
  for (int k = 4; k <= 6; ++k) second.step(k), third.step(k);
  check_same(straight.opt->full_state_dict(), second.opt->full_state_dict(), "LAMB resumed from a file");
  check_same(straight.opt->full_state_dict(), third.opt->full_state_dict(), "LAMB resumed from state dicts");
  BOOST_TEST((test::to_host<float>(straight.a) == test::to_host<float>(second.a)));
  BOOST_TEST((test::to_host<double>(straight.b) == test::to_host<double>(third.b)));
}

// NAdam's per-tensor mu_product: kept per parameter on every rank, in state dicts and files under
// torch's key, resharded with the rest, validated on load, and left alone by a step that fails or
// skips the parameter.
BOOST_AUTO_TEST_CASE(per_tensor_scalar_state_travels_with_the_state) {
  using NAdam = so::algo::NAdam;
  const NAdam::Options o{.lr = 0.05, .weight_decay = 0.1, .momentum_decay = 0.3};
  TempDir dir;
  Model<layout::ChunkRows, NAdam> straight(MPI_COMM_WORLD, o), first(MPI_COMM_WORLD, o);
  BOOST_TEST(first.opt->scalar_state("a", "mu_product") == 1.0);  // its initial value until the first step
  BOOST_TEST(first.opt->state_dict().state.at("a").scalars.empty());
  for (int k = 1; k <= 6; ++k) straight.step(k);
  for (int k = 1; k <= 3; ++k) first.step(k);
  // mu_product = prod over t of mu_t, each product rounded to float32 as torch does.
  double mu_product = 1.0;
  for (int t = 1; t <= 3; ++t) mu_product = static_cast<float>(static_cast<float>(mu_product) * static_cast<float>(NAdam::mu(o, t)));
  const auto sd = first.opt->state_dict();
  for (const char* name : {"a", "b", "c", "emb"}) {
    BOOST_TEST(first.opt->scalar_state(name, "mu_product") == mu_product, name);
    BOOST_TEST(sd.state.at(name).scalars.at("mu_product") == mu_product, name);
  }
  BOOST_CHECK_THROW(first.opt->scalar_state("a", "nu"), so::InvalidArgument);

  // A file holds it as state.<name>.mu_product; another layout loads it and goes on bitwise.
  first.opt->save(dir.path + "/n.safetensors");
  MPI_Barrier(MPI_COMM_WORLD);
  {
    const std::string file = read_file(dir.path + "/n.safetensors");
    const auto at = file.find("\"state.emb.mu_product\":{");
    BOOST_TEST_REQUIRE(at != std::string::npos);
    BOOST_TEST(file.substr(at, 100).find("\"dtype\":\"F64\",\"shape\":[]}") != std::string::npos, file.substr(at, 100));
  }
  Model<layout::FlatPartition, NAdam> second(MPI_COMM_WORLD, o);
  second.copy_params_from(first);
  second.opt->load(dir.path + "/n.safetensors");
  BOOST_TEST(second.opt->scalar_state("emb", "mu_product") == mu_product);
  for (int k = 4; k <= 6; ++k) second.step(k);
  check_same(straight.opt->full_state_dict(), second.opt->full_state_dict(), "resumed NAdam state");
  BOOST_TEST((test::to_host<float>(straight.a) == test::to_host<float>(second.a)));
  BOOST_TEST((test::to_host<double>(straight.b) == test::to_host<double>(second.b)));
  // Through a state dict (each rank's own), into a third layout.
  Model<layout::DataParallel, NAdam> third(MPI_COMM_WORLD, o);
  third.opt->load_state_dict(second.opt->state_dict());
  check_same(second.opt->full_state_dict(), third.opt->full_state_dict(), "loaded from local state dicts");

  // What does not fit is rejected, naming it, with nothing changed.
  const auto before = third.opt->full_state_dict();
  auto expect_error = [&](const so::StateDict& bad, std::vector<std::string> phrases) { expect_rejected(*third.opt, bad, phrases, before); };
  auto bad = before;
  bad.state.at("a").scalars.erase("mu_product");
  bad.state.at("b").scalars["nu_product"] = 0.5;
  expect_error(bad, {"parameter 'a': scalar state mu_product is missing (the parameter took 6 step(s))",
                     "parameter 'b': unknown scalar state 'nu_product' for NAdam"});
  bad = before;
  bad.state.at("c").step = 0;
  for (auto& [slot, parts] : bad.state.at("c").slots) parts.clear();
  bad.state.at("c").slots.clear();
  expect_error(bad, {"parameter 'c': the state has scalar state 'mu_product' but step 0"});

  // A parameter whose gradient is absent keeps its mu_product; a step that fails changes none.
  const double b_before = third.opt->scalar_state("b", "mu_product"), a_before = third.opt->scalar_state("a", "mu_product");
  third.opt->zero_grad();
  for (const char* name : {"a", "c", "emb"}) third.opt->mark_grad_present(name);
  third.opt->step();
  BOOST_TEST(third.opt->scalar_state("b", "mu_product") == b_before);
  BOOST_TEST(third.opt->scalar_state("a", "mu_product") != a_before);
  BOOST_TEST(third.opt->step_count("a") == 7);
  const double a_after = third.opt->scalar_state("a", "mu_product");
  third.opt->param_groups()[0].options.lr = -1;
  BOOST_CHECK_THROW(third.opt->step(), so::InvalidArgument);
  BOOST_TEST(third.opt->scalar_state("a", "mu_product") == a_after);
}

BOOST_AUTO_TEST_CASE(ranks_loading_different_state_fail_together) {
  if (world_size() < 2) return;
  Model<layout::DataParallel> m(MPI_COMM_WORLD);
  m.step(1);
  const auto before = m.opt->full_state_dict();
  auto sd = before;
  if (m.comm.rank() == 1) sd.state.at("b").step = 7;
  BOOST_CHECK_THROW(m.opt->load_state_dict(sd), so::CollectiveMismatch);
  check_same(before, m.opt->full_state_dict(), "unchanged");
}

BOOST_AUTO_TEST_CASE(load_rejects_a_checkpoint_that_does_not_fit) {
  TempDir dir;
  Model<layout::DataParallel, so::algo::AdamW> adamw(MPI_COMM_WORLD, {.lr = 0.05});
  adamw.step(1);
  adamw.opt->save(dir.path + "/adamw.safetensors");
  Model<layout::FlatPartition> m(MPI_COMM_WORLD);
  m.step(1);
  const auto before = m.opt->full_state_dict();
  BOOST_CHECK_EXCEPTION(m.opt->load(dir.path + "/adamw.safetensors"), so::InvalidArgument, [](const so::InvalidArgument& e) {
    return std::string(e.what()).find("algorithm 'AdamW'") != std::string::npos &&
           std::string(e.what()).find("keep different state slots") != std::string::npos;
  });
  BOOST_CHECK_EXCEPTION(m.opt->load(dir.path + "/missing.safetensors"), so::IoError,
                        [](const so::IoError& e) { return std::string(e.what()).find("cannot open") != std::string::npos; });
  check_same(before, m.opt->full_state_dict(), "unchanged");
  // A failed save leaves nothing behind and changes nothing.
  BOOST_CHECK_THROW(m.opt->save(dir.path + "/no/such/dir/x.safetensors"), so::IoError);
  BOOST_CHECK_THROW(m.opt->save(""), so::InvalidArgument);
}

// Fault injection: a write that fails on one rank (each rank in turn, under every layout) fails the
// save on every rank with that rank's error, leaves the previous checkpoint in place byte for byte
// and no temporary file behind, and changes nothing. With MPI-IO a failed write can return
// MPI_SUCCESS having written nothing (OpenMPI 4.1 does for EFBIG): the byte counts are checked.
BOOST_AUTO_TEST_CASE(a_write_failure_on_any_rank_fails_the_save_everywhere_and_keeps_the_old_file) {
  if (world_size() < 2) return;  // one process writes with pwrite (checkpoint_files covers it)
  TempDir dir;
  const std::string path = dir.path + "/ckpt.safetensors";
  int failed_saves = 0;
  for_each_layout([&](auto l) {
    using L = decltype(l);
    for (int f = 0; f < world_size(); ++f) {
      BOOST_TEST_CONTEXT(L::name << ", the write fails on rank " << f) {
        Model<L> m(MPI_COMM_WORLD);
        m.step(1);
        m.opt->save(path);
        const std::string old_file = read_file(path);
        m.step(2);
        const auto state = m.opt->full_state_dict();
        bool threw = false;
        std::string message;
        {
          FileSizeLimit limit(world_rank() == f, 64);  // below the header's size: rank f writes nothing
          try {
            m.opt->save(path);
          } catch (const so::IoError& e) {
            threw = true;
            message = e.what();
          }
        }
        int threw_anywhere = threw, threw_everywhere = threw;
        MPI_Allreduce(MPI_IN_PLACE, &threw_anywhere, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &threw_everywhere, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        BOOST_TEST(threw_anywhere == threw_everywhere, "the save failed on some ranks only");
        // Rank 0 writes the header; under FlatPartition every rank owns elements of both dtypes. A rank
        // that writes nothing (a copy under Replicated, say) cannot fail, and its save succeeds.
        if (f == 0 || std::is_same_v<L, layout::FlatPartition>) BOOST_TEST(threw, "a failed write was reported as a saved checkpoint");
        check_same(state, m.opt->full_state_dict(), "the optimizer after the save");
        if (threw) {
          ++failed_saves;
          BOOST_TEST(message.find("rank " + std::to_string(f) + ": checkpoint '") != std::string::npos, message);
          BOOST_TEST((read_file(path) == old_file), "the previous checkpoint was changed");
        } else {
          Model<layout::FlatPartition> r(MPI_COMM_WORLD);
          r.opt->load(path);
          check_same(state, r.opt->full_state_dict(), "the checkpoint of a save that succeeded");
        }
        MPI_Barrier(MPI_COMM_WORLD);
        std::size_t files = 0;
        for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
        BOOST_TEST(files == 1u, "a temporary file was left behind");
        MPI_Barrier(MPI_COMM_WORLD);
      }
    }
  });
  BOOST_TEST_MESSAGE("fault injection: " << failed_saves << " failed saves on rank " << world_rank());
}

// A model of 16-bit parameters (bfloat16 and float16 views, a row-sharded bfloat16 tensor) beside a
// float32 one, under `Layout`: float32 master weights in slot `master`, sharded like the state.
template <class Layout>
struct Model16 {
  using Opt = so::ShardedOptimizer<so::algo::Adam, Layout, Mpi>;
  Mpi comm;
  Kokkos::View<so::bfloat16**> a{"a", 7, 3}, ga{"ga", 7, 3};
  Kokkos::View<so::float16*> b{"b", 5}, gb{"gb", 5};
  Kokkos::View<float*> c{"c", 4}, gc{"gc", 4};
  so::ShardedTensor<so::bfloat16> e;
  std::unique_ptr<Opt> opt;
  explicit Model16(MPI_Comm mc) : comm(mc), e(so::ShardedTensor<so::bfloat16>::chunk(comm, {6, 4}, 0)) {
    test::from_host(a, values<so::bfloat16>(0, a.size(), [](std::int64_t i) { return test::initial_value(0, i); }));
    test::from_host(b, values<so::float16>(1, b.size(), [](std::int64_t i) { return test::initial_value(1, i); }));
    test::from_host(c, values<float>(2, c.size(), [](std::int64_t i) { return test::initial_value(2, i); }));
    for (auto& s : e.local_shards())
      test::from_host(s.value, values<so::bfloat16>(3, s.value.size(), [&](std::int64_t i) { return test::initial_value(3, s.metadata.offsets[0] * 4 + i); }));
    opt = std::make_unique<Opt>(comm, typename so::algo::Adam::Options{.lr = 0.05, .weight_decay = 0.1});
    opt->add_param("a", a, ga);
    opt->add_param("b", b, gb);
    opt->add_param("c", c, gc);
    opt->add_param("emb", e);
  }
  template <class T, class F>
  static std::vector<T> values(int, std::size_t n, F&& f) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = T(static_cast<float>(f(static_cast<std::int64_t>(i))));
    return v;
  }
  void step(int k, so::GradScaler* scaler = nullptr) {
    const int r = comm.rank();
    test::from_host(ga, values<so::bfloat16>(0, ga.size(), [&](std::int64_t i) { return test::gradient_value(7 * r, i, k); }));
    test::from_host(gb, values<so::float16>(1, gb.size(), [&](std::int64_t i) { return test::gradient_value(1 + 7 * r, i, k); }));
    test::from_host(gc, values<float>(2, gc.size(), [&](std::int64_t i) { return test::gradient_value(2 + 7 * r, i, k); }));
    for (auto& s : e.local_shards())
      test::from_host(s.grad, values<so::bfloat16>(3, s.grad.size(), [&](std::int64_t i) { return test::gradient_value(3, s.metadata.offsets[0] * 4 + i, k); }));
    if (scaler) opt->step(*scaler);
    else opt->step();
  }
  template <class Other>
  void copy_params_from(const Other& o) {
    copy_params(*this, o);
  }
  // The 16-bit parameters' bits (and the float32 one's values as bits), for bitwise comparisons.
  std::vector<std::uint32_t> bits() const {
    std::vector<std::uint32_t> out;
    for (const auto& x : test::to_host<so::bfloat16>(a)) out.push_back(x.bits());
    for (const auto& x : test::to_host<so::float16>(b)) out.push_back(x.bits());
    for (const auto& x : test::to_host<float>(c)) out.push_back(std::bit_cast<std::uint32_t>(x));
    for (const auto& s : e.local_shards())
      for (const auto& x : test::to_host<so::bfloat16>(s.value)) out.push_back(x.bits());
    return out;
  }
};

// 16-bit parameters: the state dict and the checkpoint hold their float32 master weights as slot
// `master` (float32 parameters have none), they reshard with the state, and a run resumed from a
// file under another layout continues with the bits of one that never stopped. A state without
// masters (e.g. from a float32 run) starts them from the parameters; masters for a float32
// parameter are an error.
BOOST_AUTO_TEST_CASE(sixteen_bit_master_weights_travel_with_the_state) {
  TempDir dir;
  Model16<layout::FlatPartition> straight(MPI_COMM_WORLD), first(MPI_COMM_WORLD);
  for (int k = 1; k <= 5; ++k) straight.step(k);
  for (int k = 1; k <= 2; ++k) first.step(k);
  const auto full = first.opt->full_state_dict();
  BOOST_TEST(full.state.at("a").dtype == "bfloat16");
  for (const char* name : {"a", "b", "emb"}) BOOST_TEST(full.state.at(name).slots.count("master") == 1u, name);
  BOOST_TEST(full.state.at("c").slots.count("master") == 0u);
  // The masters rounded are the parameters.
  const auto master_a = first.opt->gathered_state<float>("a", "master");
  const auto a = test::to_host<so::bfloat16>(first.a);
  BOOST_REQUIRE(master_a.size() == a.size());
  for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(so::bfloat16(master_a[i]).bits() == a[i].bits());
  first.opt->save(dir.path + "/m.safetensors");

  Model16<layout::ChunkRows> second(MPI_COMM_WORLD);
  second.copy_params_from(first);
  second.opt->load(dir.path + "/m.safetensors");
  check_same(full, second.opt->full_state_dict(), "loaded from the file under ChunkRows");
  for (int k = 3; k <= 5; ++k) second.step(k);
  BOOST_TEST(second.bits() == straight.bits(), boost::test_tools::per_element());
  check_same(straight.opt->full_state_dict(), second.opt->full_state_dict(), "resumed under ChunkRows");

  // From local state dicts too, under DataParallel.
  Model16<layout::DataParallel> third(MPI_COMM_WORLD);
  third.copy_params_from(first);
  third.opt->load_state_dict(first.opt->state_dict());
  for (int k = 3; k <= 5; ++k) third.step(k);
  BOOST_TEST(third.bits() == straight.bits(), boost::test_tools::per_element());

  // Without masters: started from the parameters at the next step.
  auto no_masters = full;
  for (auto& [name, ps] : no_masters.state) ps.slots.erase("master");
  Model16<layout::FlatPartition> fourth(MPI_COMM_WORLD);
  fourth.copy_params_from(first);
  fourth.opt->load_state_dict(no_masters);
  BOOST_TEST(fourth.opt->gathered_state<float>("a", "master").empty());
  fourth.step(3);
  BOOST_TEST(fourth.opt->gathered_state<float>("a", "master").size() == 21u);

  // Masters for the float32 parameter: rejected, naming it, nothing changed.
  auto wrong = full;
  wrong.state.at("c").slots["master"] = wrong.state.at("c").slots.at("exp_avg");
  expect_rejected(*first.opt, wrong, {"parameter 'c': the state has master weights (slot master) but the parameter is float32"}, full);
}

// save(path, scaler) keeps the GradScaler's state beside the optimizer's, load(path, scaler)
// resumes both: under another layout, the scales and the parameters go on as in a run that never
// stopped. An enabled scaler cannot load from a file without scaler state (nothing changes); a
// disabled one takes nothing; ranks whose scalers or calls differ fail together.
BOOST_AUTO_TEST_CASE(grad_scaler_travels_with_the_checkpoint) {
  TempDir dir;
  const so::GradScaler::Options o{.init_scale = 1024.0, .growth_interval = 3};
  so::GradScaler straight_scaler(o), first_scaler(o);
  Model16<layout::FlatPartition> straight(MPI_COMM_WORLD), first(MPI_COMM_WORLD);
  for (int k = 1; k <= 5; ++k) straight.step(k, &straight_scaler);
  for (int k = 1; k <= 2; ++k) first.step(k, &first_scaler);
  BOOST_TEST(first_scaler.growth_tracker() == 2);
  const std::string with = dir.path + "/with.safetensors", without = dir.path + "/without.safetensors";
  first.opt->save(with, first_scaler);
  first.opt->save(without);

  // Resumed under ChunkRows: the scaler as saved (a fresh one with other options takes all of it).
  Model16<layout::ChunkRows> second(MPI_COMM_WORLD);
  second.copy_params_from(first);
  so::GradScaler resumed({.init_scale = 8.0, .growth_factor = 4.0, .growth_interval = 100});
  second.opt->load(with, resumed);
  BOOST_TEST((resumed.state_dict() == first_scaler.state_dict()));
  for (int k = 3; k <= 5; ++k) second.step(k, &resumed);
  BOOST_TEST(resumed.scale() == 2048.0);  // grown at the third stepped step, as the straight run's
  BOOST_TEST((resumed.state_dict() == straight_scaler.state_dict()));
  BOOST_TEST(second.bits() == straight.bits(), boost::test_tools::per_element());

  // load(path) of the same file: the optimizer alone. A disabled scaler takes nothing.
  Model16<layout::DataParallel> third(MPI_COMM_WORLD);
  third.opt->load(with);
  check_same(first.opt->full_state_dict(), third.opt->full_state_dict(), "load(path) of a file with a scaler");
  so::GradScaler off({.enabled = false});
  third.opt->load(with, off);
  BOOST_TEST(off.scale() == 1.0);

  // An enabled scaler and a file without scaler state: rejected, nothing changed.
  const auto before = third.opt->full_state_dict();
  so::GradScaler fresh(o);
  bool thrown = false;
  try {
    third.opt->load(without, fresh);
  } catch (const so::InvalidArgument& e) {
    thrown = true;
    BOOST_TEST(std::string(e.what()).find("holds no GradScaler state") != std::string::npos, e.what());
  }
  BOOST_TEST(thrown);
  BOOST_TEST((fresh.state_dict() == so::GradScaler(o).state_dict()));
  check_same(before, third.opt->full_state_dict(), "unchanged");

  if (world_size() < 2) return;
  // Ranks that differ: a scaler on rank 0 only, or another scale on rank 1.
  const bool root = first.comm.rank() == 0;
  BOOST_CHECK_THROW(root ? third.opt->load(with, fresh) : third.opt->load(with), so::CollectiveMismatch);
  BOOST_TEST((fresh.state_dict() == so::GradScaler(o).state_dict()));
  check_same(before, third.opt->full_state_dict(), "unchanged after the mismatch");
  const std::string other = dir.path + "/other.safetensors";
  BOOST_CHECK_THROW(root ? first.opt->save(other, first_scaler) : first.opt->save(other), so::CollectiveMismatch);
  so::GradScaler differing = first_scaler;
  if (first.comm.rank() == 1) differing.set_scale(1.0);
  BOOST_CHECK_THROW(first.opt->save(other, differing), so::CollectiveMismatch);
  BOOST_TEST(!std::filesystem::exists(other));
}

BOOST_AUTO_TEST_SUITE_END()
