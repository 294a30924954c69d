// SPDX-License-Identifier: BSD-3-Clause
// Checkpoint files that are damaged or interrupted. Built with AddressSanitizer and UBSan (see
// tests/CMakeLists.txt), so a read outside a buffer fails the test even where it would not crash.
// - corrupt files (truncated, flipped header bytes, wrong offsets, a header claiming terabytes):
//   a clear error and an unchanged optimizer, never a crash;
// - a writer killed (SIGKILL) at each point of save(): the file at the path is always a complete
//   checkpoint, the old or the new one, and the next save leaves no temporary file behind.
#include <boost/test/unit_test.hpp>

#include "support.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace so = shardopt;
namespace fs = std::filesystem;

namespace {

using Opt = so::ShardedOptimizer<so::algo::Adam, so::layout::Replicated, so::comm::Serial>;

struct Dir {
  fs::path path;
  Dir() {
    char tmpl[] = "/tmp/shardopt-files-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~Dir() { fs::remove_all(path); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct Model {
  Kokkos::View<float**> w{"w", 4, 3}, gw{"gw", 4, 3};
  Kokkos::View<double*> b{"b", 5}, gb{"gb", 5};
  Opt opt{so::comm::Serial{}, {.lr = 0.1, .amsgrad = true}};
  Model() {
    opt.add_param("w", w, gw);
    opt.add_param("b", b, gb);
  }
  void step(int k) {
    std::vector<float> g(w.size());
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = float(test::gradient_value(0, static_cast<std::int64_t>(i), k));
    test::from_host(gw, g);
    std::vector<double> h(b.size());
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = test::gradient_value(1, static_cast<std::int64_t>(i), k);
    test::from_host(gb, h);
    opt.step();
  }
  // The whole state as bytes, for equality.
  std::string fingerprint() {
    std::string s;
    const auto sd = opt.full_state_dict();
    for (const auto& [name, ps] : sd.state) {
      s += name + ":" + std::to_string(ps.step) + ";";
      for (const auto& [slot, parts] : ps.slots)
        for (const auto& part : parts) s.append(reinterpret_cast<const char*>(part.values.data()), part.values.size() * sizeof(double));
    }
    for (const auto& g : opt.param_groups()) s += so::describe_options<so::algo::Adam>(g.options);
    return s;
  }
};

// Splits a checkpoint into its JSON header and data section.
struct Parts {
  nlohmann::json header;
  std::string data;
};
Parts split(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {nlohmann::json::parse(file.substr(8, n)), file.substr(8 + n)};
}
std::string join(const nlohmann::json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string out(8, '\0');
  const std::uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text + data;
}

// The checkpoint without tensor `key`: its header entry, its bytes and its checksum removed, the
// other tensors moved up, so that the file is otherwise valid.
std::string without(nlohmann::json header, std::string data, const std::string& key) {
  const std::uint64_t b = header[key]["data_offsets"][0], e = header[key]["data_offsets"][1];
  header.erase(key);
  for (auto it = header.begin(); it != header.end(); ++it) {
    auto& t = it.value();
    if (it.key() != "__metadata__" && t["data_offsets"][0].get<std::uint64_t>() >= e)
      t["data_offsets"] = {t["data_offsets"][0].get<std::uint64_t>() - (e - b), t["data_offsets"][1].get<std::uint64_t>() - (e - b)};
  }
  auto sums = nlohmann::json::parse(header["__metadata__"]["shardopt.checksums"].get<std::string>());
  sums.erase(key);
  header["__metadata__"]["shardopt.checksums"] = sums.dump();
  data.erase(b, e - b);
  return join(header, data);
}

// A model stepped once and its checkpoint: the file's bytes and its header length.
struct Saved {
  std::string file;
  std::uint64_t header = 0;
};
Saved save_once(Model& m, const Dir& dir) {
  m.step(1);
  m.opt.save((dir.path / "good").string());
  Saved s{read_file(dir.path / "good")};
  std::memcpy(&s.header, s.file.data(), 8);
  return s;
}

// Loading `bytes` must fail with shardopt::Error whose message contains `phrase`, changing nothing.
void expect_rejected(Model& m, const fs::path& p, const std::string& bytes, const std::string& phrase) {
  write_file(p, bytes);
  const std::string before = m.fingerprint();
  BOOST_CHECK_EXCEPTION(m.opt.load(p.string()), so::Error, [&](const so::Error& e) {
    const bool ok = std::string(e.what()).find(phrase) != std::string::npos;
    if (!ok) BOOST_TEST_MESSAGE("message was: " << e.what());
    return ok;
  });
  BOOST_TEST((m.fingerprint() == before), "the optimizer changed");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint_files)

BOOST_AUTO_TEST_CASE(truncated_files_are_rejected) {
  Dir dir;
  Model m;
  const auto [good, n] = save_once(m, dir);
  m.step(2);
  const std::vector<std::pair<std::size_t, std::string>> cuts = {
      {0, "fewer than the 8-byte"},           {3, "fewer than the 8-byte"},
      {8, "truncated"},                       {9, "truncated"},
      {8 + n - 1, "truncated"},               {8 + n, "more bytes than the file holds"},
      {good.size() - 1, "not inside the data section"}};
  for (const auto& [size, phrase] : cuts) {
    BOOST_TEST_CONTEXT("truncated to " << size << " of " << good.size() << " bytes") {
      expect_rejected(m, dir.path / "bad", good.substr(0, size), phrase);
    }
  }
}

BOOST_AUTO_TEST_CASE(headers_that_lie_are_rejected) {
  Dir dir;
  Model m;
  const std::string good = save_once(m, dir).file;
  const auto [header, data] = split(good);
  const fs::path bad = dir.path / "bad";

  std::string terabytes = good;
  const std::uint64_t huge = 1ull << 42;
  std::memcpy(terabytes.data(), &huge, 8);
  expect_rejected(m, bad, terabytes, "more than the limit");

  auto h = header;
  h["state.w.exp_avg"]["data_offsets"] = {0, 1ull << 50};
  expect_rejected(m, bad, join(h, data), "not inside the data section");
  h = header;
  h["state.w.exp_avg"]["data_offsets"] = header["state.w.exp_avg_sq"]["data_offsets"];
  expect_rejected(m, bad, join(h, data), "overlap");
  h = header;
  h["state.w.exp_avg"]["shape"] = {4, 4};
  expect_rejected(m, bad, join(h, data), "dtype and shape need");
  h = header;
  h["state.w.exp_avg"]["shape"] = {1ull << 40, 1ull << 40};
  expect_rejected(m, bad, join(h, data), "more bytes than the file holds");
  h = header;
  h["state.w.exp_avg"]["shape"] = {-1, 3};
  expect_rejected(m, bad, join(h, data), "not a non-negative integer");
  h = header;
  h["state.w.exp_avg"]["dtype"] = "Q8";
  expect_rejected(m, bad, join(h, data), "unknown dtype");
  h = header;
  h["state.w.exp_avg"]["dtype"] = "F64";
  h["state.w.exp_avg"]["shape"] = {4, 3, 2};  // a valid entry, but not this parameter's state
  h["state.w.exp_avg"]["data_offsets"] = {data.size(), data.size()};
  expect_rejected(m, bad, join(h, data), "");
  h = header;
  h["state.w.exp_avg"].erase("dtype");
  expect_rejected(m, bad, join(h, data), "needs dtype, shape and data_offsets");
  h = header;
  h.erase("__metadata__");
  expect_rejected(m, bad, join(h, data), "not a shardopt checkpoint");
  h = header;
  h["__metadata__"]["shardopt.param_groups"] = "[{\"options\": ";
  expect_rejected(m, bad, join(h, data), "shardopt.param_groups is not valid JSON");
  h = header;
  h["__metadata__"]["shardopt.param_groups"] = "{\"options\": {}}";
  expect_rejected(m, bad, join(h, data), "not a JSON array");
  h = header;  // a number JSON cannot hold as a double: the parser's own words, not "not an array"
  h["__metadata__"]["shardopt.param_groups"] = "[{\"options\": {\"lr\": 1e400}, \"params\": [\"w\", \"b\"]}]";
  expect_rejected(m, bad, join(h, data), "number overflow");
  // As the safetensors reference reader: bytes after the last tensor, or between two, are an error.
  expect_rejected(m, bad, good + std::string(8, '\0'), "8 byte(s) after the last tensor's data");
  h = header;  // 8 bytes of nothing after the first tensor's data
  std::uint64_t first_end = 0;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    auto& t = it.value();
    const std::uint64_t b = t["data_offsets"][0], e = t["data_offsets"][1];
    if (b == 0) first_end = e;
    else t["data_offsets"] = {b + 8, e + 8};
  }
  expect_rejected(m, bad, join(h, data.substr(0, first_end) + std::string(8, '\0') + data.substr(first_end)), "belong to no tensor");
  expect_rejected(m, bad, without(header, data, "state.b.step"), "state.b.step is missing");
  h = header;
  h["state.ghost.exp_avg"] = h["state.w.exp_avg"];
  expect_rejected(m, bad, join(h, data), "overlap");
  h = header;
  h["__metadata__"]["shardopt.param_groups"] = "[{\"options\": {\"lr\": -1}, \"params\": [\"w\", \"b\"]}]";
  expect_rejected(m, bad, join(h, data), "Invalid learning rate: -1");
  std::string not_json = good;
  not_json[9] = '#';
  expect_rejected(m, bad, not_json, "not valid JSON");
}

// Every byte of the header flipped in turn: the load fails cleanly or, where the flip still makes
// a valid checkpoint (a digit of an option, say), succeeds; it never crashes or reads out of bounds.
BOOST_AUTO_TEST_CASE(flipped_header_bytes_never_crash) {
  Dir dir;
  Model m;
  const auto [good, n] = save_once(m, dir);
  std::size_t rejected = 0, accepted = 0;
  for (std::size_t at = 0; at < 8 + n; ++at) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ (at < 8 ? 0x40 : 0x11));
    write_file(dir.path / "bad", bad);
    Model fresh;
    const std::string before = fresh.fingerprint();
    try {
      fresh.opt.load((dir.path / "bad").string());
      ++accepted;
    } catch (const so::Error&) {
      ++rejected;
      BOOST_TEST((fresh.fingerprint() == before), "a failed load changed the optimizer (byte " << at << ")");
    }
  }
  BOOST_TEST_MESSAGE("flipped header bytes: " << rejected << " rejected, " << accepted << " still valid");
  BOOST_TEST(rejected > 8 + n / 2);
}

