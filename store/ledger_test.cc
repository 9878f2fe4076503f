#include "store/ledger.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::make_result;
using testing::make_statement;
using testing::TempDir;
using testing::TestKey;

// Runs BODY against the in-memory ledger and a fresh SQLite ledger: same contract.
template <typename Body>
void for_each_ledger(Body body) {
  TempDir dir;
  {
    INFO("memory ledger");
    auto mem = make_memory_ledger();
    body(*mem);
  }
  {
    INFO("sqlite ledger");
    auto db = open_sqlite_ledger(dir / "vow.db");
    REQUIRE_MESSAGE(db.is_ok(), db.status().to_string());
    body(**db);
  }
}

Digest digest_of(std::string_view s) { return blake2b(s); }

void exec_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}

TEST_CASE("ledger: insert is idempotent, equivocation is refused and changes nothing") {
  for_each_ledger([](LedgerStore& l) {
    TestKey a(1);
    auto s1 = make_statement(a, 1, "first");
    REQUIRE(l.insert(s1).is_ok());
    REQUIRE(l.insert(s1).is_ok());  // duplicate: no-op
    CHECK(*l.statement_count() == 1);

    auto forged = make_statement(a, 1, "other bytes, same seq");
    Status st = l.insert(forged);
    CHECK(st.code() == StatusCode::kInvalid);
    CHECK(st.message().find("equivocation") != std::string::npos);
    auto got = l.get(a.public_key, 1);
    REQUIRE(got.is_ok());
    REQUIRE(got->has_value());
    CHECK((*got)->bytes == "first");

    // A batch containing an equivocation stores none of its statements.
    std::vector<StoredStatement> batch{make_statement(a, 2, "two"), forged};
    CHECK(l.insert_batch(batch).code() == StatusCode::kInvalid);
    CHECK(*l.statement_count() == 1);
    CHECK(!l.get(a.public_key, 2)->has_value());

    CHECK(l.insert(make_statement(a, 0, "seq zero")).code() == StatusCode::kInvalid);
  });
}

TEST_CASE("ledger: version vector counts only contiguous sequences from 1") {
  for_each_ledger([](LedgerStore& l) {
    TestKey a(1), b(2), c(3);
    std::vector<StoredStatement> batch;
    for (std::uint64_t seq : {1, 2, 3, 5, 6}) batch.push_back(make_statement(a, seq, "a"));
    for (std::uint64_t seq : {2, 3}) batch.push_back(make_statement(b, seq, "b"));
    batch.push_back(make_statement(c, 1, "c"));
    REQUIRE(l.insert_batch(batch).is_ok());
    auto vv = l.version_vector();
    REQUIRE(vv.is_ok());
    CHECK(vv->at(a.public_key) == 3);
    CHECK(vv->count(b.public_key) == 0);
    CHECK(vv->at(c.public_key) == 1);

    // Filling the gaps advances past everything already held.
    REQUIRE(l.insert(make_statement(a, 4, "a")).is_ok());
    REQUIRE(l.insert(make_statement(b, 1, "b")).is_ok());
    vv = l.version_vector();
    CHECK(vv->at(a.public_key) == 6);
    CHECK(vv->at(b.public_key) == 3);

    auto after = l.by_author_after(a.public_key, 4, 10);
    REQUIRE(after.is_ok());
    REQUIRE(after->size() == 2);
    CHECK((*after)[0].seq == 5);
    CHECK((*after)[1].seq == 6);
    CHECK(l.by_author_after(a.public_key, 0, 2)->size() == 2);
  });
}

TEST_CASE("ledger: void slots drop their advert rows only, merge, and count as held") {
  for_each_ledger([](LedgerStore& l) {
    TestKey a(1);
    std::vector<StoredStatement> batch;
    batch.push_back(make_statement(a, 1, "advert 1"));
    batch.push_back(make_statement(a, 2, "advert 2"));
    batch.push_back(make_statement(a, 3, "claim 3", StatementKind::kClaim));
    batch.push_back(make_statement(a, 6, "advert 6"));
    REQUIRE(l.insert_batch(batch).is_ok());
    CHECK(l.version_vector()->at(a.public_key) == 3);
    // Slot 3 holds a claim: a void word about it keeps the row.
    std::vector<StatementRef> slots{{a.public_key, 2}, {a.public_key, 1}, {a.public_key, 3},
                                    {a.public_key, 5}, {a.public_key, 4}};
    REQUIRE(l.put_voids(slots).is_ok());
    CHECK(l.get(a.public_key, 1)->has_value() == false);
    CHECK(l.get(a.public_key, 2)->has_value() == false);
    CHECK(l.get(a.public_key, 3)->has_value());
    CHECK(*l.statement_count() == 2);
    CHECK(l.version_vector()->at(a.public_key) == 6);
    auto voids = l.voids();
    REQUIRE(voids.is_ok());
    REQUIRE(voids->size() == 1);  // 1..5 merged
    CHECK(voids->at(0).first == 1);
    CHECK(voids->at(0).last == 5);
    REQUIRE(l.put_voids(slots).is_ok());  // again: no change
    CHECK(l.voids()->size() == 1);
  });
}

