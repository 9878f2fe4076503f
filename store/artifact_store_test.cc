#include "store/artifact_store.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>

#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::read_file;
using testing::TempDir;
using testing::write_file;

struct Fixture {
  TempDir dir;
  std::unique_ptr<LedgerStore> ledger;
  std::unique_ptr<ArtifactStore> store;
  Fixture() {
    auto l = open_sqlite_ledger(ledger_path(dir.path()));
    REQUIRE_MESSAGE(l.is_ok(), l.status().to_string());
    ledger = std::move(l).value();
    reopen_store();
  }
  void reopen_store() {
    store.reset();
    auto s = ArtifactStore::open(artifacts_root(dir.path()), *ledger);
    REQUIRE_MESSAGE(s.is_ok(), s.status().to_string());
    store = std::move(s).value();
  }
};

mode_t mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

TEST_CASE("artifacts: put, read, stat, list; same content is stored once") {
  Fixture f;
  auto d = f.store->put_bytes("hello");
  REQUIRE(d.is_ok());
  CHECK(*d == blake2b("hello"));
  CHECK(*f.store->read(*d) == "hello");
  CHECK(*f.store->has(*d));
  CHECK(f.store->stat(*d)->size_bytes == 5);
  REQUIRE(f.store->put_bytes("hello").is_ok());
  CHECK(f.store->list()->size() == 1);
  CHECK(mode_of(f.store->object_path(*d, ArtifactKind::kFile)) == 0444);
  CHECK(f.store->read(blake2b("absent")).status().code() == StatusCode::kNotFound);
  auto empty = f.store->put_bytes("");
  REQUIRE(empty.is_ok());
  CHECK(*f.store->read(*empty) == "");
}

TEST_CASE("artifacts: buffers fit the file; files around a page and a chunk keep their digest") {
  CHECK(chunk_buffer(0).size() == 4096);
  CHECK(chunk_buffer(5000).size() == 5001);
  CHECK(chunk_buffer(kCopyChunkBytes).size() == kCopyChunkBytes);
  CHECK(chunk_buffer(std::uint64_t{1} << 40).size() == kCopyChunkBytes);
  Fixture f;
  for (std::size_t n : {std::size_t{0}, std::size_t{4095}, std::size_t{4096}, std::size_t{4097},
                        kCopyChunkBytes - 1, kCopyChunkBytes, kCopyChunkBytes * 5 / 2}) {
    std::string content(n, '\0');
    for (std::size_t i = 0; i < n; ++i) content[i] = static_cast<char>('a' + i % 23);
    INFO("size " << n);
    std::string path = f.dir / ("f" + std::to_string(n));
    write_file(path, content);
    auto imported = f.store->import_path(path);  // copied
    REQUIRE_MESSAGE(imported.is_ok(), imported.status().to_string());
    CHECK(imported->digest == blake2b(content));
    CHECK(imported->size_bytes == n);
    std::string part = f.dir / ("p" + std::to_string(n));
    write_file(part, content);
    auto adopted = f.store->adopt_file(part);  // hashed where it lies
    REQUIRE(adopted.is_ok());
    CHECK(adopted->digest == blake2b(content));
    CHECK(f.store->verify(imported->digest).is_ok());  // read whole again
    std::string out = f.dir / ("m" + std::to_string(n));
    REQUIRE(f.store->materialize(imported->digest, out).is_ok());
    CHECK(read_file(out) == content);
  }
}

TEST_CASE("artifacts: adopt_file moves a file in, hashed and read-only, and gives it up") {
  Fixture f;
  std::string part = f.dir / "fetched.part";  // on the store's file system
  write_file(part, "fetched bytes");
  auto r = f.store->adopt_file(part);
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  CHECK(r->digest == blake2b("fetched bytes"));
  CHECK(r->size_bytes == 13);
  CHECK(!std::filesystem::exists(part));
  CHECK(*f.store->read(r->digest) == "fetched bytes");
  CHECK(mode_of(f.store->object_path(r->digest, ArtifactKind::kFile)) == 0444);
  // The same bytes again: the object is replaced, nothing else is added.
  write_file(part, "fetched bytes");
  REQUIRE(f.store->adopt_file(part).is_ok());
  CHECK(!std::filesystem::exists(part));
  CHECK(f.store->list()->size() == 1);
  // It survives a reopen (indexed), and only regular files are adopted.
  f.reopen_store();
  CHECK(*f.store->has(r->digest));
  CHECK(f.store->adopt_file(f.dir.path()).status().code() == StatusCode::kInvalid);
  CHECK(f.store->adopt_file(f.dir / "absent").status().code() == StatusCode::kInvalid);
}

