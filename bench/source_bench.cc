// source_bench: what a source snapshot costs when little changed (BENCHMARKS.md, "Source
// snapshots"). A directory of many small files is snapshotted with an import cache
// (ArtifactStore::import_path(path, cache), as vowd's sources are), then:
//   first       the first snapshot, empty store and empty cache (every file read and stored)
//   one-change  one file rewritten, snapshot again through the cache
//                 vs  the same run's full re-import of the same files (import_path without
//                     a cache: every file read, hashed, copied, fsynced, renamed again)
//   unchanged   nothing changed, snapshot again through the cache (a poll)
//                 vs  a walk that lstats every entry and hashes names, sizes, modes and
//                     times (the change test vowd ran before each import)
//   named-dir   one file rewritten, snapshot again with its directory named as changed
//               (as vowd does after an inotify event): only that directory and the top
//               are walked; the import alone, as vowd saves the cache file only after
//               full walks (its save is timed apart: cache-save)
//                 vs  one-change (every entry lstat'ed)
//   none-named  nothing changed, nothing named (vowd's check after `vow wait` with no
//               event): the tree from the cache
//                 vs  unchanged
//   restart     the store and the cache reopened from disk, nothing changed, snapshot
// The files are created once, then left for longer than the racy window
// (store/import_cache.h) so that the cache may remember them, as a dataset's files would.
// Each figure is measured --runs times (default 1); the median and min..max are printed.
//
// --no-full skips the full re-import (on disk it takes many minutes at 100,000 files).
//
// Usage: source_bench [--runs N] [--files N] [--per-dir N] [--dir DIR] [--no-full]
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "store/artifact_store.h"
#include "store/import_cache.h"
#include "store/sqlite_ledger.h"

namespace {

using namespace vow;
using namespace vow::store;
using bench::Clock;
namespace fs = std::filesystem;

using bench::seconds_since;

using bench::Series;

void print(const char* name, const Series& fig) {
  std::printf("%-11s %9.3f s (%.3f..%.3f)\n", name, fig.median(), fig.min(), fig.max());
}

void print(const char* name, const Series& fig, const char* base_name, const Series& base) {
  std::printf("%-11s %9.3f s (%.3f..%.3f)   baseline %-22s %9.3f s (%.3f..%.3f)   ratio %.4f\n",
              name, fig.median(), fig.min(), fig.max(), base_name, base.median(), base.min(),
              base.max(), fig.median() / base.median());
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "source_bench: %s\n", what.c_str());
  std::exit(1);
}

void write(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out.good()) die("write " + path);
}

// The change test vowd ran before each import: every entry lstat'ed, its name, size,
// mode and modification time hashed, in sorted order.
Digest stat_walk(const std::string& path) {
  Hasher h;
  std::error_code ec;
  std::vector<fs::path> all;
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    all.push_back(it->path());
  }
  std::sort(all.begin(), all.end());
  for (const auto& p : all) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    h.update_field(p.string());
    h.update_u64(static_cast<std::uint64_t>(st.st_size));
    h.update_u64(static_cast<std::uint64_t>(st.st_mode));
    h.update_u64(static_cast<std::uint64_t>(st.st_mtim.tv_sec));
    h.update_u64(static_cast<std::uint64_t>(st.st_mtim.tv_nsec));
  }
  return h.finish();
}

struct Opened {
  std::unique_ptr<LedgerStore> ledger;
  std::unique_ptr<ArtifactStore> store;
};

Opened open_state(const std::string& state) {
  Opened o;
  auto l = open_sqlite_ledger(ledger_path(state));
  if (!l.is_ok()) die(l.status().to_string());
  o.ledger = std::move(l).value();
  auto s = ArtifactStore::open(artifacts_root(state), *o.ledger);
  if (!s.is_ok()) die(s.status().to_string());
  o.store = std::move(s).value();
  return o;
}