TEST_CASE("ledger: own sequence advances only with append_own, one step at a time") {
  for_each_ledger([](LedgerStore& l) {
    TestKey me(7);
    CHECK(*l.own_last_seq() == 0);
    CHECK(*l.own_next_seq() == 1);
    CHECK(l.append_own(make_statement(me, 2, "skip")).code() == StatusCode::kInvalid);
    REQUIRE(l.append_own(make_statement(me, 1, "one")).is_ok());
    REQUIRE(l.append_own(make_statement(me, 2, "two")).is_ok());
    CHECK(l.append_own(make_statement(me, 2, "two")).code() == StatusCode::kInvalid);
    CHECK(*l.own_last_seq() == 2);
    CHECK(l.version_vector()->at(me.public_key) == 2);
  });
}

TEST_CASE("ledger: a write waits for another connection's commit, and gives up at the timeout") {
  TempDir dir;
  const std::string path = dir / "vow.db";
  SqliteOptions options;
  options.busy_timeout_ms = 300;
  auto opened = open_sqlite_ledger(path, options);
  REQUIRE_MESSAGE(opened.is_ok(), opened.status().to_string());
  LedgerStore& l = **opened;
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  RunningJob j{digest_of("j"), 1, 42, "/state/jobs/j", 1000};
  // Held for a moment by the other connection: the write waits and then goes through.
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
  });
  Status waited = l.put_running_job(j);
  release.join();
  CHECK_MESSAGE(waited.is_ok(), waited.to_string());
  // Held past the timeout: the write fails as unavailable, and changes nothing.
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  j.epoch = 2;
  Status refused = l.put_running_job(j);
  CHECK(refused.code() == StatusCode::kUnavailable);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  auto rows = l.running_jobs();
  REQUIRE(rows.is_ok());
  REQUIRE(rows->size() == 1);
  CHECK(rows->front().epoch == 1);
}

TEST_CASE("ledger: running jobs, peers and the artifact index") {
  for_each_ledger([](LedgerStore& l) {
    RunningJob j{digest_of("j"), 3, 4242, "/state/jobs/j", 1000};
    REQUIRE(l.put_running_job(j).is_ok());
    REQUIRE(l.running_jobs()->size() == 1);
    CHECK(l.running_jobs()->front() == j);
    REQUIRE(l.remove_running_job(j.job).is_ok());
    CHECK(l.running_jobs()->empty());

    PeerRecord p{TestKey(5).public_key, {"tcp://a:1", "tcp://b:2"}, 77};
    REQUIRE(l.put_peer(p).is_ok());
    CHECK(l.peers()->front() == p);
    PeerRecord bad{TestKey(6).public_key, {"tcp://a\n"}, 1};
    CHECK(l.put_peer(bad).code() == StatusCode::kInvalid);
    PeerRecord empty{TestKey(6).public_key, {"", "tcp://c:3"}, 1};
    CHECK(l.put_peer(empty).code() == StatusCode::kInvalid);

    ArtifactRecord r{digest_of("art"), 10, ArtifactKind::kFile, false, 5};
    REQUIRE(l.index_put(std::span(&r, 1)).is_ok());
    REQUIRE(l.index_set_pinned(r.digest, true).is_ok());
    r.last_used = 3;  // re-putting keeps the pin and the larger tick
    REQUIRE(l.index_put(std::span(&r, 1)).is_ok());
    auto got = l.index_get(r.digest);
    REQUIRE(got->has_value());
    CHECK((*got)->pinned);
    CHECK((*got)->last_used == 5);
    CHECK(*l.index_max_tick() == 5);
    CHECK(l.index_set_pinned(digest_of("nope"), true).code() == StatusCode::kNotFound);
    ArtifactRecord r2{digest_of("art2"), 32, ArtifactKind::kTree, false, 6};
    REQUIRE(l.index_put(std::span(&r2, 1)).is_ok());
    CHECK(*l.index_bytes() == 42);
    REQUIRE(l.index_remove(r.digest).is_ok());
    CHECK(*l.index_bytes() == 32);
  });
}

TEST_CASE("sqlite ledger: state survives reopening") {
  TempDir dir;
  TestKey me(1);
  {
    auto l = open_sqlite_ledger(dir / "vow.db");
    REQUIRE(l.is_ok());
    REQUIRE((*l)->append_own(make_statement(me, 1, "one")).is_ok());
  }
  auto l = open_sqlite_ledger(dir / "vow.db");
  REQUIRE(l.is_ok());
  CHECK(*(*l)->own_last_seq() == 1);
  CHECK((*(*l)->get(me.public_key, 1))->bytes == "one");
  CHECK(*read_schema_version(dir / "vow.db") == kSchemaVersion);
}