TEST_CASE("artifacts: adopt_file trusts a digest checked as the bytes arrived; use verifies") {
  Fixture f;
  std::string part = f.dir / "fetched.part";
  write_file(part, "streamed bytes");
  auto r = f.store->adopt_file(part, blake2b("streamed bytes"));
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  CHECK(r->size_bytes == 14);
  CHECK(!std::filesystem::exists(part));
  CHECK(*f.store->read(r->digest) == "streamed bytes");
  // A wrong digest is not caught here (the file is not read again), nor by a materialize
  // of this store instance while the file is unchanged (it counts as just hashed), but
  // by one after a restart, which verifies every object once before using it.
  write_file(part, "other bytes");
  const Digest claimed = blake2b("what the stream said");
  REQUIRE(f.store->adopt_file(part, claimed).is_ok());
  REQUIRE(f.store->materialize(claimed, f.dir / "in-x").is_ok());
  CHECK(read_file(f.dir / "in-x") == "other bytes");
  f.reopen_store();
  auto m = f.store->materialize(claimed, f.dir / "in-y");
  CHECK(m.code() == StatusCode::kCorrupt);
  CHECK(!std::filesystem::exists(f.dir / "in-y"));
}

TEST_CASE("artifacts: a just-written object is linked unread; one changed since is hashed") {
  Fixture f;
  auto d = f.store->put_bytes("job output");
  REQUIRE(d.is_ok());
  REQUIRE(f.store->materialize(*d, f.dir / "in-a").is_ok());
  CHECK(read_file(f.dir / "in-a") == "job output");
  // Written through (chmod, then a write: the status-change time moves): the next
  // materialize hashes it and refuses it.
  std::string object = f.store->object_path(*d, ArtifactKind::kFile);
  REQUIRE(::chmod(object.c_str(), 0644) == 0);
  write_file(object, "job outpuT");
  auto m = f.store->materialize(*d, f.dir / "in-b");
  CHECK(m.code() == StatusCode::kCorrupt);
  CHECK(!std::filesystem::exists(f.dir / "in-b"));
  // A restarted store hashes an object once, then links it unread: the bytes a stamp
  // cannot see (rot under an unchanged inode) are the window that gives up.
  auto e = f.store->put_bytes("kept");
  REQUIRE(e.is_ok());
  f.reopen_store();
  REQUIRE(f.store->materialize(*e, f.dir / "in-c").is_ok());
  REQUIRE(f.store->materialize(*e, f.dir / "in-d").is_ok());
  CHECK(read_file(f.dir / "in-d") == "kept");
}

ino_t inode_of(const std::string& path) {
  struct stat st;
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_ino;
}

TEST_CASE("artifacts: take_file links a file in as its object, in a group import too") {
  Fixture f;
  std::string out = f.dir / "out";  // a sandboxed job's output, on the store's file system
  write_file(out, "job output");
  const ino_t inode = inode_of(out);
  std::vector<ArtifactRecord> rows;
  Result<ArtifactRef> r = Status::invalid("not run");
  Status s = f.store->import_together([&] {
    r = f.store->take_file(out);
    return r.status();
  }, &rows);
  REQUIRE_MESSAGE(s.is_ok(), s.to_string());
  REQUIRE(r.is_ok());
  CHECK(r->digest == blake2b("job output"));  // what import_path gives
  CHECK(r->size_bytes == 10);
  REQUIRE(f.ledger->index_put(rows).is_ok());
  const std::string object = f.store->object_path(r->digest, ArtifactKind::kFile);
  CHECK(inode_of(object) == inode);  // the file itself, not a copy
  CHECK(std::filesystem::exists(out));
  CHECK(mode_of(object) == 0444);
  CHECK(*f.store->read(r->digest) == "job output");
  // Outside a group, and once the job's name for it is gone, it stays.
  write_file(f.dir / "second", "second output");
  auto second = f.store->take_file(f.dir / "second");
  REQUIRE(second.is_ok());
  std::filesystem::remove(f.dir / "second");
  std::filesystem::remove(out);
  f.reopen_store();
  CHECK(*f.store->read(second->digest) == "second output");
  CHECK(*f.store->read(r->digest) == "job output");
  CHECK(f.store->take_file(f.dir.path()).status().code() == StatusCode::kInvalid);
}

