// SPDX-License-Identifier: BSD-3-Clause
#pragma once
/// @file
/// @brief The conformance suite of a communicator policy: SHARDOPT_COMM_CONFORMANCE and the checks
/// it runs, which compare it with comm::Mpi. Part of `<shardopt/testing.hpp>` when shardopt is built
/// with MPI.

#include <boost/test/unit_test.hpp>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <shardopt/algo/adam.hpp>
#include <shardopt/concepts.hpp>
#include <shardopt/error.hpp>
#include <shardopt/layout/data_parallel.hpp>
#include <shardopt/layout/flat_partition.hpp>
#include <shardopt/sharded_optimizer.hpp>
#include <shardopt/testing/compare.hpp>
#include <shardopt/testing/findings.hpp>
#include <shardopt/testing/model.hpp>

#include <shardopt/config.hpp>
#if SHARDOPT_HAS_MPI
#include <shardopt/comm/mpi.hpp>

namespace shardopt::testing {

/// @brief Which processes a communicator under test spans.
enum class Span {
  world,   ///< MPI_COMM_WORLD
  halves,  ///< MPI_COMM_WORLD split in two halves, each numbered in reverse (catches a communicator that uses world ranks)
  self,    ///< MPI_COMM_SELF: one process
};

/// @brief What check_collectives() and check_optimizer_over() demand of a communicator.
struct CommChecks {
  /// The communicators the factory is asked for, each checked separately. Use `{Span::self}` for a
  /// single-process communicator such as comm::Serial.
  std::vector<Span> spans = {Span::world, Span::halves, Span::self};
  /// Floating-point sums bit for bit equal to comm::Mpi's, which adds in rank order
  /// ((x0 + x1) + x2) + ... whatever the world size. shardopt's "same bits under every layout and
  /// world size" rests on this; a communicator that cannot keep the order (e.g. NCCL) sets it to
  /// false and its sums are compared within world_size * eps * sum |x_i|.
  bool ordered_sums = true;
  /// `stats().bytes_sent` grows by what comm::Mpi counts for the same call (see shardopt::CommStats).
  bool byte_counts = true;
};

/// @brief `c`, or the default checks when called without an argument (used by SHARDOPT_COMM_CONFORMANCE).
inline CommChecks comm_checks(CommChecks c = {}) { return c; }

namespace detail {

// An MPI communicator for one Span (freed at scope exit) and its description.
struct SpanComm {
  MPI_Comm comm = MPI_COMM_NULL;
  bool owned = false;
  std::string description;
  explicit SpanComm(Span s) {
    int p = 1, r = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (s == Span::world) {
      comm = MPI_COMM_WORLD;
      description = "MPI_COMM_WORLD (" + std::to_string(p) + " ranks)";
    } else if (s == Span::self) {
      comm = MPI_COMM_SELF;
      description = "MPI_COMM_SELF";
    } else {
      const int half = (p + 1) / 2, color = r < half ? 0 : 1;
      MPI_Comm_split(MPI_COMM_WORLD, color, -r, &comm);  // reversed: world rank order is not the order here
      owned = true;
      int n = 0;
      MPI_Comm_size(comm, &n);
      description = "the half of MPI_COMM_WORLD that holds world rank " + std::to_string(r) + " (" + std::to_string(n) +
                    " ranks, numbered in reverse)";
    }
  }
  SpanComm(const SpanComm&) = delete;
  SpanComm& operator=(const SpanComm&) = delete;
  ~SpanComm() {
    if (owned) MPI_Comm_free(&comm);
  }
};

inline const char* op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : op == ReduceOp::min ? "min" : "max"; }
template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, char>) return "char";
  else return "std::int64_t";
}

// Random values of awkward magnitudes: floating-point sums then depend on the order of addition.
template <class T>
std::vector<T> random_values(std::mt19937_64& gen, std::size_t n) {
  std::vector<T> v(n);
  for (auto& x : v) {
    if constexpr (std::is_floating_point_v<T>) {
      const double u = std::uniform_real_distribution<double>(-1.0, 1.0)(gen);
      x = T(std::ldexp(u, static_cast<int>(gen() % 25) - 12));
    } else if constexpr (std::is_same_v<T, char>) {
      x = static_cast<char>('a' + gen() % 26);
    } else {
      x = static_cast<T>(static_cast<std::int64_t>(gen() % (std::uint64_t(1) << 41)) - (std::int64_t(1) << 40));
    }
  }
  return v;
}