TEST_CASE("sqlite ledger: an all-or-nothing group commits every write, or none after one fails") {
  TempDir dir;
  TestKey me(1), peer(2);
  auto l = open_sqlite_ledger(dir / "vow.db");
  REQUIRE(l.is_ok());
  LedgerStore& ledger = **l;
  REQUIRE(ledger.insert(make_statement(peer, 1, "peer one")).is_ok());
  VersionVector moved;
  REQUIRE(ledger
              .write_all_or_nothing(
                  [&]() -> Status {
                    VOW_RETURN_IF_ERROR(ledger.append_own(make_statement(me, 1, "own one")));
                    VOW_RETURN_IF_ERROR(ledger.insert(make_statement(peer, 2, "peer two")));
                    return ledger.put_running_job(RunningJob{blake2b("job"), 1, 42, "/w", 7});
                  },
                  &moved)
              .is_ok());
  CHECK(moved == VersionVector{{me.public_key, 1}, {peer.public_key, 2}});
  CHECK(ledger.running_jobs()->size() == 1);

  // A write refused inside it (an equivocation) undoes the whole group, even when FN
  // goes on and says it succeeded: nothing of it is kept, and the ledger goes on.
  Status inner;
  Status s = ledger.write_all_or_nothing(
      [&]() -> Status {
        VOW_RETURN_IF_ERROR(ledger.append_own(make_statement(me, 2, "own two")));
        inner = ledger.insert(make_statement(peer, 1, "peer one, other bytes"));
        (void)ledger.append_own(make_statement(me, 3, "own three"));
        return Status::ok();
      },
      &moved);
  CHECK(inner.code() == StatusCode::kInvalid);
  CHECK(s.code() == StatusCode::kInvalid);
  CHECK(*ledger.own_last_seq() == 1);
  CHECK(!ledger.get(me.public_key, 2)->has_value());
  REQUIRE(ledger.append_own(make_statement(me, 2, "own two")).is_ok());
  CHECK(*ledger.own_last_seq() == 2);

  // The same refusal in a plain group is undone alone, and the rest commits.
  s = ledger.write_together(
      [&]() -> Status {
        inner = ledger.insert(make_statement(peer, 1, "peer one, other bytes"));
        return ledger.append_own(make_statement(me, 3, "own three"));
      },
      &moved);
  CHECK(s.is_ok());
  CHECK(*ledger.own_last_seq() == 3);
}

TEST_CASE("sqlite ledger: a version 3 file loses its unread indexes and keeps its rows") {
  TempDir dir;
  const std::string path = dir / "vow.db";
  TestKey a(1);
  Digest job = digest_of("job");
  {
    auto l = open_sqlite_ledger(path);
    REQUIRE(l.is_ok());
    REQUIRE((*l)->insert(make_result(a, 1, job, 1, digest_of("out"), true)).is_ok());
  }
  // The file as version 3 left it: indexes on job and kind, no batch paths.
  exec_sql(path,
           "CREATE INDEX statements_by_job ON statements(job) WHERE job IS NOT NULL;"
           "CREATE INDEX statements_by_kind ON statements(kind);"
           "ALTER TABLE statements DROP COLUMN path; ALTER TABLE proofs DROP COLUMN path;"
           "PRAGMA user_version = 3");
  auto indexes = [&] {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db,
                               "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                               "name LIKE 'statements_by_%'",
                               -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close_v2(db);
    return n;
  };
  REQUIRE(indexes() == 2);
  auto l = open_sqlite_ledger(path);
  REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
  CHECK(*read_schema_version(path) == kSchemaVersion);
  CHECK(indexes() == 0);
  auto held = (*l)->get(a.public_key, 1);
  REQUIRE(held.is_ok());
  REQUIRE(held->has_value());
  CHECK((*held)->job == job);
  CHECK((*held)->path.empty());  // signed alone, as every statement then
  CHECK((*l)->version_vector()->at(a.public_key) == 1);
}

