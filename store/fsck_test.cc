// Corruption: damage done behind the store's back is found by reads and by fsck.
#include "store/fsck.h"

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "promises/batch_proof.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::make_statement;
using testing::TempDir;
using testing::TestKey;
using testing::write_file;

struct State {
  TempDir dir;
  std::unique_ptr<LedgerStore> ledger;
  std::unique_ptr<ArtifactStore> store;
  State() {
    ledger = std::move(open_sqlite_ledger(ledger_path(dir.path()))).value();
    store = std::move(ArtifactStore::open(artifacts_root(dir.path()), *ledger)).value();
  }
  FsckReport fsck() {
    REQUIRE(store->flush().is_ok());
    auto r = store::fsck(*ledger, artifacts_root(dir.path()), posix_env());
    REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
    return *r;
  }
};

// The one problem of KIND that mentions TEXT.
bool has_problem(const FsckReport& r, FsckProblem::Kind kind, const std::string& text) {
  for (const auto& p : r.problems) {
    if (p.kind == kind && p.to_string().find(text) != std::string::npos) return true;
  }
  return false;
}

void flip_byte(const std::string& path, std::size_t offset) {
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x01));
  REQUIRE(f.good());
}

TEST_CASE("fsck: a healthy state directory is clean") {
  State s;
  TestKey a(1);
  REQUIRE(s.ledger->append_own(make_statement(a, 1, "one")).is_ok());
  write_file(s.dir / "src/x", "x");
  REQUIRE(s.store->import_path(s.dir / "src").is_ok());
  auto r = s.fsck();
  for (const auto& p : r.problems) FAIL_CHECK(p.to_string());
  CHECK(r.statements_checked == 1);
  CHECK(r.artifacts_checked == 2);
}

TEST_CASE("corruption: a flipped byte in an artifact is found by read and fsck") {
  State s;
  auto d = s.store->put_bytes(std::string(5000, 'q'));
  REQUIRE(d.is_ok());
  flip_byte(s.store->object_path(*d, ArtifactKind::kFile), 1234);
  auto r = s.store->read(*d);
  CHECK(r.status().code() == StatusCode::kCorrupt);
  CHECK(r.status().message().find(d->hex()) != std::string::npos);
  CHECK(s.store->verify(*d).code() == StatusCode::kCorrupt);
  auto reader = s.store->open_reader(*d);
  REQUIRE(reader.is_ok());
  std::vector<std::uint8_t> buf(4096);
  Status end;
  for (;;) {
    auto n = (*reader)->read_next(buf);
    if (!n.is_ok()) {
      end = n.status();
      break;
    }
    if (*n == 0) break;
  }
  CHECK(end.code() == StatusCode::kCorrupt);
  CHECK(s.store->materialize(*d, s.dir / "out").code() == StatusCode::kCorrupt);
  CHECK(has_problem(s.fsck(), FsckProblem::Kind::kCorrupt, d->hex()));
}

TEST_CASE("corruption: a truncated artifact is found by read and fsck") {
  State s;
  auto d = s.store->put_bytes(std::string(5000, 't'));
  REQUIRE(d.is_ok());
  std::string path = s.store->object_path(*d, ArtifactKind::kFile);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  REQUIRE(::truncate(path.c_str(), 100) == 0);
  auto r = s.store->read(*d);
  CHECK(r.status().code() == StatusCode::kCorrupt);
  CHECK(r.status().message().find(d->hex()) != std::string::npos);
  CHECK(has_problem(s.fsck(), FsckProblem::Kind::kCorrupt, d->hex()));
}