inline const std::vector<std::size_t>& awkward_sizes() {
  static const std::vector<std::size_t> s = {0, 1, 2, 3, 5, 7, 13, 31, 127};
  return s;
}

// Compares what the communicator under test computed with what comm::Mpi computed.
template <class C>
class CollectiveCheck {
 public:
  CollectiveCheck(C& c, comm::Mpi& ref, std::string where, const CommChecks& checks, Findings& f)
      : c_(c), ref_(ref), where_(std::move(where)), checks_(checks), f_(f), gen_(0x5eed0000ull + static_cast<std::uint64_t>(ref.rank())) {}

  template <class T>
  void all_reduce(ReduceOp op) {
    for (std::size_t n : awkward_sizes()) {
      const auto x = random_values<T>(gen_, n);
      auto a = x, b = x;
      const std::string what = std::string("all_reduce<") + type_name<T>() + ">(" + op_name(op) + ") of " + std::to_string(n) + " elements";
      const auto before = bytes();
      if (!call(what, [&] { c_.all_reduce(std::span<T>(a), op); })) return;
      ref_.all_reduce(std::span<T>(b), op);
      counted(what, before);
      if constexpr (std::is_floating_point_v<T>) {
        if (op == ReduceOp::sum && !checks_.ordered_sums) {
          std::vector<T> bound(n);  // sum over the ranks of |x|: bounds the rounding of any order of addition
          for (std::size_t i = 0; i < n; ++i) bound[i] = std::abs(x[i]);
          ref_.all_reduce(std::span<T>(bound), ReduceOp::sum);
          if (!close(a, b, bound)) mismatch(what, compare_values<T>("the result", a, b, {}, ref_.rank()), " (beyond rounding)");
          continue;
        }
      }
      const std::string m = compare_values<T>("the result", a, b, {}, ref_.rank());
      if (!m.empty())
        mismatch(what, m,
                 std::is_floating_point_v<T> && op == ReduceOp::sum
                     ? " comm::Mpi adds in rank order, ((x0 + x1) + x2) + ..., whatever the world size; shardopt's same bits under "
                       "every layout and world size need that order. If your communicator cannot keep it, check it with "
                       "{.ordered_sums = false}."
                     : "");
    }
  }

  template <class T>
  void reduce_scatter(ReduceOp op) {
    const auto p = static_cast<std::size_t>(ref_.size());
    for (std::size_t n : awkward_sizes()) {
      const auto send = random_values<T>(gen_, n * p);
      std::vector<T> a(n), b(n);
      const std::string what = std::string("reduce_scatter<") + type_name<T>() + ">(" + op_name(op) + ") of " + std::to_string(n) +
                               " elements per rank";
      const auto before = bytes();
      if (!call(what, [&] { c_.reduce_scatter(std::span<const T>(send), std::span<T>(a), op); })) return;
      ref_.reduce_scatter(std::span<const T>(send), std::span<T>(b), op);
      counted(what, before);
      if constexpr (std::is_floating_point_v<T>) {
        if (op == ReduceOp::sum && !checks_.ordered_sums) {
          std::vector<T> abs_send(send.size()), bound(n);
          for (std::size_t i = 0; i < send.size(); ++i) abs_send[i] = std::abs(send[i]);
          ref_.reduce_scatter(std::span<const T>(abs_send), std::span<T>(bound), ReduceOp::sum);
          if (!close(a, b, bound)) mismatch(what, compare_values<T>("the result", a, b, {}, ref_.rank()), " (beyond rounding)");
          continue;
        }
      }
      const std::string m = compare_values<T>("the result", a, b, {}, ref_.rank());
      if (!m.empty())
        mismatch(what, m, op == ReduceOp::sum ? " comm::Mpi adds in rank order; see CommChecks::ordered_sums." : "");
    }
  }