TEST_CASE("sqlite ledger: a statement signed with others keeps its place in the batch") {
  TempDir dir;
  const std::string path = dir / "vow.db";
  TestKey a(1);
  StoredStatement batched = make_statement(a, 1, "first of two");
  batched.path = std::string(8, '\1') + std::string(32, 'p');
  StoredStatement proof = make_statement(a, 2, "second");
  proof.path = std::string(8, '\2') + std::string(32, 'q');
  {
    auto l = open_sqlite_ledger(path);
    REQUIRE(l.is_ok());
    REQUIRE((*l)->insert(batched).is_ok());
    REQUIRE((*l)->insert(make_statement(a, 2, "first")).is_ok());
    REQUIRE((*l)->put_proof(proof).is_ok());
  }
  {
    auto l = open_sqlite_ledger(path);
    REQUIRE(l.is_ok());
    auto held = (*l)->get(a.public_key, 1);
    REQUIRE(held.is_ok());
    REQUIRE(held->has_value());
    CHECK((*held)->path == batched.path);
    auto alone = (*l)->get(a.public_key, 2);
    REQUIRE(alone.is_ok());
    CHECK((*alone)->path.empty());
    auto proofs = (*l)->proofs();
    REQUIRE(proofs.is_ok());
    REQUIRE(proofs->size() == 1);
    CHECK(proofs->at(0).path == proof.path);
  }
  // The row's check covers its path: one changed outside vow reads as corrupt.
  exec_sql(path, "UPDATE statements SET path = zeroblob(40) WHERE seq = 1");
  auto l = open_sqlite_ledger(path);
  REQUIRE(l.is_ok());
  auto held = (*l)->get(a.public_key, 1);
  CHECK(held.status().code() == StatusCode::kCorrupt);
}

TEST_CASE("sqlite ledger: an equivocation proof is kept, one per author, across reopening") {
  TempDir dir;
  TestKey liar(7);
  {
    auto l = open_sqlite_ledger(dir / "vow.db");
    REQUIRE(l.is_ok());
    REQUIRE((*l)->insert(make_statement(liar, 3, "first")).is_ok());
    REQUIRE((*l)->put_proof(make_statement(liar, 3, "second")).is_ok());
    REQUIRE((*l)->put_proof(make_statement(liar, 9, "a later one")).is_ok());  // ignored
  }
  auto l = open_sqlite_ledger(dir / "vow.db");
  REQUIRE(l.is_ok());
  auto proofs = (*l)->proofs();
  REQUIRE(proofs.is_ok());
  REQUIRE(proofs->size() == 1);
  CHECK(proofs->at(0).author == liar.public_key);
  CHECK(proofs->at(0).seq == 3);
  CHECK(proofs->at(0).bytes == "second");
  CHECK(proofs->at(0).signature == make_statement(liar, 3, "second").signature);
  CHECK((*(*l)->get(liar.public_key, 3))->bytes == "first");  // the statement held is the first
}

TEST_CASE("sqlite ledger: void slots survive reopening") {
  TempDir dir;
  TestKey a(1);
  {
    auto l = open_sqlite_ledger(dir / "vow.db");
    REQUIRE(l.is_ok());
    REQUIRE((*l)->insert(make_statement(a, 1, "advert 1")).is_ok());
    REQUIRE((*l)->insert(make_statement(a, 2, "advert 2")).is_ok());
    std::vector<StatementRef> slots{{a.public_key, 1}};
    REQUIRE((*l)->put_voids(slots).is_ok());
  }
  auto l = open_sqlite_ledger(dir / "vow.db");
  REQUIRE(l.is_ok());
  auto voids = (*l)->voids();
  REQUIRE(voids.is_ok());
  REQUIRE(voids->size() == 1);
  CHECK(voids->at(0).author == a.public_key);
  CHECK(voids->at(0).first == 1);
  CHECK((*l)->version_vector()->at(a.public_key) == 2);
  CHECK(*(*l)->statement_count() == 1);
}

TEST_CASE("sqlite ledger: a newer schema version is refused, naming file and versions") {
  TempDir dir;
  std::string path = dir / "vow.db";
  { REQUIRE(open_sqlite_ledger(path).is_ok()); }
  exec_sql(path, "PRAGMA user_version = 99");
  auto l = open_sqlite_ledger(path);
  REQUIRE(!l.is_ok());
  const std::string& msg = l.status().message();
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("99") != std::string::npos);
  CHECK(msg.find(std::to_string(kSchemaVersion)) != std::string::npos);
  CHECK(*read_schema_version(path) == 99);  // untouched
}

TEST_CASE("sqlite ledger: a row changed outside vow reads as corrupt") {
  TempDir dir;
  std::string path = dir / "vow.db";
  TestKey a(1);
  {
    auto l = open_sqlite_ledger(path);
    REQUIRE((*l)->insert(make_statement(a, 1, "original")).is_ok());
  }
  exec_sql(path, "UPDATE statements SET bytes = CAST('tampered' AS BLOB)");
  auto l = open_sqlite_ledger(path);
  REQUIRE(l.is_ok());
  auto got = (*l)->get(a.public_key, 1);
  CHECK(got.status().code() == StatusCode::kCorrupt);
  CHECK(got.status().message().find("/1") != std::string::npos);
  CHECK((*l)->by_author_after(a.public_key, 0, 10).status().code() == StatusCode::kCorrupt);
}

}  // namespace
}  // namespace vow::store
