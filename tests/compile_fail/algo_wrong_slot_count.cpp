// EXPECT: N must be std::size\(slot_names\), one pointer per slot.*the comparison reduces to '\(1 == 2\)'
// An algorithm with two state slots whose update() takes the pointers of one.
#include <shardopt/shardopt.hpp>

struct OneSlotTooFew {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "OneSlotTooFew";
  struct Options {
    double lr = 0.1;
  };
  static constexpr auto option_fields = std::tuple{shardopt::field("lr", &Options::lr)};
  static constexpr std::array<std::string_view, 2> slot_names = {"exp_avg", "exp_inf"};
  static void validate(const Options&) {}
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  template <class T>
  struct Scalars { T lr; };
  template <class T>
  static Scalars<T> prepare(const Options& o, std::int64_t) { return {T(o.lr)}; }
  template <class T>
  KOKKOS_INLINE_FUNCTION static void update(const Scalars<T>& s, T& p, T g, shardopt::StateSlots<T, 1> st) {
    st[0] = g;
    p = p - s.lr * st[0];
  }
};

int main() {
  shardopt::ShardedOptimizer<OneSlotTooFew, shardopt::layout::Replicated, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