// Every tensor's checksum is in the header: a changed byte of the data (a write that went wrong
// silently, or a file changed at rest) is found on load. Files without checksums (written by other
// tools) still load.
BOOST_AUTO_TEST_CASE(data_that_does_not_match_its_checksum_is_rejected) {
  Dir dir;
  Model m;
  const auto [good, n] = save_once(m, dir);
  const auto [header, data] = split(good);
  const auto checksums = nlohmann::json::parse(header["__metadata__"]["shardopt.checksums"].get<std::string>());
  BOOST_TEST(checksums.size() == header.size() - 1);  // every tensor
  for (const char* key : {"state.w.exp_avg_sq", "state.b.max_exp_avg_sq", "state.b.step"}) {
    BOOST_TEST_CONTEXT(key) {
      const std::uint64_t at = 8 + n + header[key]["data_offsets"][0].get<std::uint64_t>() + 1;
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ 0x01);
      expect_rejected(m, dir.path / "bad", bad, "the data of '" + std::string(key) + "' does not match its checksum");
    }
  }
  auto h = header;
  h["__metadata__"]["shardopt.checksums"] = "{\"state.w.exp_avg\": \"00\"}";
  expect_rejected(m, dir.path / "bad", join(h, data), "is not 16 hexadecimal digits");
  h = header;
  h["__metadata__"].erase("shardopt.checksums");
  write_file(dir.path / "unchecked", join(h, data));
  Model reader;
  reader.opt.load((dir.path / "unchecked").string());
  BOOST_TEST((reader.fingerprint() == m.fingerprint()));
}