  template <class T>
  void all_gather() {
    const auto p = static_cast<std::size_t>(ref_.size()), r = static_cast<std::size_t>(ref_.rank());
    for (std::size_t n : awkward_sizes()) {
      const auto send = random_values<T>(gen_, n);
      std::vector<T> a(n * p), b(n * p);
      std::string what = std::string("all_gather<") + type_name<T>() + "> of " + std::to_string(n) + " elements per rank";
      auto before = bytes();
      if (!call(what, [&] { c_.all_gather(std::span<const T>(send), std::span<T>(a)); })) return;
      ref_.all_gather(std::span<const T>(send), std::span<T>(b));
      counted(what, before);
      std::string m = compare_values<T>("the result", a, b, {}, ref_.rank());
      if (!m.empty()) mismatch(what, m, "");
      // In place: `send` is this rank's own part of `recv`, as the optimizer passes it.
      std::vector<T> in(n * p, T{});
      std::copy(send.begin(), send.end(), in.begin() + static_cast<std::ptrdiff_t>(r * n));
      what = std::string("all_gather<") + type_name<T>() + "> in place (send is this rank's part of recv) of " + std::to_string(n) +
             " elements per rank";
      before = bytes();
      if (!call(what, [&] { c_.all_gather(std::span<const T>(in.data() + r * n, n), std::span<T>(in)); })) return;
      m = compare_values<T>("the result", in, b, {}, ref_.rank());
      if (!m.empty()) mismatch(what, m, "");
    }
  }

