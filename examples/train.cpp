// SPDX-License-Identifier: BSD-3-Clause
// Trains a small classifier on a real dataset with the optimizer state sharded over the ranks.
//
//   mpirun -np 4 ./train [--steps N] [--data PATH]
//
// Data: Statlog (Heart), 270 patients, 13 features scaled to [-1, 1], label +1 (heart disease) or
// -1, in LIBSVM format, as Debian's liblinear-tools ships it
// (/usr/share/doc/liblinear-tools/examples/heart_scale). Every 5th row is held out for testing.
// Model: a 13-16-1 tanh MLP with logistic loss, trained full-batch with Adam.
//
// Data parallelism: each rank holds the whole model, computes the gradient over its own rows
// (rows r, r+P, r+2P, ... of the training set) and the optimizer reduces the gradients. With
// layout::FlatPartition each rank keeps and updates only 1/P of Adam's state (ZeRO-1/2); the same
// training with layout::DataParallel (every rank keeps all state) runs alongside, and the program
// checks that both produce bitwise the same model while printing the state memory of each.
#include <shardopt/shardopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kFeatures = 13, kHidden = 16;
constexpr const char* kDefaultData = "/usr/share/doc/liblinear-tools/examples/heart_scale";

struct Dataset {
  std::vector<float> x;  // rows x kFeatures
  std::vector<float> y;  // 1 or 0
  std::size_t rows() const { return y.size(); }
};

// Reads LIBSVM's sparse format: "<label> <index>:<value> ...", 1-based indices.
void read_libsvm(const std::string& path, Dataset& train, Dataset& test) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("train: cannot open the dataset '" + path +
                             "' (install Debian's liblinear-tools, or pass --data PATH to a LIBSVM file with " +
                             std::to_string(kFeatures) + " features)");
  std::string line;
  std::size_t row = 0;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream fields(line);
    double label = 0;
    if (!(fields >> label)) throw std::runtime_error("train: " + path + " line " + std::to_string(row + 1) + ": no label");
    std::vector<float> features(kFeatures, 0.0f);
    std::string item;
    while (fields >> item) {
      const auto colon = item.find(':');
      const int index = colon == std::string::npos ? 0 : std::atoi(item.substr(0, colon).c_str());
      if (index < 1 || index > kFeatures)
        throw std::runtime_error("train: " + path + " line " + std::to_string(row + 1) + ": bad feature '" + item + "'");
      features[index - 1] = std::strtof(item.c_str() + colon + 1, nullptr);
    }
    Dataset& d = row % 5 == 4 ? test : train;
    d.x.insert(d.x.end(), features.begin(), features.end());
    d.y.push_back(label > 0 ? 1.0f : 0.0f);
    ++row;
  }
  if (train.rows() == 0) throw std::runtime_error("train: no rows in " + path);
}

using HostViewVector = Kokkos::View<float*, Kokkos::HostSpace>;
using HostViewMatrix = Kokkos::View<float**, Kokkos::HostSpace>;

struct Mlp {
  HostViewMatrix w1{"fc1.weight", kHidden, kFeatures}, gw1{"fc1.weight.grad", kHidden, kFeatures};
  HostViewVector b1{"fc1.bias", kHidden}, gb1{"fc1.bias.grad", kHidden};
  HostViewMatrix w2{"fc2.weight", 1, kHidden}, gw2{"fc2.weight.grad", 1, kHidden};
  HostViewVector b2{"fc2.bias", 1}, gb2{"fc2.bias.grad", 1};

