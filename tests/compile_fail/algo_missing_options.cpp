// EXPECT: Algo lacks a default-constructible nested struct 'Options'
// An algorithm that declares its category but has no Options.
#include <shardopt/shardopt.hpp>

struct NoOptions {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "NoOptions";
};

int main() {
  shardopt::ShardedOptimizer<NoOptions, shardopt::layout::Replicated, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