  template <class T>
  void broadcast() {
    for (int root = 0; root < ref_.size(); ++root)
      for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(13)}) {
        auto a = random_values<T>(gen_, n), b = a;
        const std::string what = std::string("broadcast<") + type_name<T>() + "> of " + std::to_string(n) + " elements from root " +
                                 std::to_string(root);
        const auto before = bytes();
        if (!call(what, [&] { c_.broadcast(std::span<T>(a), root); })) return;
        ref_.broadcast(std::span<T>(b), root);
        counted(what, before);
        const std::string m = compare_values<T>("the result", a, b, {}, ref_.rank());
        if (!m.empty()) mismatch(what, m, "");
      }
  }

  void rank_and_barrier() { call("barrier()", [&] { c_.barrier(); }); }

  // Started collectives (start_all_reduce, start_reduce_scatter, start_all_gather returning a
  // request with wait()), where the communicator has them, as ShardedOptimizer's pipelined step
  // uses them: three in flight at once, completed in reverse order, must give what the blocking
  // calls give. A communicator without them is stepped through the blocking ones.
  template <class T>
  void started() {
    if constexpr (requires(C& c, std::span<T> b, std::span<const T> s) {
                    c.start_all_reduce(b, ReduceOp::sum).wait();
                    c.start_reduce_scatter(s, b, ReduceOp::sum).wait();
                    c.start_all_gather(s, b).wait();
                  }) {
      const auto p = static_cast<std::size_t>(ref_.size());
      for (std::size_t n : awkward_sizes()) {
        const auto x = random_values<T>(gen_, n), y = random_values<T>(gen_, n * p), z = random_values<T>(gen_, n);
        auto a = x, a_ref = x;
        std::vector<T> rs(n), rs_ref(n), ag(n * p), ag_ref(n * p);
        const std::string what = std::string("start_all_reduce, start_reduce_scatter and start_all_gather<") + type_name<T>() +
                                 "> in flight together, of " + std::to_string(n) + " elements";
        if (!call(what, [&] {
              auto r1 = c_.start_all_reduce(std::span<T>(a), ReduceOp::sum);
              auto r2 = c_.start_reduce_scatter(std::span<const T>(y), std::span<T>(rs), ReduceOp::sum);
              auto r3 = c_.start_all_gather(std::span<const T>(z), std::span<T>(ag));
              r3.wait();
              r2.wait();
              r1.wait();
            }))
          return;
        ref_.all_reduce(std::span<T>(a_ref), ReduceOp::sum);
        ref_.reduce_scatter(std::span<const T>(y), std::span<T>(rs_ref), ReduceOp::sum);
        ref_.all_gather(std::span<const T>(z), std::span<T>(ag_ref));
        std::string m = compare_values<T>("the all-gathered values", ag, ag_ref, {}, ref_.rank());
        if (checks_.ordered_sums || !std::is_floating_point_v<T>) {
          if (m.empty()) m = compare_values<T>("the all-reduced values", a, a_ref, {}, ref_.rank());
          if (m.empty()) m = compare_values<T>("the reduce-scattered values", rs, rs_ref, {}, ref_.rank());
        }
        if (!m.empty()) mismatch(what, m, " (the blocking calls' results)");
      }
    }
  }

  // Wrong sizes and roots must throw InvalidArgument on every rank (they are the same on every rank).
  void errors() {
    const auto p = static_cast<std::size_t>(ref_.size());
    std::vector<double> big(3 * p + 1), small(3);
    expect_invalid("reduce_scatter with send.size() != size() * recv.size()",
                   [&] { c_.reduce_scatter(std::span<const double>(big), std::span<double>(small), ReduceOp::sum); });
    expect_invalid("all_gather with recv.size() != size() * send.size()",
                   [&] { c_.all_gather(std::span<const double>(small), std::span<double>(big)); });
    expect_invalid("broadcast from root size() (not a rank)", [&] { c_.broadcast(std::span<double>(small), ref_.size()); });
  }

 private:
  std::uint64_t bytes() {
    ref_bytes_ = ref_.stats().bytes_sent;
    return static_cast<std::uint64_t>(c_.stats().bytes_sent);
  }
  void counted(const std::string& what, std::uint64_t before) {
    if (!checks_.byte_counts) return;
    const std::uint64_t mine = static_cast<std::uint64_t>(c_.stats().bytes_sent) - before;
    const std::uint64_t expected = ref_.stats().bytes_sent - ref_bytes_;
    const std::string kind = what.substr(0, what.find('<'));
    if (mine != expected && reported_bytes_.insert(kind).second)
      f_.add(where_ + ": " + what + ": stats().bytes_sent grew by " + std::to_string(mine) + ", comm::Mpi counts " +
             std::to_string(expected) + " (the bytes this rank sends under a bandwidth-optimal algorithm, see shardopt::CommStats; "
             "check it with {.byte_counts = false} if your communicator counts otherwise).");
  }
  template <class Call>
  bool call(const std::string& what, Call&& body) {
    try {
      body();
      return true;
    } catch (const std::exception& e) {
      f_.add(where_ + ": " + what + " threw: " + e.what());
    }
    return false;
  }
  template <class Call>
  void expect_invalid(const std::string& what, Call&& body) {
    try {
      body();
      f_.add(where_ + ": " + what + " did not throw; it must throw shardopt::InvalidArgument (on every rank) before communicating.");
    } catch (const InvalidArgument&) {
    } catch (const std::exception& e) {
      f_.add(where_ + ": " + what + " threw an exception that is not shardopt::InvalidArgument: " + e.what());
    }
  }
  // Within the rounding of some order of addition: world_size * eps * sum |x| per element.
  template <class T>
  bool close(const std::vector<T>& a, const std::vector<T>& b, const std::vector<T>& bound) const {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])) >
          ref_.size() * static_cast<double>(std::numeric_limits<T>::epsilon()) * static_cast<double>(bound[i]))
        return false;
    return true;
  }
  void mismatch(const std::string& what, const std::string& m, const std::string& why) {
    f_.add(where_ + ": " + what + " differs from comm::Mpi: " + m + "." + why);
  }

  C& c_;
  comm::Mpi& ref_;
  std::string where_;
  const CommChecks& checks_;
  Findings& f_;
  std::mt19937_64 gen_;
  std::uint64_t ref_bytes_ = 0;
  std::set<std::string> reported_bytes_;
};

}  // namespace detail