TEST_CASE("artifacts: a placed object is adopted where it lies; one that is not what was placed is written") {
  Fixture f;
  // As the agent's loop places one (agent/local_effects.cc, StoreSink::place): the file at
  // the object's name, read-only, with no row.
  auto place = [&](std::string_view name_bytes, std::string_view content) {
    const std::string path = f.store->object_path(blake2b(name_bytes), ArtifactKind::kFile);
    write_file(path, std::string(content));
    REQUIRE(::chmod(path.c_str(), 0444) == 0);
    return path;
  };
  const std::string placed = place("placed bytes", "placed bytes");
  const ino_t inode = inode_of(placed);
  std::vector<ArtifactRecord> rows;
  Result<Digest> d = Status::invalid("not run");
  Status s = f.store->import_together([&] {
    d = f.store->put_placed("placed bytes");
    return d.status();
  }, &rows);
  REQUIRE_MESSAGE(s.is_ok(), s.to_string());
  REQUIRE(d.is_ok());
  CHECK(*d == blake2b("placed bytes"));
  REQUIRE(rows.size() == 1);  // its row, for the caller's commit
  CHECK(rows[0].digest == *d);
  CHECK(rows[0].size_bytes == 12);
  CHECK(inode_of(placed) == inode);  // the placed file itself: nothing written again
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));
  REQUIRE(f.ledger->index_put(rows).is_ok());
  f.reopen_store();
  CHECK(*f.store->read(*d) == "placed bytes");
  CHECK(mode_of(placed) == 0444);

  // Not what was placed (same size, other bytes): written again, and so repaired.
  const std::string wrong = place("right content", "wrong content");
  const ino_t wrong_inode = inode_of(wrong);
  auto repaired = f.store->put_placed("right content");
  REQUIRE(repaired.is_ok());
  CHECK(inode_of(wrong) != wrong_inode);
  CHECK(read_file(wrong) == "right content");
  CHECK(*f.store->read(*repaired) == "right content");

  // Writable (not as place() leaves it): written again, read-only.
  const std::string writable = place("writable", "writable");
  REQUIRE(::chmod(writable.c_str(), 0644) == 0);
  const ino_t writable_inode = inode_of(writable);
  REQUIRE(f.store->put_placed("writable").is_ok());
  CHECK(inode_of(writable) != writable_inode);
  CHECK(mode_of(writable) == 0444);

  // Outside a group: synced and indexed at once. Nothing placed: written as put_bytes.
  const std::string alone = place("alone", "alone");
  const ino_t alone_inode = inode_of(alone);
  auto a = f.store->put_placed("alone");
  REQUIRE(a.is_ok());
  CHECK(inode_of(alone) == alone_inode);
  CHECK(*f.store->has(*a));
  auto fresh = f.store->put_placed("never placed");
  REQUIRE(fresh.is_ok());
  f.reopen_store();
  CHECK(*f.store->read(*a) == "alone");
  CHECK(*f.store->read(*fresh) == "never placed");
}

TEST_CASE("artifacts: a held object known sound is not written again; a changed one is") {
  Fixture f;
  auto take = [&](const std::string& path, std::vector<ArtifactRecord>& rows) {
    Result<ArtifactRef> r = Status::invalid("not run");
    Status s = f.store->import_together([&] {
      r = f.store->take_file(path);
      return r.status();
    }, &rows);
    REQUIRE_MESSAGE(s.is_ok(), s.to_string());
    REQUIRE(r.is_ok());
    return r->digest;
  };
  write_file(f.dir / "first", "the same bytes");
  std::vector<ArtifactRecord> rows;
  const Digest d = take(f.dir / "first", rows);
  REQUIRE(rows.size() == 1);
  REQUIRE(f.ledger->index_put(rows).is_ok());
  const std::string object = f.store->object_path(d, ArtifactKind::kFile);
  const ino_t first = inode_of(object);

  // A second job's output with the same bytes: the object stays the file it was (no
  // copy synced and renamed over it), no row is handed back, nothing is left in tmp/.
  write_file(f.dir / "second", "the same bytes");
  rows.clear();
  CHECK(take(f.dir / "second", rows) == d);
  CHECK(rows.empty());
  CHECK(inode_of(object) == first);
  CHECK(std::filesystem::exists(f.dir / "second"));
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));
  CHECK(*f.store->read(d) == "the same bytes");

  // A link made to it since (as materialize makes) changes its stamp, not its bytes:
  // a small object is read to know it sound, and still not written again.
  REQUIRE(::link(object.c_str(), (f.dir / "linked").c_str()) == 0);
  write_file(f.dir / "fourth", "the same bytes");
  rows.clear();
  CHECK(take(f.dir / "fourth", rows) == d);
  CHECK(rows.empty());
  CHECK(inode_of(object) == first);
  std::filesystem::remove(f.dir / "linked");

  // An object whose bytes changed since it was hashed is written again: the repair.
  ::chmod(object.c_str(), 0644);
  { std::ofstream(object, std::ios::binary | std::ios::trunc) << "the same bytez"; }
  write_file(f.dir / "third", "the same bytes");
  rows.clear();
  CHECK(take(f.dir / "third", rows) == d);
  CHECK(rows.size() == 1);
  CHECK(inode_of(object) == inode_of(f.dir / "third"));
  CHECK(*f.store->read(d) == "the same bytes");
}

