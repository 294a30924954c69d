// A training function written once for any layout and communicator (and, by default, AdamW).
// It fits a linear layer y = W x + b by least squares on samples spread over the ranks.
#pragma once
#include <shardopt/shardopt.hpp>

#include <cmath>
#include <span>
#include <vector>

// Sample s: features x_s in [-1, 1]^4 and the target y_s = A x_s + c of a fixed A [3, 4] and c [3].
inline double feature(int s, int j) { return std::sin(1.3 * s + 0.7 * j); }
inline double target(int s, int i) {
  double y = 0.1 * i - 0.2;
  for (int j = 0; j < 4; ++j) y += (0.5 - 0.25 * i + 0.1 * j) * feature(s, j);
  return y;
}

struct TrainResult {
  double loss;                 // mean loss over all samples after the last step, the same on every rank
  std::vector<double> weight;  // W, row-major, as this rank holds it
};

// Rank r holds samples r, r + P, r + 2P, ... of 48 and computes the gradient of its mean loss; the
// layout decides how the ranks' gradients combine and who keeps which optimizer state.
template <shardopt::Layout Layout, shardopt::Communicator Comm, shardopt::Algorithm Algo = shardopt::algo::AdamW>
TrainResult train(Comm comm, int steps, const typename Algo::Options& options = {}) {
  shardopt::ShardedOptimizer<Algo, Layout, Comm> opt(comm, options);
  Kokkos::View<double**> w("linear.weight", 3, 4), gw("gw", 3, 4);
  Kokkos::View<double*> b("linear.bias", 3), gb("gb", 3);
  opt.add_param("linear.weight", w, gw);
  opt.add_param("linear.bias", b, gb);
  auto hw = Kokkos::create_mirror_view(w), hgw = Kokkos::create_mirror_view(gw);
  auto hb = Kokkos::create_mirror_view(b), hgb = Kokkos::create_mirror_view(gb);

  TrainResult out{};
  for (int k = 0; k <= steps; ++k) {
    Kokkos::deep_copy(hw, w);
    Kokkos::deep_copy(hb, b);
    Kokkos::deep_copy(hgw, 0.0);
    Kokkos::deep_copy(hgb, 0.0);
    double local[2] = {0.0, 0.0};  // this rank's loss and sample count
    for (int s = comm.rank(); s < 48; s += comm.size()) {
      for (int i = 0; i < 3; ++i) {
        double e = hb(i) - target(s, i);
        for (int j = 0; j < 4; ++j) e += hw(i, j) * feature(s, j);
        local[0] += 0.5 * e * e;
        hgb(i) += e;
        for (int j = 0; j < 4; ++j) hgw(i, j) += e * feature(s, j);
      }
      local[1] += 1.0;
    }
    // The communicator is the one your code has: use it for your own reductions too.
    std::vector<double> totals(local, local + 2);
    comm.all_reduce(std::span<double>(totals), shardopt::ReduceOp::sum);
    out.loss = totals[0] / totals[1];
    if (k == steps) break;
    for (int i = 0; i < 3; ++i) {
      hgb(i) /= local[1];
      for (int j = 0; j < 4; ++j) hgw(i, j) /= local[1];
    }
    Kokkos::deep_copy(gw, hgw);
    Kokkos::deep_copy(gb, hgb);
    opt.step();
  }
  Kokkos::deep_copy(hw, w);
  out.weight.assign(hw.data(), hw.data() + hw.size());
  return out;
}