Digest snapshot(ArtifactStore& store, ImportCache& cache, const std::string& src,
                const std::string& cache_file, ImportStats* stats,
                const ChangedDirs* changed = nullptr) {
  auto r = store.import_path(src, cache, stats, changed);
  if (!r.is_ok()) die(r.status().to_string());
  if (cache.dirty()) {
    Status s = cache.save(posix_env(), cache_file);
    if (!s.is_ok()) die(s.to_string());
  }
  return r->digest;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 1;
  int files = 100'000;
  int per_dir = 1'000;
  bool no_full = false;
  std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--runs") {
      runs = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--files") {
      files = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--per-dir") {
      per_dir = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--dir") {
      base = next();
    } else if (a == "--no-full") {
      no_full = true;
    } else {
      std::fprintf(stderr,
                   "usage: source_bench [--runs N] [--files N] [--per-dir N] [--dir DIR] "
                   "[--no-full]\n");
      return 2;
    }
  }
  if (sodium_init() < 0) die("sodium_init");
  std::string root = base + "/vow-source-bench-" + std::to_string(::getpid());
  std::string src = root + "/src";
  int dirs = (files + per_dir - 1) / per_dir;
  auto t0 = Clock::now();
  for (int i = 0; i < files; ++i) {
    std::string dir = src + "/d" + std::to_string(i / per_dir);
    if (i % per_dir == 0) fs::create_directories(dir);
    write(dir + "/f" + std::to_string(i) + ".txt",
          "record " + std::to_string(i) + ": " + std::string(40 + i % 60, 'x') + "\n");
  }
  std::printf("source_bench: %d files in %d directories (%d entries), written in %.1f s\n", files,
              dirs, files + dirs, seconds_since(t0));
  // Older than the racy window, as a dataset's files are when a change comes.
  std::this_thread::sleep_for(std::chrono::nanoseconds(kRacyWindowNs + 1'000'000'000));

  Series first, one_change, full, unchanged, walk, named, none_named, cache_save, restart;
  ImportStats st_first, st_change, st_unchanged, st_named, st_none, st_restart;
  std::uint64_t cache_bytes = 0;
  for (int run = 0; run < runs; ++run) {
    std::string state = root + "/state-" + std::to_string(run);
    fs::create_directories(state);
    std::string cache_file = state + "/source.cache";
    Digest after_change;
    {
      Opened o = open_state(state);
      ImportCache cache(src);
      t0 = Clock::now();
      Digest d0 = snapshot(*o.store, cache, src, cache_file, &st_first);
      first.v.push_back(seconds_since(t0));

      std::string changed = src + "/d" + std::to_string((files / 2) / per_dir) + "/f" +
                            std::to_string(files / 2) + ".txt";
      write(changed, "changed in run " + std::to_string(run) + "\n");
      t0 = Clock::now();
      after_change = snapshot(*o.store, cache, src, cache_file, &st_change);
      one_change.v.push_back(seconds_since(t0));
      if (st_change.files_read != 1) die("the one-change snapshot read more than one file");
      if (after_change == d0) die("the one-change snapshot missed the change");

      if (!no_full) {
        t0 = Clock::now();
        auto again = o.store->import_path(src);
        full.v.push_back(seconds_since(t0));
        if (!again.is_ok()) die(again.status().to_string());
        if (again->digest != after_change) die("full re-import differs from the cached snapshot");
      }

      // The changed file was written just now: it is racy until the window has passed.
      std::this_thread::sleep_for(std::chrono::nanoseconds(kRacyWindowNs + 1'000'000'000));
      (void)snapshot(*o.store, cache, src, cache_file, nullptr);
      t0 = Clock::now();
      Digest d2 = snapshot(*o.store, cache, src, cache_file, &st_unchanged);
      unchanged.v.push_back(seconds_since(t0));
      if (d2 != after_change || st_unchanged.files_read != 0) die("unchanged snapshot read files");
      t0 = Clock::now();
      (void)stat_walk(src);
      walk.v.push_back(seconds_since(t0));
      cache_bytes = fs::file_size(cache_file);

      // The same change, its directory named, in another directory than the first.
      int other = (files / 2 + per_dir) % files;
      std::string dir = "d" + std::to_string(other / per_dir);
      write(src + "/" + dir + "/f" + std::to_string(other) + ".txt",
            "named in run " + std::to_string(run) + "\n");
      ChangedDirs named_dirs{dir};
      t0 = Clock::now();
      auto r = o.store->import_path(src, cache, &st_named, &named_dirs);
      named.v.push_back(seconds_since(t0));
      if (!r.is_ok()) die(r.status().to_string());
      if (st_named.files_read != 1 || st_named.dirs_walked != 2) {
        die("the named-dir snapshot walked more than the top and the named directory");
      }
      t0 = Clock::now();
      Status saved = cache.save(posix_env(), cache_file);
      cache_save.v.push_back(seconds_since(t0));
      if (!saved.is_ok()) die(saved.to_string());
      // What a walk of everything through the cache gives (the changed file is racy: read
      // again), so that the named-dir snapshot is checked against it.
      Digest walked = snapshot(*o.store, cache, src, cache_file, nullptr);
      if (walked != r->digest || walked == after_change) {
        die("the named-dir snapshot differs from a walk of everything");
      }
      std::this_thread::sleep_for(std::chrono::nanoseconds(kRacyWindowNs + 1'000'000'000));
      (void)snapshot(*o.store, cache, src, cache_file, nullptr);  // remembered once old enough
      ChangedDirs none;
      t0 = Clock::now();
      auto same = o.store->import_path(src, cache, &st_none, &none);
      none_named.v.push_back(seconds_since(t0));
      if (!same.is_ok() || same->digest != walked || st_none.dirs_reused != 1) {
        die("the none-named snapshot did not take the tree from the cache");
      }
      after_change = walked;
    }
    {
      t0 = Clock::now();
      Opened o = open_state(state);
      std::string dropped;
      auto cache = ImportCache::load(posix_env(), cache_file, src, &dropped);
      if (!cache.is_ok() || !dropped.empty()) die("cache not loaded: " + dropped);
      Digest d3 = snapshot(*o.store, *cache, src, cache_file, &st_restart);
      restart.v.push_back(seconds_since(t0));
      if (d3 != after_change || st_restart.files_read != 0) die("restart snapshot read files");
    }
    fs::remove_all(state);
  }
  fs::remove_all(root);

  std::printf("%d runs; median (min..max); cache file %.1f MiB\n", runs,
              static_cast<double>(cache_bytes) / (1 << 20));
  print("first", first);
  if (no_full) {
    print("one-change", one_change);
  } else {
    print("one-change", one_change, "full re-import", full);
  }
  print("unchanged", unchanged, "stat walk (old check)", walk);
  print("named-dir", named, "one-change", one_change);
  print("none-named", none_named, "unchanged", unchanged);
  print("cache-save", cache_save);
  print("restart", restart);
  std::printf("one-change: %llu of %llu files read, %llu trees written, %llu reused\n",
              static_cast<unsigned long long>(st_change.files_read),
              static_cast<unsigned long long>(st_change.files),
              static_cast<unsigned long long>(st_change.trees_written),
              static_cast<unsigned long long>(st_change.trees_reused));
  std::printf("named-dir: %llu of %llu files read, %llu directories walked, %llu taken whole\n",
              static_cast<unsigned long long>(st_named.files_read),
              static_cast<unsigned long long>(st_named.files),
              static_cast<unsigned long long>(st_named.dirs_walked),
              static_cast<unsigned long long>(st_named.dirs_reused));
  return 0;
}
