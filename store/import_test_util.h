// Helpers shared by the import tests (import_cache_test.cc, artifact_import_test.cc): a
// state directory whose store records what it opens, stats and lists, and the wall
// clock the import cache reads. Test-only; thread-compatible.
#pragma once

#include <doctest/doctest.h>
#include <time.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "store/artifact_store.h"
#include "store/env.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store::testing {

inline constexpr std::int64_t kSecond = 1'000'000'000;

inline std::int64_t wall_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

// A state directory whose store records what it opens, stats and lists (FaultyEnv, no
// faults planned).
struct ImportAgent {
  TempDir dir;
  FaultyEnv env{posix_env()};
  std::unique_ptr<LedgerStore> ledger;
  std::unique_ptr<ArtifactStore> store;
  ImportAgent() { restart(); }
  // As after an agent restart: the index and the store are opened again.
  void restart() {
    store.reset();
    ledger.reset();
    auto l = open_sqlite_ledger(ledger_path(dir.path()));
    REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
    ledger = std::move(l).value();
    auto s = ArtifactStore::open(artifacts_root(dir.path()), *ledger, env);
    REQUIRE_MESSAGE(s.is_ok(), s.status().to_string());
    store = std::move(s).value();
  }
  // Paths under PREFIX opened for reading since the last call.
  std::vector<std::string> opened_under(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& p : env.opened()) {
      if (p.compare(0, prefix.size(), prefix) == 0) out.push_back(p);
    }
    env.clear_opened();
    return out;
  }
  // Paths under PREFIX stat'ed or listed since the last call (the opened ones forgotten).
  std::vector<std::string> looked_under(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& p : env.looked_at()) {
      if (p.compare(0, prefix.size(), prefix) == 0) out.push_back(p);
    }
    env.clear_looked_at();
    env.clear_opened();
    return out;
  }
};

}  // namespace vow::store::testing
