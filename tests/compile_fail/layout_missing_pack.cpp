// EXPECT: Layout lacks 'static shardopt::Packing pack\(std::span<const shardopt::TensorInfo> tensors, int world_size\)'
// A layout that declares its category, name and strategy but cannot pack.
#include <shardopt/shardopt.hpp>

struct NoPack {
  using layout_category = shardopt::layout_policy_tag;
  static constexpr std::string_view name = "NoPack";
  static constexpr shardopt::Strategy strategy = shardopt::Strategy::partitioned;
  static constexpr shardopt::Reduction reduction = shardopt::Reduction::mean;
};

int main() {
  shardopt::ShardedOptimizer<shardopt::algo::SGD, NoPack, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
