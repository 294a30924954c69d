// EXPECT: Algo is not an optimizer algorithm policy
// A Layout given in the Algo slot.
#include <shardopt/shardopt.hpp>

int main() {
  using Opt = shardopt::ShardedOptimizer<shardopt::layout::Replicated, shardopt::layout::Replicated, shardopt::comm::Serial>;
  Opt opt(shardopt::comm::Serial{});
  return 0;
}