TEST_CASE("artifacts: an imported directory's digest is the tree.h encoding") {
  Fixture f;
  std::string src = f.dir / "src";
  write_file(src + "/a.txt", "alpha");
  write_file(src + "/run.sh", "#!/bin/sh\necho hi\n", 0755);
  write_file(src + "/sub/b.txt", "beta");
  write_file(src + "/sub/deeper/c", std::string(3 << 20, 'c'));  // several copy chunks

  auto ref = f.store->import_path(src);
  REQUIRE_MESSAGE(ref.is_ok(), ref.status().to_string());
  Digest deeper = *tree_digest({{"c", EntryKind::kFile, blake2b(std::string(3 << 20, 'c'))}});
  Digest sub = *tree_digest(
      {{"b.txt", EntryKind::kFile, blake2b("beta")}, {"deeper", EntryKind::kTree, deeper}});
  Digest top = *tree_digest({{"a.txt", EntryKind::kFile, blake2b("alpha")},
                             {"run.sh", EntryKind::kExecutable, blake2b("#!/bin/sh\necho hi\n")},
                             {"sub", EntryKind::kTree, sub}});
  CHECK(ref->digest == top);
  CHECK(ref->is_tree);
  CHECK(ref->size_bytes == 5 + 18 + 4 + (3u << 20));
  REQUIRE(ref->entries.size() == 3);
  CHECK(ref->entries[1].kind == EntryKind::kExecutable);
  CHECK(*f.store->ref(top) == *ref);
  CHECK(f.store->verify(top).is_ok());
  // Children are objects of their own.
  CHECK(*f.store->has(sub));
  CHECK(*f.store->read(blake2b("beta")) == "beta");

  // A single file imports as a file object.
  auto file = f.store->import_path(src + "/a.txt");
  REQUIRE(file.is_ok());
  CHECK(!file->is_tree);
  CHECK(file->digest == blake2b("alpha"));
}

TEST_CASE("artifacts: imports stopped (the agent stopping) fail at once and store nothing") {
  Fixture f;
  std::string src = f.dir / "src";
  write_file(src + "/a.txt", "alpha");
  write_file(src + "/sub/b.txt", "beta");
  f.store->stop_imports();
  for (const std::string& path : {src, src + "/a.txt"}) {
    auto r = f.store->import_path(path);
    REQUIRE(!r.is_ok());
    CHECK(r.status().code() == StatusCode::kUnavailable);
    CHECK(r.status().message().find("import stopped") != std::string::npos);
  }
  ImportCache cache(src);
  CHECK(f.store->import_path(src, cache).status().code() == StatusCode::kUnavailable);
  CHECK(f.store->list()->empty());
  CHECK(!*f.store->has(blake2b("alpha")));
  // A store opened again imports as before.
  f.reopen_store();
  CHECK(f.store->import_path(src).is_ok());
}

