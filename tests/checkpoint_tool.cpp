// SPDX-License-Identifier: BSD-3-Clause
// checkpoint_tool: steps shardopt on the parameters of scripts/make_golden.py, loading and saving
// checkpoints; scripts/torch_interop.py drives it to check that checkpoints interoperate with torch.
//
//   checkpoint_tool run --algo SGD|Adagrad|Adam|AdamW|RMSprop|NAdam --dtype float32|float64|bfloat16|float16
//                       --options k=v,k=v,... --from A --to B --params-out FILE
//                       [--load CKPT] [--params-in FILE] [--save CKPT]
//                       [--layout Replicated|DataParallel|FlatPartition|ChunkRows]
//                       [--grad-scaler init_scale=S,growth_interval=N]
//
// Parameters t0, t1, t2 of shapes [5], [2, 3], [2, 1, 2] (16-bit ones with float32 master weights,
// the values and gradients rounded to float32 first) start at test::initial_value(t, i) or
// the tensors of --params-in (safetensors). Then: opt.load(CKPT) if --load; steps k = A+1..B with
// gradients test::gradient_value(t, i, k) on every rank; opt.save(CKPT) if --save; rank 0
// writes the parameters to --params-out (safetensors, tensors t0, t1, t2). With --grad-scaler, a
// shardopt::GradScaler goes along: loaded and saved with the checkpoint (load(CKPT, scaler),
// save(CKPT, scaler)), the gradients multiplied by its scale (in float32, before the rounding to
// a 16-bit type), each step opt.step(scaler). Options are
// shardopt's names (Adam's betas as beta1, beta2), booleans as true/false or 1/0. Runs under
// comm::Mpi(MPI_COMM_WORLD) at any number of ranks (comm::Serial when built without MPI).
// Exit status: 0 done, 1 an error from shardopt or a file, 2 bad arguments.
#include "support.hpp"

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

#if SHARDOPT_HAS_MPI
using Comm = shardopt::comm::Mpi;
Comm make_comm() { return Comm(MPI_COMM_WORLD); }
#else
using Comm = shardopt::comm::Serial;
Comm make_comm() { return Comm{}; }
#endif

constexpr const char* usage =
    "usage: checkpoint_tool run --algo SGD|Adagrad|Adam|AdamW|RMSprop|NAdam --dtype float32|float64|bfloat16|float16\n"
    "                           --options k=v,k=v,... --from A --to B --params-out FILE\n"
    "                           [--load CKPT] [--params-in FILE] [--save CKPT]\n"
    "                           [--layout Replicated|DataParallel|FlatPartition|ChunkRows]\n"
    "                           [--grad-scaler init_scale=S,growth_interval=N]\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct FileError : std::runtime_error {  // found by one rank alone
  using std::runtime_error::runtime_error;
};
struct OtherRankFailed : std::runtime_error {
  OtherRankFailed() : std::runtime_error("another rank failed") {}
};

const char* const names[] = {"t0", "t1", "t2"};
const std::vector<std::int64_t> shapes[] = {{5}, {2, 3}, {2, 1, 2}};

struct Args {
  std::string algo, dtype, layout = "Replicated", params_out;
  std::vector<std::pair<std::string, double>> options;
  std::int64_t from = -1, to = -1;
  std::optional<std::string> load, params_in, save;
  std::optional<shardopt::GradScaler::Options> scaler;
};

std::int64_t parse_int(const std::string& flag, const std::string& s) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0)
    throw UsageError(flag + " " + s + ": not a non-negative integer");
  return v;
}

std::vector<std::pair<std::string, double>> parse_options(const std::string& text) {
  std::vector<std::pair<std::string, double>> out;
  std::size_t at = 0;
  while (at <= text.size() && !text.empty()) {
    const auto comma = std::min(text.find(',', at), text.size());
    const std::string kv = text.substr(at, comma - at);
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
      throw UsageError("--options: '" + kv + "' is not name=value");
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    double v = 0;
    if (value == "true") v = 1;
    else if (value == "false") v = 0;
    else {
      char* end = nullptr;
      v = std::strtod(value.c_str(), &end);
      if (end != value.c_str() + value.size()) throw UsageError("--options: the value of " + key + ", '" + value + "', is not a number or true/false");
    }
    out.emplace_back(key, v);
    at = comma + 1;
  }
  return out;
}

