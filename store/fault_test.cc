// Fault injection: failed writes, failed fsync and a full disk, beneath the artifact
// store (FaultyEnv), beneath SQLite (FaultyVfs) and at the LedgerStore interface
// (FaultyLedger). Each must return an error saying what failed and leave a store that
// reopens with fsck clean and nothing half-visible.
#include <doctest/doctest.h>

#include <filesystem>

#include "store/artifact_store.h"
#include "store/faulty_vfs.h"
#include "store/fsck.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::make_statement;
using testing::TempDir;
using testing::TestKey;
using testing::write_file;

void require_clean(const std::string& state_dir) {
  // Reopening runs the store's recovery, as an agent's restart would.
  {
    auto l = open_sqlite_ledger(ledger_path(state_dir));
    REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
    auto s = ArtifactStore::open(artifacts_root(state_dir), **l);
    REQUIRE_MESSAGE(s.is_ok(), s.status().to_string());
  }
  auto report = fsck_state_dir(state_dir);
  REQUIRE_MESSAGE(report.is_ok(), report.status().to_string());
  for (const auto& p : report->problems) FAIL_CHECK(p.to_string());
}

bool contains(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

TEST_CASE("faults: artifact writes that fail leave nothing half-visible") {
  TempDir dir;
  std::string src = dir / "src";
  for (int i = 0; i < 5; ++i)
    write_file(src + "/f" + std::to_string(i), "content " + std::to_string(i));
  Digest tree_expected;
  {
    auto l = open_sqlite_ledger(ledger_path(dir.path()));
    REQUIRE(l.is_ok());
    FaultyEnv env(posix_env());
    auto store = ArtifactStore::open(artifacts_root(dir.path()), **l, env);
    REQUIRE(store.is_ok());

    SUBCASE("the Nth write fails") {
      env.plan().fail_write_n = env.writes() + 3;
      auto r = (*store)->import_path(src);
      REQUIRE(!r.is_ok());
      CHECK(r.status().code() == StatusCode::kIo);
      CHECK(contains(r.status(), "write " + artifacts_root(dir.path()) + "/tmp/"));
      CHECK(contains(r.status(), "Input/output error"));
    }
    SUBCASE("fsync fails") {
      env.plan().fail_sync = true;
      auto r = (*store)->put_bytes("never durable");
      REQUIRE(!r.is_ok());
      CHECK(contains(r.status(), "fsync"));
      CHECK(!*(*store)->has(blake2b("never durable")));
      auto i = (*store)->import_path(src);
      CHECK(!i.is_ok());
      std::string part = dir / "fetched.part";
      write_file(part, "fetched, never durable");
      auto a = (*store)->adopt_file(part);
      REQUIRE(!a.is_ok());
      CHECK(contains(a.status(), "fsync " + part));
      CHECK(!*(*store)->has(blake2b("fetched, never durable")));
    }
    SUBCASE("the disk is full") {
      env.plan().disk_full = true;
      auto r = (*store)->put_bytes("no room");
      REQUIRE(!r.is_ok());
      CHECK(r.status().code() == StatusCode::kUnavailable);
      CHECK(contains(r.status(), "No space left on device"));
      CHECK(!*(*store)->has(blake2b("no room")));
    }
    SUBCASE("rename fails") {
      env.plan().fail_rename = true;
      auto r = (*store)->put_bytes("not renamed");
      REQUIRE(!r.is_ok());
      CHECK(contains(r.status(), "rename"));
      CHECK(!*(*store)->has(blake2b("not renamed")));
    }
    // The failed import's tree is never visible.
    std::vector<TreeEntry> entries;
    for (int i = 0; i < 5; ++i) {
      entries.push_back(
          {"f" + std::to_string(i), EntryKind::kFile, blake2b("content " + std::to_string(i))});
    }
    tree_expected = *tree_digest(entries);
    CHECK(!*(*store)->has(tree_expected));
    // No temporaries are left behind by failed writes.
    CHECK(std::filesystem::is_empty(artifacts_root(dir.path()) + "/tmp"));
    // Once the fault clears, the same import succeeds.
    env.plan() = FaultPlan{};
    auto again = (*store)->import_path(src);
    REQUIRE_MESSAGE(again.is_ok(), again.status().to_string());
    CHECK(again->digest == tree_expected);
  }
  require_clean(dir.path());
}

TEST_CASE("faults: index writes that fail leave objects the next open recovers") {
  TempDir dir;
  {
    auto l = open_sqlite_ledger(ledger_path(dir.path()));
    REQUIRE(l.is_ok());
    FaultyLedger faulty(**l);
    auto store = ArtifactStore::open(artifacts_root(dir.path()), faulty);
    REQUIRE(store.is_ok());
    faulty.plan().fail_write_n = 1;
    auto r = (*store)->put_bytes("object first, row second");
    REQUIRE(!r.is_ok());
    CHECK(contains(r.status(), "ledger insert artifacts"));
    faulty.plan() = LedgerFaultPlan{};
  }
  require_clean(dir.path());
  auto l = open_sqlite_ledger(ledger_path(dir.path()));
  CHECK((*l)->index_get(blake2b("object first, row second"))->has_value());
}

// Runs one failing ledger write under VFS fault FAULT and checks all-or-nothing.
template <typename Fault>
void ledger_fault(Fault fault, StatusCode expected_code, const std::string& expected_text) {
  TempDir dir;
  TestKey a(1);
  std::vector<StoredStatement> batch;
  for (std::uint64_t seq = 2; seq <= 60; ++seq) {
    batch.push_back(make_statement(a, seq, std::string(500, 'b') + std::to_string(seq)));
  }
  {
    FaultyVfs vfs("vow-faulty-" + std::to_string(reinterpret_cast<std::uintptr_t>(&dir)));
    {
      SqliteOptions opts;
      opts.vfs_name = vfs.name();
      auto l = open_sqlite_ledger(ledger_path(dir.path()), opts);
      REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
      REQUIRE((*l)->append_own(make_statement(a, 1, "before the fault")).is_ok());
      fault(vfs);
      Status s = (*l)->insert_batch(batch);
      REQUIRE(!s.is_ok());
      CHECK(vfs.faults() > 0);
      CHECK(s.code() == expected_code);
      CHECK(contains(s, ledger_path(dir.path())));
      CHECK(contains(s, "insert statement batch"));
      CHECK_MESSAGE(contains(s, expected_text), s.to_string());
      vfs.clear();
      // The connection stays usable once the fault clears.
      Status after = (*l)->append_own(make_statement(a, 2, "after the fault"));
      CHECK_MESSAGE(after.is_ok(), after.to_string());
    }
  }
  require_clean(dir.path());
  auto l = open_sqlite_ledger(ledger_path(dir.path()));
  REQUIRE(l.is_ok());
  CHECK((*(*l)->get(a.public_key, 1))->bytes == "before the fault");
  CHECK(*(*l)->own_last_seq() == 2);
  // Nothing of the failed batch is visible (seq 2 is the statement appended afterwards).
  for (std::uint64_t seq = 3; seq <= 60; ++seq) CHECK(!(*l)->get(a.public_key, seq)->has_value());
}

TEST_CASE("faults: a failed SQLite write leaves the ledger as it was") {
  ledger_fault([](FaultyVfs& v) { v.fail_nth_write_from_now(2); }, StatusCode::kIo,
               "disk I/O error");
}

TEST_CASE("faults: a full disk under SQLite is kUnavailable and changes nothing") {
  ledger_fault([](FaultyVfs& v) { v.plan().disk_full = true; }, StatusCode::kUnavailable, "full");
}

TEST_CASE("faults: a failed SQLite fsync is reported") {
  ledger_fault([](FaultyVfs& v) { v.plan().fail_sync = true; }, StatusCode::kIo, "disk I/O error");
}

TEST_CASE("faults: a group import whose sync fails indexes nothing and leaves a clean store") {
  TempDir dir;
  std::string src = dir / "src";
  write_file(src + "/log", "log");
  for (int i = 0; i < 3; ++i) write_file(src + "/out/f" + std::to_string(i), std::to_string(i));
  {
    auto l = open_sqlite_ledger(ledger_path(dir.path()));
    REQUIRE(l.is_ok());
    FaultyEnv env(posix_env());
    auto store = ArtifactStore::open(artifacts_root(dir.path()), **l, env);
    REQUIRE(store.is_ok());
    env.plan().fail_sync = true;
    Digest tree;
    Status s = (*store)->import_together([&]() -> Status {
      VOW_RETURN_IF_ERROR((*store)->import_path(src + "/log").status());
      auto r = (*store)->import_path(src + "/out");
      if (!r.is_ok()) return r.status();
      tree = r->digest;
      return Status::ok();
    });
    CHECK(s.code() == StatusCode::kIo);
    CHECK(contains(s, "fsync"));
    CHECK(!*(*store)->has(blake2b("log")));
    CHECK(!*(*store)->has(tree));
  }
  require_clean(dir.path());
}

TEST_CASE("group commit: one sync for many writes, none of them kept if it fails") {
  TempDir dir;
  TestKey me(1), peer(2);
  FaultyVfs vfs("vow-faulty-group-" + std::to_string(reinterpret_cast<std::uintptr_t>(&dir)));
  {
    SqliteOptions opts;
    opts.vfs_name = vfs.name();
    auto l = open_sqlite_ledger(ledger_path(dir.path()), opts);
    REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
    LedgerStore& ledger = **l;
    auto write_pass = [&](std::uint64_t first) -> Status {
      for (std::uint64_t seq = first; seq < first + 10; ++seq) {
        VOW_RETURN_IF_ERROR(ledger.append_own(make_statement(me, seq, "own")));
        VOW_RETURN_IF_ERROR(ledger.insert(make_statement(peer, seq, "peer")));
      }
      return Status::ok();
    };
    // Twenty writes one by one: a sync each.
    std::uint64_t before = vfs.syncs();
    REQUIRE(write_pass(1).is_ok());
    CHECK(vfs.syncs() - before >= 20);
    // The next twenty in one group: one sync, and the frontiers they moved.
    before = vfs.syncs();
    VersionVector moved;
    REQUIRE(ledger.write_together([&] { return write_pass(11); }, &moved).is_ok());
    CHECK(vfs.syncs() - before == 1);
    CHECK(moved == VersionVector{{me.public_key, 20}, {peer.public_key, 20}});

    // A write that fails inside a group is undone alone; the rest commits.
    Status inner;
    REQUIRE(ledger
                .write_together(
                    [&] {
                      inner = ledger.insert(make_statement(peer, 5, "equivocation"));
                      return ledger.append_own(make_statement(me, 21, "own"));
                    },
                    &moved)
                .is_ok());
    CHECK(inner.code() == StatusCode::kInvalid);
    CHECK(*ledger.own_last_seq() == 21);
    CHECK(moved == VersionVector{{me.public_key, 21}});

    // A group whose sync fails keeps none of its writes, and the ledger goes on.
    vfs.plan().fail_sync = true;
    Status s = ledger.write_together([&] { return write_pass(22); }, &moved);
    CHECK(s.code() == StatusCode::kIo);
    vfs.clear();
    CHECK(*ledger.own_last_seq() == 21);
    CHECK(!ledger.get(peer.public_key, 22)->has_value());
    CHECK(ledger.version_vector()->at(peer.public_key) == 20);
    // So does one whose function fails.
    s = ledger.write_together(
        [&]() -> Status {
          VOW_RETURN_IF_ERROR(ledger.append_own(make_statement(me, 22, "own")));
          return Status::io("stop here");
        },
        nullptr);
    CHECK(s.message() == "stop here");
    CHECK(*ledger.own_last_seq() == 21);

    // Running-job rows commit without a sync (the next synced commit carries them).
    before = vfs.syncs();
    RunningJob row{blake2b("job"), 1, 4242, "/work", 7};
    REQUIRE(ledger.put_running_job(row).is_ok());
    CHECK(vfs.syncs() == before);
    REQUIRE(ledger.append_own(make_statement(me, 22, "own")).is_ok());
    CHECK(vfs.syncs() == before + 1);
  }
  require_clean(dir.path());
  auto l = open_sqlite_ledger(ledger_path(dir.path()));
  REQUIRE(l.is_ok());
  CHECK(*(*l)->own_last_seq() == 22);
  CHECK((*l)->version_vector()->at(peer.public_key) == 20);
  REQUIRE((*l)->running_jobs()->size() == 1);
  CHECK((*l)->running_jobs()->front().pid == 4242);
}

}  // namespace
}  // namespace vow::store