// A file whose header lists every slot of a parameter but one (bytes removed too, so the file is a
// valid safetensors file): the slot would restart at zero while the step count goes on.
BOOST_AUTO_TEST_CASE(a_file_missing_a_whole_slot_is_rejected) {
  Dir dir;
  Model m;
  const std::string good = save_once(m, dir).file;
  const auto [header, data] = split(good);
  expect_rejected(m, dir.path / "bad", without(header, data, "state.b.exp_avg_sq"), "parameter 'b': state slot exp_avg_sq is missing");
}

// Two writers saving to one path at once (two jobs, or two processes of one): neither removes the
// other's temporary file, each save succeeds, and the path ends with one complete checkpoint.
BOOST_AUTO_TEST_CASE(concurrent_writers_to_one_path_both_succeed) {
  Dir dir;
  const std::string path = (dir.path / "shared.safetensors").string();
  Model m;
  m.step(1);
  std::vector<pid_t> children;
  for (int c = 0; c < 2; ++c) {
    const pid_t child = fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0) {
      int failures = 0;
      for (int i = 0; i < 40; ++i) {
        try {
          m.opt.save(path);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "writer %d, save %d: %s\n", c, i, e.what());
          ++failures;
        }
      }
      ::_exit(failures == 0 ? 0 : 1);
    }
    children.push_back(child);
  }
  for (const pid_t child : children) {
    int status = 0;
    BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), "a writer's save failed (see its messages above)");
  }
  Model reader;
  BOOST_REQUIRE_NO_THROW(reader.opt.load(path));
  BOOST_TEST((reader.fingerprint() == m.fingerprint()));
  BOOST_TEST(dir.entries() == std::vector<std::string>{"shared.safetensors"}, boost::test_tools::per_element());
}