// --grad-scaler's options: init_scale and growth_interval (the others torch's defaults).
shardopt::GradScaler::Options parse_scaler(const std::string& text) {
  shardopt::GradScaler::Options o;
  for (const auto& [k, v] : parse_options(text)) {
    if (k == "init_scale") o.init_scale = v;
    else if (k == "growth_interval") o.growth_interval = static_cast<std::int64_t>(v);
    else throw UsageError("--grad-scaler: no option '" + k + "' (its options: init_scale, growth_interval)");
  }
  return o;
}

Args parse_args(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "run")
    throw UsageError(argc < 2 ? "no command given" : "unknown command '" + std::string(argv[1]) + "' (the only one is 'run')");
  Args a;
  bool have_options = false;
  for (int i = 2; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw UsageError(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--algo") a.algo = value;
    else if (flag == "--dtype") a.dtype = value;
    else if (flag == "--options") a.options = parse_options(value), have_options = true;
    else if (flag == "--from") a.from = parse_int(flag, value);
    else if (flag == "--to") a.to = parse_int(flag, value);
    else if (flag == "--load") a.load = value;
    else if (flag == "--params-in") a.params_in = value;
    else if (flag == "--save") a.save = value;
    else if (flag == "--params-out") a.params_out = value;
    else if (flag == "--layout") a.layout = value;
    else if (flag == "--grad-scaler") a.scaler = parse_scaler(value);
    else throw UsageError("unknown argument '" + flag + "'");
  }
  if (a.algo.empty()) throw UsageError("--algo is required");
  if (a.dtype != "float32" && a.dtype != "float64" && a.dtype != "bfloat16" && a.dtype != "float16")
    throw UsageError("--dtype must be float32, float64, bfloat16 or float16, not '" + a.dtype + "'");
  if (!have_options) throw UsageError("--options is required (it may be empty: --options '')");
  if (a.from < 0 || a.to < 0) throw UsageError("--from and --to are required");
  if (a.to < a.from) throw UsageError("--to " + std::to_string(a.to) + " is before --from " + std::to_string(a.from));
  if (a.params_out.empty()) throw UsageError("--params-out is required");
  return a;
}

// ---- parameter files: safetensors with tensors t0, t1, t2 ------------------------------------------

std::int64_t numel(std::size_t t) {
  std::int64_t n = 1;
  for (auto s : shapes[t]) n *= s;
  return n;
}

template <class T>
const char* st_dtype() {
  return shardopt::detail::ElementType<T>::file.data();
}

template <class T>
std::vector<std::vector<T>> read_params(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("--params-in " + path + ": cannot open: " + std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto fail = [&](const std::string& what) { return FileError("--params-in " + path + ": " + what); };
  std::uint64_t n = 0;
  if (bytes.size() < 8) throw fail("not a safetensors file (fewer than 8 bytes)");
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8) throw fail("the header length " + std::to_string(n) + " exceeds the file");
  const auto header = nlohmann::json::parse(bytes.substr(8, n), nullptr, false);
  if (header.is_discarded() || !header.is_object()) throw fail("the header is not a JSON object");
  const std::uint64_t data = 8 + n, data_size = bytes.size() - data;
  std::vector<std::vector<T>> out;
  for (std::size_t t = 0; t < 3; ++t) {
    if (!header.contains(names[t])) throw fail(std::string("no tensor ") + names[t]);
    const auto& e = header[names[t]];
    if (!e.is_object() || e.value("dtype", "") != st_dtype<T>() || e.value("shape", nlohmann::json()) != nlohmann::json(shapes[t]))
      throw fail(std::string("tensor ") + names[t] + " is " + e.dump() + ", expected dtype " + st_dtype<T>() + " and shape " +
                 nlohmann::json(shapes[t]).dump());
    const auto& off = e.value("data_offsets", nlohmann::json());
    const std::uint64_t size = static_cast<std::uint64_t>(numel(t)) * sizeof(T);
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned() ||
        off[1].get<std::uint64_t>() > data_size || off[1].get<std::uint64_t>() < size ||
        off[1].get<std::uint64_t>() - size != off[0].get<std::uint64_t>())
      throw fail(std::string("tensor ") + names[t] + ": bad data_offsets " + off.dump());
    std::vector<T> v(static_cast<std::size_t>(numel(t)));
    std::memcpy(v.data(), bytes.data() + data + off[0].get<std::uint64_t>(), size);
    out.push_back(std::move(v));
  }
  return out;
}

