// EXPECT: Algo declares scalar_state_names, so it needs 'template <class T> static Scalars prepare\(const Options&, std::int64_t step, std::span<const double> scalar_state\)'
// An algorithm that declares per-tensor scalar state but keeps the prepare() of one without.
#include <shardopt/shardopt.hpp>

struct ForgetsItsScalarState {
  using algorithm_category = shardopt::elementwise_algorithm_tag;
  static constexpr std::string_view name = "ForgetsItsScalarState";
  struct Options {
    double lr = 0.1;
  };
  static constexpr auto option_fields = std::tuple{shardopt::field("lr", &Options::lr)};
  static constexpr std::array<std::string_view, 1> slot_names = {"momentum_buffer"};
  static constexpr std::array<std::string_view, 1> scalar_state_names = {"lr_product"};
  static void validate(const Options&) {}
  static constexpr bool slot_used(const Options&, std::size_t) { return true; }
  static constexpr double initial_value(const Options&, std::size_t) { return 0.0; }
  static constexpr double initial_scalar_state(const Options&, std::size_t) { return 1.0; }
  static void advance_scalar_state(const Options& o, std::int64_t, std::span<double> s) { s[0] *= o.lr; }
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
  shardopt::ShardedOptimizer<ForgetsItsScalarState, shardopt::layout::Replicated, shardopt::comm::Serial> opt(shardopt::comm::Serial{});
  return 0;
}
