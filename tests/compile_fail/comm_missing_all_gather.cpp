// EXPECT: Comm lacks the collective 'template <class T> void all_gather
// A communicator without all_gather.
#include <shardopt/shardopt.hpp>

struct NoAllGather {
  using communicator_category = shardopt::communicator_tag;
  static constexpr std::string_view name = "NoAllGather";
  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce(std::span<T>, shardopt::ReduceOp) {}
  template <class T>
  void reduce_scatter(std::span<const T>, std::span<T>, shardopt::ReduceOp) {}
};

int main() {
  shardopt::ShardedOptimizer<shardopt::algo::SGD, shardopt::layout::Replicated, NoAllGather> opt(NoAllGather{});
  return 0;
}