// Which temporary files a save removes: those of writers that are gone (same host), and those not
// written for a day; never those of a live writer or of another host's recent one.
BOOST_AUTO_TEST_CASE(only_stale_temporary_files_are_removed) {
  Dir dir;
  const std::string path = (dir.path / "c.safetensors").string();
  const std::string host = so::detail::st::host_name(), marker = std::string("c.safetensors") + so::detail::st::temp_marker;
  const pid_t gone = fork();
  if (gone == 0) ::_exit(0);
  ::waitpid(gone, nullptr, 0);
  const std::string live = marker + host + "." + std::to_string(::getpid()) + ".00000000000000aa",
                    dead = marker + host + "." + std::to_string(gone) + ".00000000000000bb",
                    other_host = marker + "elsewhere.example.1234.00000000000000cc",
                    old_other_host = marker + "elsewhere.example.1235.00000000000000dd", unnamed = marker + "12345";
  for (const auto& f : {live, dead, other_host, old_other_host}) write_file(dir.path / f, "x");
  write_file(dir.path / unnamed, "x");
  const auto two_days_ago = fs::file_time_type::clock::now() - std::chrono::hours(48);
  fs::last_write_time(dir.path / old_other_host, two_days_ago);
  Model m;
  m.step(1);
  m.opt.save(path);
  auto expect = std::vector<std::string>{"c.safetensors", live, other_host, unnamed};
  std::sort(expect.begin(), expect.end());
  BOOST_TEST(dir.entries() == expect, boost::test_tools::per_element());
}

// A writer killed at each point of save(): the path holds a complete checkpoint, old or new.
BOOST_AUTO_TEST_CASE(a_killed_writer_leaves_a_complete_checkpoint) {
  Dir dir;
  const std::string path = (dir.path / "ckpt.safetensors").string();
  Model m;
  m.step(1);
  m.opt.save(path);
  const std::string old_state = m.fingerprint(), old_file = read_file(path);
  m.step(2);
  const std::string new_state = m.fingerprint();
  for (const char* point : {"header_written", "before_fsync", "before_rename", "after_rename"}) {
    BOOST_TEST_CONTEXT("killed at " << point) {
      write_file(path, old_file);  // start from the old checkpoint each time
      static const char* target = nullptr;
      target = point;
      const pid_t child = fork();
      BOOST_REQUIRE(child >= 0);
      if (child == 0) {
        so::detail::checkpoint_test_hook = [](const char* at) {
          if (std::strcmp(at, target) == 0) ::kill(::getpid(), SIGKILL);
        };
        try {
          m.opt.save(path);
        } catch (...) {
        }
        ::_exit(3);  // not killed: the hook point was never reached
      }
      int status = 0;
      BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
      BOOST_TEST((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), "the writer was not killed at " << point);
      Model reader;
      BOOST_REQUIRE_NO_THROW(reader.opt.load(path));
      const std::string got = reader.fingerprint();
      const bool renamed = std::string(point) == "after_rename";
      BOOST_TEST((got == (renamed ? new_state : old_state)), "the file holds neither the expected old nor new checkpoint");
      // The killed writer's temporary file remains (until the next save removes it), unless renamed.
      BOOST_TEST(dir.entries().size() == (renamed ? 1u : 2u));
    }
  }
  m.opt.save(path);
  BOOST_TEST(dir.entries() == std::vector<std::string>{"ckpt.safetensors"}, boost::test_tools::per_element());
  Model reader;
  reader.opt.load(path);
  BOOST_TEST((reader.fingerprint() == new_state));
}

BOOST_AUTO_TEST_SUITE_END()