template <class T>
void write_params(const std::string& path, const std::vector<std::vector<T>>& values) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (std::size_t t = 0; t < 3; ++t) {
    const std::uint64_t at = data.size(), size = values[t].size() * sizeof(T);
    header[names[t]] = {{"dtype", st_dtype<T>()}, {"shape", shapes[t]}, {"data_offsets", {at, at + size}}};
    data.append(reinterpret_cast<const char*>(values[t].data()), size);
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const std::uint64_t n = text.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << text << data;
  out.close();
  if (!out) throw FileError("--params-out " + path + ": cannot write");
}

// A failure found by one rank alone is made known to every rank before the next collective, so
// that no rank waits in it for a rank that gave up.
void agree_local(const Comm& comm, std::exception_ptr err) {
  int bad = err ? 1 : 0, any = bad;
#if SHARDOPT_HAS_MPI
  if (comm.size() > 1) MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
#else
  (void)comm;
#endif
  if (err) std::rethrow_exception(err);
  if (any) throw OtherRankFailed();
}

// ---- the run --------------------------------------------------------------------------------------

template <class Algo, class Layout, class T>
void run(const Args& a, const typename Algo::Options& options) {
  using Opt = shardopt::ShardedOptimizer<Algo, Layout, Comm>;
  Comm comm = make_comm();
  Opt opt(comm, options);
  Kokkos::View<T*, Kokkos::LayoutRight> p0("t0", 5), g0("g0", 5);
  Kokkos::View<T**, Kokkos::LayoutRight> p1("t1", 2, 3), g1("g1", 2, 3);
  Kokkos::View<T***, Kokkos::LayoutRight> p2("t2", 2, 1, 2), g2("g2", 2, 1, 2);
  auto set = [&](const std::vector<std::vector<T>>& v, bool grad) {
    test::from_host(grad ? g0 : p0, v[0]);
    test::from_host(grad ? g1 : p1, v[1]);
    test::from_host(grad ? g2 : p2, v[2]);
  };
  std::optional<shardopt::GradScaler> scaler;
  if (a.scaler) scaler.emplace(*a.scaler);
  auto by_formula = [](auto value, double scale = 1.0) {
    std::vector<std::vector<T>> v(3);
    for (std::size_t t = 0; t < 3; ++t)
      for (std::int64_t i = 0; i < numel(t); ++i) {
        const double x = value(static_cast<std::int64_t>(t), i);
        if constexpr (sizeof(T) == 2)  // through float32, as the golden recipe
          v[t].push_back(T(static_cast<float>(x) * static_cast<float>(scale)));
        else
          v[t].push_back(static_cast<T>(x) * static_cast<T>(scale));
      }
    return v;
  };

  std::exception_ptr err;
  try {
    set(a.params_in ? read_params<T>(*a.params_in) : by_formula(test::initial_value), false);
  } catch (...) {
    err = std::current_exception();
  }
  agree_local(comm, err);
  opt.add_param(names[0], p0, g0);
  opt.add_param(names[1], p1, g1);
  opt.add_param(names[2], p2, g2);

  if (a.load) {
    if (scaler) opt.load(*a.load, *scaler);
    else opt.load(*a.load);
    for (const char* n : names)
      if (opt.step_count(n) != a.from)
        throw shardopt::InvalidArgument("--from " + std::to_string(a.from) + ", but in the checkpoint " + *a.load +
                                        " parameter " + n + " took " + std::to_string(opt.step_count(n)) + " steps");
  }
  for (std::int64_t k = a.from + 1; k <= a.to; ++k) {
    opt.zero_grad(false);
    set(by_formula([k](std::int64_t t, std::int64_t i) { return test::gradient_value(t, i, k); }, scaler ? scaler->scale() : 1.0), true);
    if (scaler) opt.step(*scaler);
    else opt.step();
  }
  if (a.save) {
    if (scaler) opt.save(*a.save, *scaler);
    else opt.save(*a.save);
  }
  if (comm.rank() == 0) write_params<T>(a.params_out, {test::to_host<T>(p0), test::to_host<T>(p1), test::to_host<T>(p2)});
}