TEST_CASE("artifacts: a group import stores every object once the group ends, as import would") {
  Fixture f;
  std::string src = f.dir / "src";
  write_file(src + "/log", "a job's stdout\n");
  write_file(src + "/empty", "");
  // More files than kSyncfsAbove: the group syncs them with one syncfs.
  for (int i = 0; i < 12; ++i) write_file(src + "/out/f" + std::to_string(i), std::to_string(i));
  write_file(src + "/out/sub/x", "x", 0755);

  std::vector<ArtifactRef> refs;
  Status s = f.store->import_together([&]() -> Status {
    for (const char* name : {"/log", "/empty", "/out"}) {
      auto ref = f.store->import_path(src + name);
      if (!ref.is_ok()) return ref.status();
      refs.push_back(*ref);
    }
    // Nothing is held before the group ends.
    CHECK(!*f.store->has(refs[0].digest));
    return Status::ok();
  });
  REQUIRE_MESSAGE(s.is_ok(), s.to_string());
  REQUIRE(refs.size() == 3);
  CHECK(refs[0].digest == blake2b("a job's stdout\n"));
  CHECK(refs[1].digest == blake2b(""));
  CHECK(*f.store->read(refs[0].digest) == "a job's stdout\n");
  CHECK(f.store->verify(refs[2].digest).is_ok());
  CHECK(*f.store->ref(refs[2].digest) == refs[2]);
  CHECK(mode_of(f.store->object_path(refs[0].digest, ArtifactKind::kFile)) == 0444);
  // The same tree as a plain import, and nothing left in tmp/.
  Fixture g;
  CHECK(g.store->import_path(src + "/out")->digest == refs[2].digest);
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));
  // Still there after a reopen (rows committed).
  f.reopen_store();
  CHECK(f.store->verify(refs[2].digest).is_ok());
  CHECK(*f.store->has(refs[1].digest));

  // Rows handed back: the objects are on disk, held once the rows are committed.
  write_file(src + "/late", "rows committed by the caller");
  std::vector<ArtifactRecord> rows;
  s = f.store->import_together([&] { return f.store->import_path(src + "/late").status(); },
                               &rows);
  REQUIRE(s.is_ok());
  REQUIRE(rows.size() == 1);
  Digest late = blake2b("rows committed by the caller");
  CHECK(rows[0].digest == late);
  CHECK(!*f.store->has(late));
  REQUIRE(f.ledger->index_put(rows).is_ok());
  CHECK(*f.store->read(late) == "rows committed by the caller");

  // A group whose function fails stores nothing.
  write_file(src + "/other", "never stored");
  s = f.store->import_together([&]() -> Status {
    REQUIRE(f.store->import_path(src + "/other").is_ok());
    return Status::invalid("the job failed");
  });
  CHECK(s.code() == StatusCode::kInvalid);
  CHECK(!*f.store->has(blake2b("never stored")));
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));
}

TEST_CASE("artifacts: import refuses symbolic links and special files, naming the path") {
  Fixture f;
  std::string src = f.dir / "src";
  write_file(src + "/ok.txt", "ok");
  REQUIRE(::symlink("ok.txt", (src + "/link").c_str()) == 0);
  auto r = f.store->import_path(src);
  REQUIRE(!r.is_ok());
  CHECK(r.status().code() == StatusCode::kInvalid);
  CHECK(r.status().message().find(src + "/link") != std::string::npos);
  CHECK(r.status().message().find("symbolic link") != std::string::npos);

  auto top = f.store->import_path(src + "/link");
  CHECK(top.status().code() == StatusCode::kInvalid);

  std::string fifo_dir = f.dir / "fifo";
  std::filesystem::create_directories(fifo_dir);
  REQUIRE(::mkfifo((fifo_dir + "/pipe").c_str(), 0644) == 0);
  auto p = f.store->import_path(fifo_dir);
  CHECK(p.status().code() == StatusCode::kInvalid);
  CHECK(p.status().message().find(fifo_dir + "/pipe") != std::string::npos);
  CHECK(f.store->import_path(f.dir / "absent").status().code() == StatusCode::kNotFound);
}