/// @brief Asks `make(mpi_comm)` for a communicator over each span of `checks.spans`, and checks that
/// its rank and size are those of the MPI communicator and that its collectives give what
/// comm::Mpi gives on random buffers of awkward sizes (0, 1 and primes): all_reduce (float, double,
/// int64; sum, min, max), reduce_scatter (float, double; sum, max), all_gather (double, float, char,
/// int64; separate and in place), broadcast from every root, barrier, the byte counts, and
/// shardopt::InvalidArgument for wrong sizes or roots. Collective over MPI_COMM_WORLD.
/// @param make a callable `make(MPI_Comm)` returning the communicator to test over that MPI communicator
/// @param checks what to demand (see CommChecks)
template <class Factory>
Findings check_collectives(Factory&& make, const CommChecks& checks = {}) {
  using C = std::remove_cvref_t<decltype(make(MPI_COMM_WORLD))>;
  Findings out;
  for (Span s : checks.spans) {
    detail::SpanComm span(s);
    comm::Mpi ref(span.comm);
    const std::string where = "comm " + std::string(C::name) + " over " + span.description + ", rank " + std::to_string(ref.rank());
    out.add(detail::guarded(where, [&](Findings& f) {
      C c = make(span.comm);
      const bool wrong = c.rank() != ref.rank() || c.size() != ref.size();
      if (wrong)
        f.add(where + ": rank() = " + std::to_string(c.rank()) + " and size() = " + std::to_string(c.size()) + ", but the MPI communicator " +
              "it was made for has rank " + std::to_string(ref.rank()) + " of " + std::to_string(ref.size()) +
              (s == Span::world ? std::string() : " (a communicator must span the ranks it was made for, not MPI_COMM_WORLD)") +
              "; the collectives were not checked.");
      if (any_rank(ref, wrong)) return;
      detail::CollectiveCheck<C> k(c, ref, where, checks, f);
      k.rank_and_barrier();
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::min, ReduceOp::max}) {
        k.template all_reduce<double>(op);
        k.template all_reduce<float>(op);
        k.template all_reduce<std::int64_t>(op);
      }
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
        k.template reduce_scatter<double>(op);
        k.template reduce_scatter<float>(op);
      }
      k.template all_gather<double>();
      k.template all_gather<float>();
      k.template all_gather<char>();
      k.template all_gather<std::int64_t>();
      k.template broadcast<double>();
      k.template broadcast<char>();
      k.template broadcast<std::int64_t>();
      k.template started<double>();
      k.template started<float>();
      k.errors();
      k.rank_and_barrier();
    }));
  }
  return out;
}

/// @brief Runs `ShardedOptimizer<algo::Adam, Layout, C>` over the communicator `make` returns for
/// each span, under FlatPartition and DataParallel, beside the same optimizer over comm::Mpi: the
/// parameters and state must have the same bits (within rounding when `!checks.ordered_sums`). With
/// two or more ranks, ranks that register different shapes must get shardopt::CollectiveMismatch on
/// every rank from check_consistency(), as they do over comm::Mpi. Collective over MPI_COMM_WORLD.
template <class Factory>
Findings check_optimizer_over(Factory&& make, const CommChecks& checks = {}) {
  using C = std::remove_cvref_t<decltype(make(MPI_COMM_WORLD))>;
  Findings out;
  const algo::Adam::Options o{.lr = 0.05, .weight_decay = 0.1, .amsgrad = true};
  for (Span s : checks.spans) {
    detail::SpanComm span(s);
    comm::Mpi ref(span.comm);
    const std::string where = "ShardedOptimizer<Adam, Layout, " + std::string(C::name) + "> over " + span.description + ", rank " +
                              std::to_string(ref.rank());
    out.add(detail::guarded(where, [&](Findings& f) {
      C c = make(span.comm);
      auto compare = [&]<class Layout>() {
        detail::Model<C> mine(c, false);
        detail::Model<comm::Mpi> theirs(ref, false);
        ShardedOptimizer<algo::Adam, Layout, C> a(c, o);
        ShardedOptimizer<algo::Adam, Layout, comm::Mpi> b(ref, o);
        mine.register_in(a, a.add_param_group(o));
        theirs.register_in(b, b.add_param_group(o));
        for (int k = 1; k <= 3; ++k) {
          const int r = ref.rank();
          mine.set_gradients(k, [&]<class T>(std::size_t t) { return detail::rank_gradient<T>(t, k, r); });
          theirs.set_gradients(k, [&]<class T>(std::size_t t) { return detail::rank_gradient<T>(t, k, r); });
          a.step();
          b.step();
        }
        const Tolerance tol = checks.ordered_sums ? Tolerance{} : Tolerance{.ulps = 64, .eps = 64};
        const auto& ts = detail::model_tensors();
        for (std::size_t t = 0; t < ts.size(); ++t) {
          const std::string what = "parameter '" + ts[t].name + "' under " + std::string(Layout::name);
          const std::string m =
              ts[t].is_double
                  ? compare_values<double>(what, mine.template whole_values<double>(t), theirs.template whole_values<double>(t), tol, ref.rank(), ts[t].shape)
                  : compare_values<float>(what, mine.template whole_values<float>(t), theirs.template whole_values<float>(t), tol, ref.rank(), ts[t].shape);
          if (!m.empty()) f.add(where + ": after 3 steps, " + m + " (the reference is the same optimizer over comm::Mpi).");
        }
      };
      compare.template operator()<layout::FlatPartition>();
      compare.template operator()<layout::DataParallel>();
      if (ref.size() > 1) {
        Kokkos::View<float*> v("v", ref.rank() == ref.size() - 1 ? 4 : 3), g("g", v.size());
        ShardedOptimizer<algo::Adam, layout::FlatPartition, C> opt(c, o);
        opt.add_param("v", v, g);
        try {
          opt.check_consistency();
          f.add(where + ": rank " + std::to_string(ref.size() - 1) + " registered 'v' with shape [4], the others [3], and "
                "check_consistency() did not throw shardopt::CollectiveMismatch: the agreement all_reduce of int64 values "
                "(ReduceOp::min and max) does not work over this communicator.");
        } catch (const CollectiveMismatch&) {
        }
      }
    }));
  }
  return out;
}

