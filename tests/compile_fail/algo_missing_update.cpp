// EXPECT: Algo lacks 'template <class T> KOKKOS_INLINE_FUNCTION static void update
// An algorithm complete but for its element update.
#include <shardopt/shardopt.hpp>

struct NoUpdate {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "NoUpdate";
  struct Options {
    double lr = 0.1;
  };
  static constexpr auto option_fields = std::tuple{shardopt::field("lr", &Options::lr)};
  static constexpr std::array<std::string_view, 0> slot_names = {};
  static void validate(const Options&) {}
  static constexpr bool slot_used(const Options&, std::size_t) { return false; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  template <class T>
  struct Scalars { T lr; };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) { return {T(o.lr)}; }
};

int main() {
  shardopt::ShardedOptimizer<NoUpdate, shardopt::layout::Replicated, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
