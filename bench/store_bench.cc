// store_bench: what the store costs, each figure beside a baseline measured in the same
// run on the same bytes (BENCHMARKS.md, "Store").
//   import      ArtifactStore::import_path of one large file (read + hash + write +
//               fsync + rename + index)    vs  BLAKE2b-256 of the same bytes in memory
//   single      LedgerStore::insert, one transaction (WAL fsync) per statement
//                                          vs  write + fdatasync of the same bytes, per statement
//   batched     LedgerStore::insert_batch of 1000 statements per transaction
//                                          vs  plain SQLite INSERTs of the same rows, one
//                                              transaction (no checks, no row checksum)
// Each figure is measured --runs times (default 5); the median and the min..max spread
// are printed.
//
// Usage: store_bench [--runs N] [--size-mb N] [--statements N] [--dir DIR]
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"

namespace {

using namespace vow;
using namespace vow::store;
using bench::Clock;

using bench::seconds_since;

using bench::Series;

void print(const char* name, const char* unit, const Series& fig, const char* base_name,
           const Series& base) {
  std::printf("%-8s %10.1f %s (%.1f..%.1f)   baseline %-28s %10.1f %s (%.1f..%.1f)   ratio %.2f\n",
              name, fig.median(), unit, fig.min(), fig.max(), base_name, base.median(), unit,
              base.min(), base.max(), fig.median() / base.median());
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "store_bench: %s\n", what.c_str());
  std::exit(1);
}

std::vector<StoredStatement> make_statements(std::size_t n, std::uint64_t first_seq,
                                             std::mt19937_64& rng) {
  std::vector<StoredStatement> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto& s = out[i];
    s.author.bytes[0] = 7;
    s.seq = first_seq + i;
    s.kind = StatementKind::kClaim;
    Digest job;
    for (auto& b : job.bytes) b = static_cast<std::uint8_t>(rng());
    s.job = job;
    s.epoch = 1;
    s.bytes.resize(300);  // about a claim's encoded size
    for (auto& c : s.bytes) c = static_cast<char>(rng());
    for (auto& b : s.signature) b = static_cast<std::uint8_t>(rng());
  }
  return out;
}

// Rows per second of plain SQLite INSERTs, one transaction, same pragmas as the ledger.
double raw_sqlite_rate(const std::string& path, const std::vector<StoredStatement>& rows) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) die("open " + path);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (author BLOB, "
               "seq INTEGER, kind INTEGER, job BLOB, epoch INTEGER, bytes BLOB, signature BLOB, "
               "PRIMARY KEY (author, seq))",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &st, nullptr);
  auto t0 = Clock::now();
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  for (const auto& s : rows) {
    sqlite3_bind_blob(st, 1, s.author.bytes.data(), 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, static_cast<sqlite3_int64>(s.seq));
    sqlite3_bind_int(st, 3, static_cast<int>(s.kind));
    sqlite3_bind_blob(st, 4, s.job->bytes.data(), 32, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, static_cast<int>(s.epoch));
    sqlite3_bind_blob(st, 6, s.bytes.data(), static_cast<int>(s.bytes.size()), SQLITE_STATIC);
    sqlite3_bind_blob(st, 7, s.signature.data(), 64, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) die("raw insert");
    sqlite3_reset(st);
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) die("raw commit");
  double rate = static_cast<double>(rows.size()) / seconds_since(t0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rate;
}

// write + fdatasync of each statement's bytes: the durability floor of a single insert.
double fsync_rate(const std::string& path, const std::vector<StoredStatement>& rows) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + path);
  auto t0 = Clock::now();
  for (const auto& s : rows) {
    if (::write(fd, s.bytes.data(), s.bytes.size()) < 0 || ::fdatasync(fd) != 0) die("fsync");
  }
  double rate = static_cast<double>(rows.size()) / seconds_since(t0);
  ::close(fd);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  std::size_t size_mb = 256;
  std::size_t n_single = 300;
  const std::size_t n_batched = 20'000;
  const std::size_t batch_size = 1000;
  std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--runs") {
      runs = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--size-mb") {
      size_mb = static_cast<std::size_t>(std::max(1, std::atoi(next().c_str())));
    } else if (a == "--statements") {
      n_single = static_cast<std::size_t>(std::max(1, std::atoi(next().c_str())));
    } else if (a == "--dir") {
      base = next();
    } else {
      std::fprintf(stderr,
                   "usage: store_bench [--runs N] [--size-mb N] [--statements N] [--dir DIR]\n");
      return 2;
    }
  }
  if (sodium_init() < 0) die("sodium_init");
  std::string root = base + "/vow-store-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(root);
  std::mt19937_64 rng(42);

  // The input file, written once; the page cache holds it for every run.
  std::string input = root + "/input.bin";
  std::string data(size_mb << 20, '\0');
  for (std::size_t i = 0; i < data.size(); i += 8) {
    std::uint64_t r = rng();
    std::memcpy(&data[i], &r, std::min<std::size_t>(8, data.size() - i));
  }
  {
    FILE* f = std::fopen(input.c_str(), "wb");
    if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size()) die("write input");
    std::fclose(f);
  }

  Series import_mbs, hash_mbs, single, single_base, batched, batched_base;
  const double mb = static_cast<double>(data.size()) / (1 << 20);
  for (int run = 0; run < runs; ++run) {
    std::string state = root + "/state-" + std::to_string(run);
    std::filesystem::create_directories(state);
    auto ledger = open_sqlite_ledger(ledger_path(state));
    if (!ledger.is_ok()) die(ledger.status().to_string());

    auto t0 = Clock::now();
    Digest h = blake2b(data);
    hash_mbs.v.push_back(mb / seconds_since(t0));
    {
      auto store = ArtifactStore::open(artifacts_root(state), **ledger);
      if (!store.is_ok()) die(store.status().to_string());
      t0 = Clock::now();
      auto ref = (*store)->import_path(input);
      if (!ref.is_ok()) die(ref.status().to_string());
      import_mbs.v.push_back(mb / seconds_since(t0));
      if (ref->digest != h) die("import digest differs from BLAKE2b of the bytes");
    }

    auto rows = make_statements(n_single, 1, rng);
    single_base.v.push_back(fsync_rate(state + "/fsync.bin", rows));
    t0 = Clock::now();
    for (const auto& s : rows) {
      if (Status st = (*ledger)->insert(s); !st.is_ok()) die(st.to_string());
    }
    single.v.push_back(static_cast<double>(rows.size()) / seconds_since(t0));

    auto many = make_statements(n_batched, n_single + 1, rng);
    batched_base.v.push_back(raw_sqlite_rate(state + "/raw.db", many));
    t0 = Clock::now();
    for (std::size_t i = 0; i < many.size(); i += batch_size) {
      std::span<const StoredStatement> batch(many.data() + i,
                                             std::min(batch_size, many.size() - i));
      if (Status st = (*ledger)->insert_batch(batch); !st.is_ok()) die(st.to_string());
    }
    batched.v.push_back(static_cast<double>(many.size()) / seconds_since(t0));
    ledger->reset();
    std::filesystem::remove_all(state);
  }
  std::filesystem::remove_all(root);

  std::printf("store_bench: %d runs, %zu MiB file, %zu single + %zu batched statements (300 B)\n",
              runs, size_mb, n_single, n_batched);
  std::printf("median (min..max)\n");
  print("import", "MB/s", import_mbs, "BLAKE2b in memory", hash_mbs);
  print("single", "st/s", single, "write+fdatasync per statement", single_base);
  print("batched", "st/s", batched, "raw SQLite INSERT, 1 txn", batched_base);
  return 0;
}
