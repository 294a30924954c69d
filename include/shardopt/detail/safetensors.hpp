// SPDX-License-Identifier: BSD-3-Clause
#pragma once
// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON, then the tensors' bytes. Writing the header, and reading and
// validating it so that no later read can leave the file, plus the POSIX file calls a checkpoint uses.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <shardopt/error.hpp>

namespace shardopt::detail {

static_assert(std::endian::native == std::endian::little,
              "shardopt checkpoints (safetensors) are little-endian; big-endian hosts are not supported");

// When set, ShardedOptimizer::save() calls it at named points ("header_written", "before_fsync",
// "before_rename", "after_rename"); the crash-safety tests kill the writer there.
inline void (*checkpoint_test_hook)(const char* point) = nullptr;

namespace st {

inline constexpr std::uint64_t max_header_bytes = 100u << 20;  // as the reference implementation

struct Tensor {
  std::string dtype;                // "F32", "F64", "I64"
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::uint64_t begin = 0, end = 0;  // byte range within the data section
};

struct Header {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
  std::uint64_t data_start = 0;  // file offset of the data section
  std::uint64_t data_size = 0;
};

inline std::uint64_t item_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

// The header bytes (length prefix included), padded with spaces to a multiple of 8.
inline std::string encode(const Header& h) {
  nlohmann::json j = nlohmann::json::object();
  if (!h.metadata.empty()) j["__metadata__"] = h.metadata;
  for (const auto& [name, t] : h.tensors) j[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  std::string text = j.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text;
}

// ---- POSIX files ---------------------------------------------------------------------------------

[[noreturn]] inline void fail(const std::string& path, const std::string& what) { throw IoError("checkpoint '" + path + "': " + what); }
[[noreturn]] inline void fail_errno(const std::string& path, const std::string& what) {
  fail(path, what + ": " + std::strerror(errno));
}

class File {
 public:
  File(const std::string& path, int flags, mode_t mode = 0644) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd_ < 0) fail_errno(path, "cannot open");
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::uint64_t size() const {
    struct stat s {};
    if (::fstat(fd_, &s) != 0) fail_errno(path_, "cannot stat");
    return static_cast<std::uint64_t>(s.st_size);
  }
  void write_at(const void* data, std::uint64_t n, std::uint64_t offset) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail_errno(path_, "write failed");
      p += w, n -= static_cast<std::uint64_t>(w), offset += static_cast<std::uint64_t>(w);
    }
  }
  void read_at(void* data, std::uint64_t n, std::uint64_t offset) const {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail_errno(path_, "read failed");
      if (r == 0) fail(path_, "the file ended early (truncated while reading?)");
      p += r, n -= static_cast<std::uint64_t>(r), offset += static_cast<std::uint64_t>(r);
    }
  }
  void resize(std::uint64_t n) {
    if (::ftruncate(fd_, static_cast<off_t>(n)) != 0) fail_errno(path_, "cannot set the file size");
  }
  void sync() {
    if (::fsync(fd_) != 0) fail_errno(path_, "fsync failed");
  }
  void close() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_errno(path_, "close failed");
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// Makes a rename in `path`'s directory durable.
inline void sync_directory(const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  File d(dir.empty() ? std::string(".") : dir.string(), O_RDONLY | O_DIRECTORY);
  d.sync();
}

// ---- checksums
//
// A checksum of a tensor that ranks compute in parts and add up: the sum mod 2^64, over its
// elements, of (bits ^ (index * K1)) * K2 (bits: the element's bytes as a little-endian integer,
// index: its row-major flat index). Written by save() as the metadata entry "shardopt.checksums"
// ({"<tensor>": "<16 hex digits>"}), checked by load(): a write that went wrong silently, or a file
// changed at rest, is found. One multiply and one add per element.

struct Checksum {
  static constexpr std::uint64_t k1 = 0x9e3779b97f4a7c15ull, k2 = 0xbf58476d1ce4e5b9ull;
  std::uint64_t sum = 0;
  // Adds elements index, index + 1, ... with the values v[0..n).
  template <class T>
  void add(std::uint64_t index, const T* v, std::size_t n) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8);
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    std::uint64_t s = 0;
    for (std::size_t e = 0; e < n; ++e) {
      U bits;
      std::memcpy(&bits, v + e, sizeof(T));
      s += (std::uint64_t(bits) ^ ((index + e) * k1)) * k2;
    }
    sum += s;
  }
  std::string hex() const {
    char out[17];
    std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(sum));
    return out;
  }
};
inline constexpr const char* checksum_placeholder = "0000000000000000";

// ---- temporary files of save()
//
// save() writes `<path>.shardopt-tmp-<host>.<pid>.<random>` and renames it over `<path>`. A writer
// removes the temporaries of earlier saves to the same path only when they are provably stale: the
// process that created it is gone (same host), or it has not been written to for stale_temp_age.
// Temporaries of live writers (another job saving to the same path) are left alone.

inline constexpr const char* temp_marker = ".shardopt-tmp-";
inline constexpr std::chrono::hours stale_temp_age{24};

