#include "agent/wal_sync.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "store/test_util.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

using store::testing::TempDir;

bool readable(int fd, int timeout_ms) {
  struct pollfd p {
    fd, POLLIN, 0
  };
  return ::poll(&p, 1, timeout_ms) == 1;
}

// Waits (at most `tries` tenths of a second) for the syncer to report `ticket` durable
// through its eventfd.
bool durable_within(WalSyncer& s, std::uint64_t ticket, int tries = 100) {
  for (int i = 0; i < tries && s.durable() < ticket; ++i) {
    if (readable(s.fd(), 100)) s.clear();
  }
  return s.durable() >= ticket;
}

// A database file and its log in DIR, as SQLite leaves them after a write; the
// database's path.
std::string database_with_log(const TempDir& dir) {
  const std::string db = dir / "vow.db";
  std::ofstream(db) << "x";
  std::ofstream(db + "-wal") << "frames";
  return db;
}

}  // namespace

TEST_CASE("a sync is made in the pass only once one has been measured cheap") {
  TempDir dir;
  const std::string db = database_with_log(dir);
  WalSyncer generous(db, /*cheap_sync_us=*/60'000'000);
  // No sync measured yet: its cost is unknown, so the thread makes it.
  CHECK_FALSE(generous.sync_if_cheap(1));
  CHECK(generous.durable() == 0);
  generous.request(1);
  REQUIRE(durable_within(generous, 1));
  // Measured, and under the bound: made on the caller's thread, durable on return, and
  // the loop is not woken for it.
  CHECK(generous.sync_if_cheap(2));
  CHECK(generous.durable() == 2);
  CHECK_FALSE(readable(generous.fd(), 0));

  // Over the bound (a bound below zero: every sync is): the thread makes it.
  WalSyncer never(db, /*cheap_sync_us=*/-1);
  never.request(1);
  REQUIRE(durable_within(never, 1));
  CHECK_FALSE(never.sync_if_cheap(2));
  CHECK(never.durable() == 1);
}

TEST_CASE("a sync made in the pass that fails is reported as the thread's would be") {
  TempDir dir;
  const std::string db = dir / "vow.db";
  std::ofstream(db) << "x";
  WalSyncer s(db, /*cheap_sync_us=*/60'000'000);
  s.request(1);
  REQUIRE(durable_within(s, 1));
  // Without its log the syncer syncs the database file; with neither, the sync fails.
  fs::remove(db);
  CHECK_FALSE(s.sync_if_cheap(2));
  CHECK(s.durable() == 1);
  CHECK_FALSE(s.error().is_ok());
  CHECK(readable(s.fd(), 1000));  // the loop is woken to read the error
  // And nothing more is made durable after an error, on either thread.
  CHECK_FALSE(s.sync_if_cheap(3));
  s.request(3);
  CHECK_FALSE(durable_within(s, 3, 5));
}

// The files this process holds open whose name ends with SUFFIX, and whether any of them
// has lost its name.
struct Held {
  int count = 0;
  int unnamed = 0;
};
Held held_open(const std::string& suffix) {
  Held h;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (ec) continue;
    const bool gone = target.size() > 10 && target.ends_with(" (deleted)");
    const std::string name = gone ? target.substr(0, target.size() - 10) : target;
    if (!name.ends_with(suffix)) continue;
    ++h.count;
    if (gone) ++h.unnamed;
  }
  return h;
}

TEST_CASE("the syncer follows the log when it is removed and made again") {
  TempDir dir;
  const std::string db = database_with_log(dir);
  WalSyncer s(db, /*cheap_sync_us=*/60'000'000);
  s.request(1);
  REQUIRE(durable_within(s, 1));
  CHECK(held_open("vow.db-wal").count == 1);
  // SQLite removes the log when its last connection closes and makes a new one at the
  // next write: the next sync is of the new file, not of the one held.
  fs::remove(db + "-wal");
  std::ofstream(db + "-wal") << "new frames";
  s.request(2);
  REQUIRE(durable_within(s, 2));
  Held h = held_open("vow.db-wal");
  CHECK(h.count == 1);
  CHECK(h.unnamed == 0);
  // Removed and not made again: the database is synced, and the old log let go.
  fs::remove(db + "-wal");
  s.request(3);
  REQUIRE(durable_within(s, 3));
  CHECK(s.error().is_ok());
  CHECK(held_open("vow.db-wal").count == 0);
}

}  // namespace vow::agent