template <class Algo, class Layout>
void with_layout(const Args& a) {
  typename Algo::Options o;
  for (const auto& [k, v] : a.options) {
    if (!shardopt::set_option<Algo>(o, k, v)) {
      std::string known;
      for (const auto& [n, unused] : shardopt::option_values<Algo>(o)) known += (known.empty() ? "" : ", ") + n;
      throw UsageError("--options: " + std::string(Algo::name) + " has no option '" + k + "' (its options: " + known + ")");
    }
  }
  if (a.dtype == "float32") run<Algo, Layout, float>(a, o);
  else if (a.dtype == "float64") run<Algo, Layout, double>(a, o);
  else if (a.dtype == "bfloat16") run<Algo, Layout, shardopt::bfloat16>(a, o);
  else run<Algo, Layout, shardopt::float16>(a, o);
}

template <class Algo>
void with_algo(const Args& a) {
  namespace L = shardopt::layout;
  if (a.layout == "Replicated") with_layout<Algo, L::Replicated>(a);
  else if (a.layout == "DataParallel") with_layout<Algo, L::DataParallel>(a);
  else if (a.layout == "FlatPartition") with_layout<Algo, L::FlatPartition>(a);
  else if (a.layout == "ChunkRows") with_layout<Algo, L::ChunkRows>(a);
  else throw UsageError("--layout must be Replicated, DataParallel, FlatPartition or ChunkRows, not '" + a.layout + "'");
}

void dispatch(const Args& a) {
  namespace A = shardopt::algo;
  if (a.algo == "SGD") with_algo<A::SGD>(a);
  else if (a.algo == "Adagrad") with_algo<A::Adagrad>(a);
  else if (a.algo == "Adam") with_algo<A::Adam>(a);
  else if (a.algo == "AdamW") with_algo<A::AdamW>(a);
  else if (a.algo == "RMSprop") with_algo<A::RMSprop>(a);
  else if (a.algo == "NAdam") with_algo<A::NAdam>(a);  // per-tensor scalar state (mu_product)
  else throw UsageError("--algo must be SGD, Adagrad, Adam, AdamW, RMSprop or NAdam, not '" + a.algo + "'");
}

}  // namespace

int main(int argc, char** argv) {
  shardopt::ScopeGuard guard(argc, argv);
  int rank = 0;
#if SHARDOPT_HAS_MPI
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#endif
  // Errors every rank meets alike are printed by rank 0; one rank's own by that rank.
  try {
    dispatch(parse_args(argc, argv));
    return 0;
  } catch (const UsageError& e) {
    if (rank == 0) std::cerr << "checkpoint_tool: error: " << e.what() << "\n" << usage;
    return 2;
  } catch (const FileError& e) {
    std::cerr << "checkpoint_tool: error on rank " << rank << ": " << e.what() << "\n";
  } catch (const OtherRankFailed&) {
  } catch (const shardopt::Error& e) {
    if (rank == 0) std::cerr << "checkpoint_tool: error: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "checkpoint_tool: error on rank " << rank << ": " << e.what() << "\n";
  }
  return 1;
}