inline std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}
// `<host>.<pid>.<random>` for this process.
inline std::string temp_suffix() {
  std::random_device rd;
  const std::uint64_t r = (std::uint64_t(rd()) << 32) ^ rd();
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(r));
  return host_name() + "." + std::to_string(::getpid()) + "." + hex;
}
// Whether the temporary file `file`, whose name ends in `suffix` (temp_suffix()'s form) after the
// marker, is stale.
inline bool stale_temp(const std::filesystem::path& file, const std::string& suffix) {
  std::error_code ec;
  const auto written = std::filesystem::last_write_time(file, ec);
  if (!ec && std::filesystem::file_time_type::clock::now() - written > stale_temp_age) return true;
  const auto last = suffix.rfind('.');
  const auto mid = last == std::string::npos || last == 0 ? std::string::npos : suffix.rfind('.', last - 1);
  if (mid == std::string::npos || suffix.substr(0, mid) != host_name()) return false;  // another host: by age only
  const std::string pid = suffix.substr(mid + 1, last - mid - 1);
  if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) return false;
  return ::kill(static_cast<pid_t>(std::stoi(pid)), 0) != 0 && errno == ESRCH;  // its writer is gone
}
inline void remove_stale_temps(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + temp_marker;
  std::error_code ec;
  const auto dir = p.parent_path().empty() ? std::filesystem::path(".") : p.parent_path();
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && stale_temp(e.path(), name.substr(prefix.size()))) std::filesystem::remove(e.path(), ec);
  }
}

// ---- reading and validating ----------------------------------------------------------------------

// Reads and checks the header: its size, JSON syntax, every entry's dtype, shape and byte range
// (inside the file, matching the shape, not overlapping). After this, reads of the listed tensors
// stay inside the file.
inline Header read_header(const File& f, const std::string& path) {
  const std::uint64_t size = f.size();
  if (size < 8) fail(path, "not a safetensors file: " + std::to_string(size) + " bytes, fewer than the 8-byte header length");
  std::uint64_t n = 0;
  f.read_at(&n, 8, 0);
  if (n > max_header_bytes)
    fail(path, "the header claims " + std::to_string(n) + " bytes, more than the limit of " + std::to_string(max_header_bytes) +
                   " (corrupt or not a safetensors file)");
  if (n > size - 8)
    fail(path, "the header claims " + std::to_string(n) + " bytes but the file has only " + std::to_string(size - 8) +
                   " after the length (truncated?)");
  std::string text(static_cast<std::size_t>(n), '\0');
  f.read_at(text.data(), n, 8);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(path, "the header is not valid JSON (corrupt file?)");
  if (!j.is_object()) fail(path, "the header is not a JSON object");
  Header h;
  h.data_start = 8 + n;
  h.data_size = size - h.data_start;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(path, "__metadata__ entry '" + mk + "' is not a string");
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + key + "': ";
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
      fail(path, where + "needs dtype, shape and data_offsets");
    const auto& dt = value["dtype"];
    const auto& shape = value["shape"];
    const auto& offsets = value["data_offsets"];
    if (!dt.is_string() || item_size(dt.get<std::string>()) == 0) fail(path, where + "unknown dtype " + dt.dump());
    if (!shape.is_array() || shape.size() > 16) fail(path, where + "shape is not an array of at most 16 dimensions");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      fail(path, where + "data_offsets is not a pair of non-negative integers");
    Tensor t;
    t.dtype = dt.get<std::string>();
    std::uint64_t bytes = item_size(t.dtype);
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail(path, where + "shape " + shape.dump() + " has an entry that is not a non-negative integer");
      const auto e = d.get<std::uint64_t>();
      if (e > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) || (e != 0 && bytes > h.data_size / e))
        fail(path, where + "shape " + shape.dump() + " needs more bytes than the file holds");
      bytes *= e;
      t.shape.push_back(static_cast<std::int64_t>(e));
    }
    t.begin = offsets[0].get<std::uint64_t>();
    t.end = offsets[1].get<std::uint64_t>();
    if (t.begin > t.end || t.end > h.data_size)
      fail(path, where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     "] are not inside the data section of " + std::to_string(h.data_size) + " bytes (truncated?)");
    if (t.end - t.begin != bytes)
      fail(path, where + "data_offsets span " + std::to_string(t.end - t.begin) + " bytes but dtype and shape need " +
                     std::to_string(bytes));
    if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
    h.tensors.emplace(key, std::move(t));
  }
  // As the reference reader: the tensors' bytes tile the data section, no overlap, no gap, nothing after.
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, "two tensors' data_offsets overlap");
  std::uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin > covered)
      fail(path, "bytes [" + std::to_string(covered) + ", " + std::to_string(begin) + ") of the data section belong to no tensor");
    covered = end;
  }
  if (covered != h.data_size)
    fail(path, "the file has " + std::to_string(h.data_size - covered) + " byte(s) after the last tensor's data (appended to?)");
  return h;
}

}  // namespace st
}  // namespace shardopt::detail