  // The same initialization on every rank (a fixed LCG, like a seeded torch.manual_seed).
  void init() {
    std::uint64_t s = 42;
    auto uniform = [&s](float bound) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      return bound * (2.0f * static_cast<float>(s >> 40) / static_cast<float>(1ull << 24) - 1.0f);
    };
    for (int h = 0; h < kHidden; ++h) {
      for (int f = 0; f < kFeatures; ++f) w1(h, f) = uniform(1.0f / std::sqrt(float(kFeatures)));
      b1(h) = uniform(1.0f / std::sqrt(float(kFeatures)));
      w2(0, h) = uniform(1.0f / std::sqrt(float(kHidden)));
    }
    b2(0) = uniform(1.0f / std::sqrt(float(kHidden)));
  }

  // Logit of one row, keeping the hidden activations.
  float forward(const float* x, float* hidden) const {
    float out = b2(0);
    for (int h = 0; h < kHidden; ++h) {
      float a = b1(h);
      for (int f = 0; f < kFeatures; ++f) a += w1(h, f) * x[f];
      hidden[h] = std::tanh(a);
      out += w2(0, h) * hidden[h];
    }
    return out;
  }

  // Accumulates into the gradients the gradient of (sum of this rank's rows' losses) / `total_rows`,
  // so that summing over ranks gives the gradient of the mean loss. Returns this rank's loss sum.
  double backward(const Dataset& d, int rank, int ranks, std::size_t total_rows) {
    double loss = 0;
    float hidden[kHidden];
    const float scale = 1.0f / static_cast<float>(total_rows);
    for (std::size_t i = static_cast<std::size_t>(rank); i < d.rows(); i += static_cast<std::size_t>(ranks)) {
      const float* x = &d.x[i * kFeatures];
      const float z = forward(x, hidden);
      // Logistic loss: softplus(z) - y z; its derivative is sigmoid(z) - y.
      loss += std::max(z, 0.0f) + std::log1p(std::exp(-std::fabs(z))) - d.y[i] * z;
      const float dz = (1.0f / (1.0f + std::exp(-z)) - d.y[i]) * scale;
      gb2(0) += dz;
      for (int h = 0; h < kHidden; ++h) {
        gw2(0, h) += dz * hidden[h];
        const float da = dz * w2(0, h) * (1.0f - hidden[h] * hidden[h]);
        gb1(h) += da;
        for (int f = 0; f < kFeatures; ++f) gw1(h, f) += da * x[f];
      }
    }
    return loss;
  }

  double accuracy(const Dataset& d) const {
    float hidden[kHidden];
    std::size_t right = 0;
    for (std::size_t i = 0; i < d.rows(); ++i) right += (forward(&d.x[i * kFeatures], hidden) > 0) == (d.y[i] > 0.5f);
    return double(right) / double(d.rows());
  }

  bool same_bits(const Mlp& o) const {
    auto eq = [](auto a, auto b) {
      for (std::size_t i = 0; i < a.size(); ++i)
        if (std::memcmp(a.data() + i, b.data() + i, sizeof(float)) != 0) return false;
      return true;
    };
    return eq(w1, o.w1) && eq(b1, o.b1) && eq(w2, o.w2) && eq(b2, o.b2);
  }
};

struct Run {
  Mlp model;
  std::size_t state_bytes = 0;
  std::uint64_t bytes_sent = 0;
};

