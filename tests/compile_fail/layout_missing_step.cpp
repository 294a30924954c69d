// EXPECT: Layout lacks 'template <class Ctx> static void step\(Ctx& ctx\)'
// A layout that declares its category and name but cannot step.
#include <shardopt/shardopt.hpp>

struct NoStep {
  using layout_category = shardopt::layout_policy_tag;
  static constexpr std::string_view name = "NoStep";
};

int main() {
  shardopt::ShardedOptimizer<shardopt::algo::SGD, NoStep, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