TEST_CASE("corruption: a statement row changed in SQLite is found by reads and fsck") {
  State s;
  TestKey a(1);
  REQUIRE(s.ledger->insert(make_statement(a, 1, "the signed bytes")).is_ok());
  REQUIRE(s.ledger->insert(make_statement(a, 2, "untouched")).is_ok());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(ledger_path(s.dir.path()).c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "UPDATE statements SET bytes = CAST('forged' AS BLOB) WHERE seq = 1",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  CHECK(s.ledger->get(a.public_key, 1).status().code() == StatusCode::kCorrupt);
  CHECK(s.ledger->get(a.public_key, 2).is_ok());
  auto r = s.fsck();
  CHECK(r.problems.size() == 1);
  CHECK(has_problem(r, FsckProblem::Kind::kCorrupt, a.public_key.hex() + "/1"));
}

TEST_CASE("fsck: a statement whose signature does not verify is reported") {
  State s;
  TestKey a(1), b(2);
  auto st = make_statement(a, 1, "signed by a");
  st.author = b.public_key;               // claims b wrote it
  REQUIRE(s.ledger->insert(st).is_ok());  // the ledger does not verify: transport does
  auto r = s.fsck();
  CHECK(has_problem(r, FsckProblem::Kind::kBadSignature, b.public_key.hex() + "/1"));
}

TEST_CASE("fsck: statements signed together verify by their paths; a changed path does not") {
  State s;
  TestKey a(1);
  std::vector<StoredStatement> sts;
  std::vector<Digest> leaves;
  for (std::uint64_t seq = 1; seq <= 3; ++seq) {
    sts.push_back(make_statement(a, seq, "statement " + std::to_string(seq)));
    leaves.push_back(batch_leaf(sts.back().bytes));
  }
  BatchTree tree = batch_tree(leaves);
  const std::string message = batch_signing_message(tree.root);
  std::array<std::uint8_t, 64> signature{};
  crypto_sign_detached(signature.data(), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       a.secret.data());
  for (std::size_t i = 0; i < sts.size(); ++i) {
    sts[i].signature = signature;
    sts[i].path = tree.paths[i];
  }
  sts[2].path[10] ^= 0x01;  // a sibling changed: another root
  for (const auto& st : sts) REQUIRE(s.ledger->insert(st).is_ok());
  auto r = s.fsck();
  CHECK(r.statements_checked == 3);
  REQUIRE(r.problems.size() == 1);
  CHECK(has_problem(r, FsckProblem::Kind::kBadSignature, a.public_key.hex() + "/3"));
}

TEST_CASE("fsck: missing objects, missing tree children and unreferenced files") {
  State s;
  auto child = s.store->put_bytes("child");
  REQUIRE(child.is_ok());
  auto tree = s.store->put_tree({{"c", EntryKind::kFile, *child}});
  REQUIRE(tree.is_ok());
  auto lone = s.store->put_bytes("lone");
  REQUIRE(lone.is_ok());

  // The child vanishes entirely; the lone object loses its file but keeps its row.
  REQUIRE(s.ledger->index_remove(*child).is_ok());
  REQUIRE(::unlink(s.store->object_path(*child, ArtifactKind::kFile).c_str()) == 0);
  REQUIRE(::unlink(s.store->object_path(*lone, ArtifactKind::kFile).c_str()) == 0);
  write_file(artifacts_root(s.dir.path()) + "/objects/zz/stray", "?");
  Digest orphan = blake2b("orphan");
  write_file(s.store->object_path(orphan, ArtifactKind::kFile), "orphan");

  auto r = s.fsck();
  CHECK(has_problem(r, FsckProblem::Kind::kMissing, tree->hex()));
  CHECK(has_problem(r, FsckProblem::Kind::kMissing, lone->hex()));
  CHECK(has_problem(r, FsckProblem::Kind::kUnreferenced, "stray"));
  CHECK(has_problem(r, FsckProblem::Kind::kUnreferenced, orphan.hex()));
  CHECK(r.problems.size() == 4);
  CHECK(s.store->read(*lone).status().code() == StatusCode::kCorrupt);
  CHECK(s.store->verify(*tree).code() == StatusCode::kCorrupt);
}

TEST_CASE("fsck: a directory that is not a state directory is an error, not a crash") {
  TempDir dir;
  auto r = fsck_state_dir(dir.path());
  CHECK(r.status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace vow::store