TEST_CASE("artifacts: a tree that would expand past the limits is refused before it is stored") {
  // Each level names the level below twice: 18 levels are 524,286 entries, 19 levels
  // 1,048,574, past kMaxExpandedEntries. As a peer's fetched tree (put_tree from held
  // children) the 19th level must not enter the store: nobody could materialize it.
  Fixture f;
  auto leaf = f.store->put_bytes("leaf");
  REQUIRE(leaf.is_ok());
  Digest below = *leaf;
  EntryKind kind = EntryKind::kFile;
  for (int level = 1; level <= 18; ++level) {
    auto d = f.store->put_tree({{"a", kind, below}, {"b", kind, below}});
    REQUIRE_MESSAGE(d.is_ok(), d.status().to_string());
    below = *d;
    kind = EntryKind::kTree;
  }
  auto x = f.store->expansion(below);
  REQUIRE(x.is_ok());
  CHECK(x->entries == 524'286);
  CHECK(x->bytes == 262'144u * 4);
  CHECK(f.store->ref(below)->size_bytes == 262'144u * 4);
  auto bomb = f.store->put_tree({{"a", kind, below}, {"b", kind, below}});
  REQUIRE(!bomb.is_ok());
  CHECK(bomb.status().code() == StatusCode::kInvalid);
  CHECK(bomb.status().message().find("expands to 1048574 entries") != std::string::npos);
  CHECK(f.store->list()->size() == 19);  // the leaf and 18 trees, not the 19th
}

TEST_CASE("artifacts: materialize is read-only and reproduces the content") {
  Fixture f;
  std::string src = f.dir / "src";
  write_file(src + "/a.txt", "alpha");
  write_file(src + "/tool", "#!/bin/sh\n", 0755);
  write_file(src + "/sub/b.txt", "beta");
  auto ref = f.store->import_path(src);
  REQUIRE(ref.is_ok());

  std::string out = f.dir / "job/in";
  std::filesystem::create_directories(f.dir / "job");
  REQUIRE(f.store->materialize(ref->digest, out).is_ok());
  CHECK(read_file(out + "/a.txt") == "alpha");
  CHECK(read_file(out + "/sub/b.txt") == "beta");
  CHECK(read_file(out + "/tool") == "#!/bin/sh\n");
  CHECK(mode_of(out) == 0555);
  CHECK(mode_of(out + "/sub") == 0555);
  CHECK(mode_of(out + "/a.txt") == 0444);
  CHECK(mode_of(out + "/tool") == 0555);
  if (::geteuid() != 0) {  // root ignores permission bits
    CHECK(::access((out + "/a.txt").c_str(), W_OK) != 0);
    CHECK(::access(out.c_str(), W_OK) != 0);
  }
  // Materializing onto an existing path is refused.
  CHECK(f.store->materialize(ref->digest, out).code() == StatusCode::kInvalid);

  std::string single = f.dir / "job/single";
  REQUIRE(f.store->materialize(blake2b("alpha"), single).is_ok());
  CHECK(read_file(single) == "alpha");
  CHECK(mode_of(single) == 0444);
}

TEST_CASE("artifacts: put_tree builds a fan-in tree from existing children") {
  Fixture f;
  auto a = f.store->put_bytes("shard a");
  auto b = f.store->put_bytes("shard b");
  REQUIRE(a.is_ok());
  REQUIRE(b.is_ok());
  std::vector<TreeEntry> entries{{"b", EntryKind::kFile, *b}, {"a", EntryKind::kFile, *a}};
  auto t = f.store->put_tree(entries);
  REQUIRE(t.is_ok());
  CHECK(*t == *tree_digest(entries));
  auto back = f.store->read_tree(*t);
  REQUIRE(back.is_ok());
  CHECK(back->size() == 2);
  CHECK(back->front().name == "a");

  auto missing = f.store->put_tree({{"x", EntryKind::kFile, blake2b("not held")}});
  CHECK(missing.status().code() == StatusCode::kNotFound);
  auto wrong_kind = f.store->put_tree({{"x", EntryKind::kTree, *a}});
  CHECK(wrong_kind.status().code() == StatusCode::kInvalid);
}

TEST_CASE("artifacts: chunked reader and writer verify digests") {
  Fixture f;
  std::string data(100'000, 'z');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  auto d = f.store->put_bytes(data);
  REQUIRE(d.is_ok());
  auto r = f.store->open_reader(*d);
  REQUIRE(r.is_ok());
  CHECK((*r)->size() == data.size());
  std::vector<std::uint8_t> buf(1000);
  auto n = (*r)->read_at(99'500, buf);
  REQUIRE(n.is_ok());
  CHECK(*n == 500);
  CHECK(std::string(buf.begin(), buf.begin() + 500) == data.substr(99'500));
  CHECK((*r)->verify_whole().is_ok());
  std::string streamed;
  for (;;) {
    auto m = (*r)->read_next(buf);
    REQUIRE(m.is_ok());
    if (*m == 0) break;
    streamed.append(buf.begin(), buf.begin() + static_cast<long>(*m));
  }
  CHECK(streamed == data);

  // A writer that receives the wrong bytes stores nothing.
  auto w = f.store->new_writer(ArtifactKind::kFile);
  REQUIRE(w.is_ok());
  REQUIRE((*w)->append(std::span(reinterpret_cast<const std::uint8_t*>("abc"), 3)).is_ok());
  auto bad = (*w)->commit(blake2b("abd"));
  CHECK(bad.status().code() == StatusCode::kCorrupt);
  w->reset();
  CHECK(!*f.store->has(blake2b("abc")));
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));

  auto w2 = f.store->new_writer(ArtifactKind::kFile);
  REQUIRE((*w2)->append(std::span(reinterpret_cast<const std::uint8_t*>("abc"), 3)).is_ok());
  auto good = (*w2)->commit(blake2b("abc"));
  REQUIRE(good.is_ok());
  CHECK(*f.store->read(*good) == "abc");
}

TEST_CASE("artifacts: a writer resumes at its size and can trust a verified digest") {
  Fixture f;
  auto bytes = [](std::string_view s) {
    return std::span(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  auto w = f.store->new_writer(ArtifactKind::kFile);
  REQUIRE(w.is_ok());
  REQUIRE((*w)->write_at(0, bytes("hello, ")).is_ok());
  // A resumed transfer must continue exactly where the bytes end.
  CHECK((*w)->write_at(3, bytes("xx")).code() == StatusCode::kInvalid);
  CHECK((*w)->write_at(9, bytes("xx")).code() == StatusCode::kInvalid);
  std::array<std::uint8_t, 5> back{};
  REQUIRE((*w)->read_at(0, back).is_ok());
  CHECK(std::string(back.begin(), back.end()) == "hello");
  CHECK((*w)->read_at(5, back).code() == StatusCode::kInvalid);  // past what is written
  REQUIRE((*w)->write_at(7, bytes("world")).is_ok());
  auto d = (*w)->commit(std::nullopt);
  REQUIRE(d.is_ok());
  CHECK(*d == blake2b("hello, world"));
  CHECK(*f.store->read(*d) == "hello, world");

  // Without hashing, the caller's digest is required and trusted.
  auto t = f.store->new_writer(ArtifactKind::kFile, WriterOptions{.hash = false});
  REQUIRE(t.is_ok());
  REQUIRE((*t)->append(bytes("trusted")).is_ok());
  CHECK((*t)->commit(std::nullopt).status().code() == StatusCode::kInvalid);
  auto td = (*t)->commit(blake2b("trusted"));
  REQUIRE(td.is_ok());
  CHECK(*f.store->read(*td) == "trusted");

  // A tree received in pieces must decode and name only held children.
  std::string enc = *encode_tree({{"c", EntryKind::kFile, blake2b("not held")}});
  auto tw = f.store->new_writer(ArtifactKind::kTree);
  REQUIRE((*tw)->append(bytes(enc)).is_ok());
  CHECK((*tw)->commit(blake2b(enc)).status().code() == StatusCode::kNotFound);
  REQUIRE(f.store->put_bytes("not held").is_ok());
  auto tree = (*tw)->commit(blake2b(enc));  // retried once the child is held
  REQUIRE_MESSAGE(tree.is_ok(), tree.status().to_string());
  CHECK(f.store->read_tree(*tree)->size() == 1);
}

TEST_CASE("artifacts: a corrupt object is repaired by writing it again, or removed") {
  Fixture f;
  auto d = f.store->put_bytes("precious");
  REQUIRE(d.is_ok());
  std::string path = f.store->object_path(*d, ArtifactKind::kFile);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  write_file(path, "prec1ous", 0444);
  CHECK(f.store->read(*d).status().code() == StatusCode::kCorrupt);
  REQUIRE(f.store->put_bytes("precious").is_ok());
  CHECK(*f.store->read(*d) == "precious");
  CHECK(mode_of(path) == 0444);

  REQUIRE(f.store->pin(*d).is_ok());
  REQUIRE(f.store->remove(*d).is_ok());
  CHECK(!*f.store->has(*d));
  CHECK(!std::filesystem::exists(path));
  CHECK(f.store->remove(*d).code() == StatusCode::kNotFound);
}

TEST_CASE("artifacts: open indexes objects a crash left unindexed and clears temporaries") {
  Fixture f;
  auto d = f.store->put_bytes("survivor");
  REQUIRE(d.is_ok());
  REQUIRE(f.ledger->index_remove(*d).is_ok());  // as if the crash came before the insert
  write_file(artifacts_root(f.dir.path()) + "/tmp/123-1", "half written");
  f.reopen_store();
  CHECK(*f.store->has(*d));
  CHECK(std::filesystem::is_empty(artifacts_root(f.dir.path()) + "/tmp"));
}

TEST_CASE(
    "artifacts: GC removes least recently used, keeping pins, running inputs, "
    "canonical outputs and children of kept trees") {
  Fixture f;
  auto put = [&](const std::string& s) {
    auto d = f.store->put_bytes(s);
    REQUIRE(d.is_ok());
    return *d;
  };
  std::string kb(1000, 'x');
  Digest pinned = put("pinned" + kb);
  Digest running = put("running" + kb);
  Digest canonical = put("canonical" + kb);
  Digest replicated = put("replicated" + kb);
  Digest child = put("child" + kb);
  Digest old1 = put("old1" + kb);
  Digest old2 = put("old2" + kb);
  auto tree = f.store->put_tree({{"c", EntryKind::kFile, child}});
  REQUIRE(tree.is_ok());
  Digest fresh = put("fresh" + kb);
  REQUIRE(f.store->pin(pinned).is_ok());
  REQUIRE(f.store->pin(*tree).is_ok());
  // Using old2 makes it more recent than old1.
  REQUIRE(f.store->read(old2).is_ok());

  GcRequest req;
  req.budget_bytes = 0;
  req.running_inputs = {running};
  req.canonical_outputs = {canonical, replicated};
  req.held_elsewhere = [&](const Digest& d) { return d == replicated; };
  // A dry run names what would go and removes nothing.
  req.dry_run = true;
  auto dry = f.store->gc(req);
  REQUIRE(dry.is_ok());
  CHECK(dry->removed.size() == 4);
  for (Digest d : {pinned, running, canonical, replicated, child, old1, old2, fresh, *tree}) {
    CHECK(*f.store->has(d));
  }
  req.dry_run = false;
  auto report = f.store->gc(req);
  REQUIRE_MESSAGE(report.is_ok(), report.status().to_string());
  for (Digest keep : {pinned, running, canonical, child, *tree}) {
    CHECK(*f.store->has(keep));
  }
  for (Digest gone : {replicated, old1, old2, fresh}) CHECK(!*f.store->has(gone));
  CHECK(report->removed.size() == 4);
  CHECK(report->removed == dry->removed);
  // Least recently used first: old1 before old2 (read after old1 was written).
  auto pos = [&](const Digest& d) {
    return std::find(report->removed.begin(), report->removed.end(), d) - report->removed.begin();
  };
  CHECK(pos(old1) < pos(old2));
  CHECK(!std::filesystem::exists(f.store->object_path(old1, ArtifactKind::kFile)));

  // Unpinning the tree lets both it and then its child go, tree first.
  REQUIRE(f.store->pin(*tree, false).is_ok());
  req.canonical_outputs.clear();
  req.running_inputs.clear();
  auto again = f.store->gc(req);
  REQUIRE(again.is_ok());
  CHECK(!*f.store->has(*tree));
  CHECK(!*f.store->has(child));
  auto tree_at = std::find(again->removed.begin(), again->removed.end(), *tree);
  auto child_at = std::find(again->removed.begin(), again->removed.end(), child);
  CHECK(tree_at < child_at);

  // A budget that is already met removes nothing.
  Digest kept = put("kept");
  req.budget_bytes = 1 << 30;
  auto none = f.store->gc(req);
  REQUIRE(none.is_ok());
  CHECK(none->removed.empty());
  CHECK(*f.store->has(kept));
}

}  // namespace
}  // namespace vow::store

namespace vow::store {
TEST_CASE("artifacts: a held object is looked up in the index once; what the store removes is forgotten") {
  Fixture f;
  auto kept = f.store->put_bytes("kept");
  auto gone = f.store->put_bytes("gone");
  auto swept = f.store->put_bytes("swept");
  REQUIRE((kept.is_ok() && gone.is_ok() && swept.is_ok()));
  REQUIRE(*f.store->has(*kept));
  REQUIRE(*f.store->has(*gone));
  REQUIRE(*f.store->has(*swept));
  // A row removed behind the store's back is still known to this instance (no second
  // read of the index), while stat and verify read the index itself.
  REQUIRE(f.ledger->index_remove(*kept).is_ok());
  CHECK(*f.store->has(*kept));
  CHECK(*f.store->read(*kept) == "kept");
  CHECK(f.store->stat(*kept).status().code() == StatusCode::kNotFound);
  // What the store removes itself, by remove or by GC, is not held any more.
  REQUIRE(f.store->remove(*gone).is_ok());
  CHECK(!*f.store->has(*gone));
  GcRequest everything;
  everything.budget_bytes = 0;
  auto report = f.store->gc(everything);
  REQUIRE(report.is_ok());
  CHECK(!*f.store->has(*swept));
  CHECK(f.store->read(*swept).status().code() == StatusCode::kNotFound);
  // A new instance reads the index again.
  f.reopen_store();
  CHECK(*f.store->has(*kept));  // its object is still there: open indexes it again
}
}  // namespace vow::store