// Layout<Reduction::sum>: the gradients are summed over ranks, each rank passing sum(its rows) / total rows.
// The host execution space: the model is computed on the host here.
template <template <shardopt::Reduction> class Layout>
Run train(shardopt::comm::Mpi comm, const Dataset& train_set, const Dataset& test_set, int steps, bool report) {
  using Opt = shardopt::ShardedOptimizer<shardopt::algo::Adam, Layout<shardopt::Reduction::sum>, shardopt::comm::Mpi,
                                         Kokkos::DefaultHostExecutionSpace>;
  Run run;
  Mlp& m = run.model;
  m.init();
  Opt opt(comm, {.lr = 0.01, .weight_decay = 1e-4});
  opt.add_param("fc1.weight", m.w1, m.gw1);
  opt.add_param("fc1.bias", m.b1, m.gb1);
  opt.add_param("fc2.weight", m.w2, m.gw2);
  opt.add_param("fc2.bias", m.b2, m.gb2);
  for (int it = 1; it <= steps; ++it) {
    opt.zero_grad(false);
    const std::uint64_t sent = comm.stats().bytes_sent, control = opt.control_bytes();
    double loss = opt.step([&] { return m.backward(train_set, comm.rank(), comm.size(), train_set.rows()); });
    // Gradient and parameter traffic, without the small agreement message step() starts with.
    run.bytes_sent += (comm.stats().bytes_sent - sent) - (opt.control_bytes() - control);
    comm.all_reduce(std::span<double>(&loss, 1), shardopt::ReduceOp::sum);
    loss /= double(train_set.rows());
    if (report && comm.rank() == 0 && (it == 1 || it % std::max(1, steps / 10) == 0 || it == steps))
      std::printf("  step %4d  train loss %.4f  test accuracy %.3f\n", it, loss, m.accuracy(test_set));
  }
  run.state_bytes = opt.state_bytes();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  int steps = 100;
  std::string path = kDefaultData;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--data" && i + 1 < argc) path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--steps N] [--data PATH]\n", argv[0]);
      return 2;
    }
  }
  shardopt::comm::Mpi comm(MPI_COMM_WORLD);
  try {
    if (steps < 1) throw std::runtime_error("train: --steps must be at least 1");
    Dataset train_set, test_set;
    std::string error;
    try {
      read_libsvm(path, train_set, test_set);
    } catch (const std::exception& e) {
      error = e.what();
    }
    int failed = error.empty() ? 0 : 1;  // every rank stops if any rank could not read the data
    comm.all_reduce(std::span<int>(&failed, 1), shardopt::ReduceOp::max);
    if (failed) throw std::runtime_error(error.empty() ? "train: another rank could not read the dataset" : error);
    if (comm.rank() == 0)
      std::printf("Statlog heart: %zu training rows, %zu test rows, %d ranks; Adam, 13-16-1 MLP, %d steps\n",
                  train_set.rows(), test_set.rows(), comm.size(), steps);
    if (comm.rank() == 0) std::printf("FlatPartition (each rank keeps 1/%d of Adam's state):\n", comm.size());
    const Run flat = train<shardopt::layout::BasicFlatPartition>(comm, train_set, test_set, steps, true);
    const Run dp = train<shardopt::layout::BasicDataParallel>(comm, train_set, test_set, steps, false);

    // Per-rank figures, printed by rank 0.
    std::vector<std::uint64_t> figures = {flat.state_bytes, dp.state_bytes, flat.bytes_sent / std::uint64_t(steps),
                                          dp.bytes_sent / std::uint64_t(steps), flat.model.same_bits(dp.model) ? 1u : 0u};
    std::vector<std::uint64_t> all(figures.size() * static_cast<std::size_t>(comm.size()));
    comm.all_gather(std::span<const std::uint64_t>(figures), std::span<std::uint64_t>(all));
    bool same = true;
    if (comm.rank() == 0) {
      std::printf("optimizer state per rank (bytes)   FlatPartition   DataParallel   sent per step: FlatPartition   DataParallel\n");
      for (int r = 0; r < comm.size(); ++r) {
        const auto* f = &all[static_cast<std::size_t>(r) * figures.size()];
        std::printf("  rank %d %30llu %14llu %31llu %14llu\n", r, (unsigned long long)f[0], (unsigned long long)f[1],
                    (unsigned long long)f[2], (unsigned long long)f[3]);
      }
    }
    for (int r = 0; r < comm.size(); ++r) same = same && all[static_cast<std::size_t>(r) * figures.size() + 4] == 1;
    const double acc = flat.model.accuracy(test_set);
    if (comm.rank() == 0)
      std::printf("FlatPartition and DataParallel models are %s; test accuracy %.3f\n",
                  same ? "bitwise identical" : "DIFFERENT", acc);
    if (!same) return 1;
    if (steps >= 50 && acc < 0.7) {
      if (comm.rank() == 0) std::fprintf(stderr, "train: test accuracy %.3f is too low: training failed\n", acc);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", comm.rank(), e.what());
    return 1;
  }
  return 0;
}