namespace detail {
enum class CommCase { collectives, optimizer };
template <class Spec>
void run_comm_case(CommCase c) {
  if constexpr (Spec::valid) {
    if (!require_environment()) return;
    if (c == CommCase::collectives) report_across_ranks(check_collectives(&Spec::make, Spec::checks()));
    else report_across_ranks(check_optimizer_over(&Spec::make, Spec::checks()));
  }
}
}  // namespace detail

}  // namespace shardopt::testing

/// @brief Registers the conformance suite of a communicator policy as the Boost.Test suite `suite`.
///
/// @code
/// SHARDOPT_COMM_CONFORMANCE(my_comm_conformance, [](MPI_Comm c) { return MyComm(c); });
/// SHARDOPT_COMM_CONFORMANCE(serial_conformance, [](MPI_Comm) { return shardopt::comm::Serial{}; },
///                           {.spans = {shardopt::testing::Span::self}});
/// @endcode
///
/// - `factory`: a callable `factory(MPI_Comm)` that returns the communicator under test over the
///   processes of that MPI communicator, numbered as it numbers them.
/// - `...`: optionally a shardopt::testing::CommChecks (which spans, ordered sums, byte counts).
///
/// Test cases, run on every process of the test executable:
/// - `collectives_agree_with_mpi`: the policy satisfies shardopt::Communicator (at compile time, one
///   readable message otherwise) and check_collectives();
/// - `optimizer_runs_over_it`: check_optimizer_over().
#define SHARDOPT_COMM_CONFORMANCE(suite, factory, ...)                                                              \
  BOOST_AUTO_TEST_SUITE(suite)                                                                                      \
  struct shardopt_comm_spec {                                                                                       \
    using comm_type = std::remove_cvref_t<decltype((factory)(MPI_COMM_WORLD))>;                                     \
    static constexpr bool valid = ::shardopt::detail::check_communicator<comm_type>();                              \
    static comm_type make(MPI_Comm c) { return (factory)(c); }                                                      \
    static ::shardopt::testing::CommChecks checks() { return ::shardopt::testing::comm_checks(__VA_ARGS__); }       \
  };                                                                                                                \
  BOOST_AUTO_TEST_CASE(collectives_agree_with_mpi) {                                                                \
    ::shardopt::testing::detail::run_comm_case<shardopt_comm_spec>(::shardopt::testing::detail::CommCase::collectives); \
  }                                                                                                                 \
  BOOST_AUTO_TEST_CASE(optimizer_runs_over_it) {                                                                    \
    ::shardopt::testing::detail::run_comm_case<shardopt_comm_spec>(::shardopt::testing::detail::CommCase::optimizer); \
  }                                                                                                                 \
  BOOST_AUTO_TEST_SUITE_END()

#else  // !SHARDOPT_HAS_MPI

#define SHARDOPT_COMM_CONFORMANCE(suite, factory, ...)                                                         \
  static_assert(false, "SHARDOPT_COMM_CONFORMANCE compares a communicator with comm::Mpi over MPI communicators: it " \
                       "needs shardopt built with MPI (SHARDOPT_ENABLE_MPI=ON, which defines SHARDOPT_HAS_MPI=1).")

#endif  // SHARDOPT_HAS_MPI
