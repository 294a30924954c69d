// SPDX-License-Identifier: BSD-3-Clause
// comm::Nccl compiled and linked against the CUDA toolkit's NCCL on every build; run where a GPU is
// present (exit 77, "skipped", where none is):
// - the four collectives on device buffers and on host buffers (staged) at world size 1, checked;
// - a ShardedOptimizer<Adam, FlatPartition, comm::Nccl> stepping host views at world size 1 (no
//   collective is called on one process) and its checkpoint round trip;
// - error handling: a wrong size is an InvalidArgument naming the call.
#include <shardopt/shardopt.hpp>
#include <shardopt/comm/nccl.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
}

void check_collectives(shardopt::comm::Nccl& c) {
  const std::size_t n = 1000;
  std::vector<float> host(n);
  for (std::size_t i = 0; i < n; ++i) host[i] = float(i);
  float* dev = nullptr;
  cudaMalloc(&dev, n * sizeof(float));
  cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  c.all_reduce(std::span<float>(dev, n), shardopt::ReduceOp::sum);
  c.all_gather(std::span<const float>(dev, n), std::span<float>(dev, n));
  c.reduce_scatter(std::span<const float>(dev, n), std::span<float>(dev, n), shardopt::ReduceOp::sum);
  c.broadcast(std::span<float>(dev, n), 0);
  cudaStreamSynchronize(c.stream());
  std::vector<float> back(n);
  cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost);
  expect(back == host, "device-buffer collectives at world size 1 keep the data");
  cudaFree(dev);
  std::int64_t v[2] = {3, -4};
  c.all_reduce(std::span<std::int64_t>(v, 2), shardopt::ReduceOp::min);
  expect(v[0] == 3 && v[1] == -4, "host-buffer all_reduce (staged)");
  try {
    c.all_gather(std::span<const float>(host.data(), 3), std::span<float>(host.data(), 4));
    expect(false, "a wrong all_gather size throws");
  } catch (const shardopt::InvalidArgument& e) {
    expect(std::string(e.what()).find("all_gather") != std::string::npos, "the error names all_gather");
  }
}

void check_optimizer(shardopt::comm::Nccl& c) {
  using Host = Kokkos::DefaultHostExecutionSpace;
  Kokkos::View<float*, Kokkos::HostSpace> p("p", 64), g("g", 64);
  Kokkos::deep_copy(p, 1.0f);
  Kokkos::deep_copy(g, 0.5f);
  shardopt::ShardedOptimizer<shardopt::algo::Adam, shardopt::layout::FlatPartition, shardopt::comm::Nccl, Host> opt(c, {.lr = 0.1});
  opt.add_param("p", p, g);
  opt.step();
  expect(p(0) < 1.0f, "the optimizer stepped");
  opt.save("nccl_check.safetensors");
  opt.load("nccl_check.safetensors");
  expect(opt.step_count("p") == 1, "the checkpoint round trip keeps the step count");
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: comm::Nccl compiled and linked, not run\n");
    return 77;
  }
  Kokkos::ScopeGuard guard(argc, argv);
  {
    ncclComm_t raw = nullptr;
    int device = 0;
    shardopt::comm::detail_nccl::check(ncclCommInitAll(&raw, 1, &device), "ncclCommInitAll");
    cudaStream_t stream = nullptr;
    cudaStreamCreate(&stream);
    {
      shardopt::comm::Nccl c(raw, stream);
      expect(c.rank() == 0 && c.size() == 1, "rank 0 of 1");
      check_collectives(c);
      check_optimizer(c);
    }
    cudaStreamDestroy(stream);
    ncclCommDestroy(raw);
  }
  std::printf("%s\n", failures ? "comm::Nccl checks FAILED" : "comm::Nccl checks passed");
  return failures ? 1 : 0;
}
