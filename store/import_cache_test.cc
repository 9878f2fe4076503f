// Incremental import (store/import_cache.h): a snapshot reads only what changed, and
// gives the digest a full import of the same files gives.
#include "store/import_cache.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"
#include "store/import_test_util.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::TempDir;
using testing::write_file;

using testing::kSecond;
using testing::wall_ns;
using Agent = testing::ImportAgent;

// The digest a from-scratch import of PATH gives, in a store of its own.
Digest full_import(const std::string& path) {
  Agent fresh;
  auto r = fresh.store->import_path(path);
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  return r->digest;
}

// A cache whose snapshots start an hour from now: the files written by the test are
// then well older than the racy window, as a dataset's files usually are.
ImportCache later_cache(const std::string& source) {
  ImportCache c(source);
  c.clock = [] { return wall_ns() + 3600 * kSecond; };
  return c;
}

// N small files in directories of 100.
void make_dataset(const std::string& src, int n) {
  for (int i = 0; i < n; ++i) {
    write_file(src + "/d" + std::to_string(i / 100) + "/f" + std::to_string(i) + ".txt",
               "record " + std::to_string(i) + "\n");
  }
}

Result<ArtifactRef> snapshot(Agent& a, ImportCache& cache, ImportStats* stats,
                             const std::string& path) {
  return a.store->import_path(path, cache, stats);
}

TEST_CASE("import cache: an unchanged 1,000-file source is snapshotted without reading a file") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 1000);
  ImportCache cache = later_cache(src);
  ImportStats st;
  auto first = snapshot(a, cache, &st, src);
  REQUIRE_MESSAGE(first.is_ok(), first.status().to_string());
  CHECK(st.files == 1000);
  CHECK(st.files_read == 1000);
  CHECK(a.opened_under(src + "/").size() == 1000);
  CHECK(cache.size() == 1000);
  CHECK(cache.dirty());

  std::uint64_t writes_before = a.env.writes();
  auto objects_before = a.store->list()->size();
  auto second = snapshot(a, cache, &st, src);
  REQUIRE_MESSAGE(second.is_ok(), second.status().to_string());
  CHECK(second->digest == first->digest);
  CHECK(second->size_bytes == first->size_bytes);
  CHECK(second->entries == first->entries);
  CHECK(a.opened_under(src + "/").empty());  // no file opened
  CHECK(st.files == 1000);
  CHECK(st.files_read == 0);
  CHECK(st.bytes_read == 0);
  CHECK(st.files_reused == 1000);
  CHECK(st.trees_written == 0);  // every tree was already held
  CHECK(st.trees_reused == 11);
  CHECK(a.env.writes() == writes_before);  // nothing written
  CHECK(a.store->list()->size() == objects_before);
}

TEST_CASE("import cache: one changed file is the only one read; the digest is a full import's") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 500);
  ImportCache cache = later_cache(src);
  auto first = snapshot(a, cache, nullptr, src);
  REQUIRE(first.is_ok());
  a.opened_under("");

  std::string changed = src + "/d4/f417.txt";
  write_file(changed, "record 417, corrected\n");
  ImportStats st;
  auto second = snapshot(a, cache, &st, src);
  REQUIRE_MESSAGE(second.is_ok(), second.status().to_string());
  CHECK(a.opened_under(src + "/") == std::vector<std::string>{changed});
  CHECK(st.files_read == 1);
  CHECK(st.files_reused == 499);
  CHECK(st.trees_written == 2);  // d4 and the top
  CHECK(second->digest != first->digest);
  CHECK(second->digest == full_import(src));
  // What the store holds under the new digest is the new content.
  auto dir = a.store->read_tree(second->digest);
  REQUIRE(dir.is_ok());
  auto d4 = std::find_if(dir->begin(), dir->end(), [](const TreeEntry& e) { return e.name == "d4"; });
  REQUIRE(d4 != dir->end());
  auto files = a.store->read_tree(d4->digest);
  REQUIRE(files.is_ok());
  auto f = std::find_if(files->begin(), files->end(),
                        [](const TreeEntry& e) { return e.name == "f417.txt"; });
  REQUIRE(f != files->end());
  CHECK(*a.store->read(f->digest) == "record 417, corrected\n");
}

TEST_CASE("import cache: files just written are not remembered (wall clock)") {
  Agent a;
  std::string src = a.dir / "src";
  write_file(src + "/a.txt", "aaaa");
  write_file(src + "/b.txt", "bbbb");
  ImportCache cache(src);  // the wall clock: the files were written just now
  auto first = snapshot(a, cache, nullptr, src);
  REQUIRE(first.is_ok());
  CHECK(cache.find("a.txt") == nullptr);
  CHECK(cache.find("b.txt") == nullptr);
  write_file(src + "/a.txt", "AAAA");  // same size, same inode
  ImportStats st;
  auto second = snapshot(a, cache, &st, src);
  REQUIRE(second.is_ok());
  CHECK(st.files_read == 2);
  CHECK(second->digest == full_import(src));
  CHECK(second->digest != first->digest);
}

TEST_CASE("import cache: a file rewritten within the snapshot's second is read again (racy)") {
  // A file system that gives every file the same times (as some do) makes a same-size
  // rewrite of the same inode indistinguishable by its stamp: only the racy rule can
  // tell that the file may have changed.
  std::int64_t t = (wall_ns() / kSecond) * kSecond;
  Agent a;
  a.env.plan().fixed_times_ns = t;
  std::string src = a.dir / "src";
  write_file(src + "/data.csv", "1,2,3\n");
  write_file(src + "/other.csv", "4,5,6\n");
  ImportCache cache(src);
  std::int64_t start = t + kSecond / 2;  // the snapshot starts in the files' second
  cache.clock = [&start] { return start; };
  auto first = snapshot(a, cache, nullptr, src);
  REQUIRE(first.is_ok());
  write_file(src + "/data.csv", "7,8,9\n");
  auto info = a.env.stat(src + "/data.csv");
  REQUIRE(info.is_ok());
  CHECK(info->mtime_ns == t);

  SUBCASE("the next snapshot reads it again and sees the new bytes") {
    start = t + 2 * kSecond;
    ImportStats st;
    auto second = snapshot(a, cache, &st, src);
    REQUIRE(second.is_ok());
    CHECK(st.files_read == 2);
    CHECK(second->digest != first->digest);
    CHECK(second->digest == full_import(src));
    // Read at a start well after the files' times, they are remembered now.
    start = t + 3600 * kSecond;
    REQUIRE(snapshot(a, cache, nullptr, src).is_ok());
    CHECK(cache.size() == 2);
  }
  SUBCASE("control: once remembered, an identical stamp is trusted (why the rule exists)") {
    start = t + 3600 * kSecond;
    auto remembered = snapshot(a, cache, nullptr, src);  // reads both, remembers both
    REQUIRE(remembered.is_ok());
    CHECK(remembered->digest == full_import(src));
    write_file(src + "/data.csv", "0,0,0\n");  // same size, same inode, same times
    ImportStats st;
    auto again = snapshot(a, cache, &st, src);
    REQUIRE(again.is_ok());
    CHECK(st.files_read == 0);
    CHECK(again->digest == remembered->digest);
  }
}

TEST_CASE("import cache: deleted, added and newly executable files are picked up") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 300);
  ImportCache cache = later_cache(src);
  auto first = snapshot(a, cache, nullptr, src);
  REQUIRE(first.is_ok());
  a.opened_under("");

  std::filesystem::remove(src + "/d1/f150.txt");
  write_file(src + "/d2/new.txt", "new\n");
  REQUIRE(::chmod((src + "/d0/f7.txt").c_str(), 0755) == 0);
  ImportStats st;
  auto second = snapshot(a, cache, &st, src);
  REQUIRE_MESSAGE(second.is_ok(), second.status().to_string());
  auto opened = a.opened_under(src + "/");
  std::sort(opened.begin(), opened.end());
  CHECK(opened == std::vector<std::string>{src + "/d0/f7.txt", src + "/d2/new.txt"});
  CHECK(st.files == 300);
  CHECK(second->digest == full_import(src));
  CHECK(cache.find("d1/f150.txt") == nullptr);
  CHECK(cache.find("d2/new.txt") != nullptr);

  auto top = a.store->read_tree(second->digest);
  REQUIRE(top.is_ok());
  auto d0 = a.store->read_tree((*top)[0].digest);
  REQUIRE(d0.is_ok());
  auto f7 = std::find_if(d0->begin(), d0->end(), [](const TreeEntry& e) { return e.name == "f7.txt"; });
  REQUIRE(f7 != d0->end());
  CHECK(f7->kind == EntryKind::kExecutable);

  // Back to not executable: the first snapshot's digest again.
  REQUIRE(::chmod((src + "/d0/f7.txt").c_str(), 0644) == 0);
  write_file(src + "/d1/f150.txt", "record 150\n");
  std::filesystem::remove(src + "/d2/new.txt");
  auto third = snapshot(a, cache, nullptr, src);
  REQUIRE(third.is_ok());
  CHECK(third->digest == first->digest);
}

TEST_CASE("import cache: it survives a restart; a damaged or foreign one means a full import") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 150);
  std::string file = a.dir / "src.cache";
  Digest first;
  {
    ImportCache cache = later_cache(src);
    auto r = snapshot(a, cache, nullptr, src);
    REQUIRE(r.is_ok());
    first = r->digest;
    REQUIRE(cache.save(a.env, file).is_ok());
    CHECK(!cache.dirty());
  }
  a.restart();
  a.opened_under("");

  std::string dropped;
  auto loaded = ImportCache::load(a.env, file, src, &dropped);
  REQUIRE_MESSAGE(loaded.is_ok(), loaded.status().to_string());
  CHECK(dropped.empty());
  CHECK(loaded->size() == 150);
  loaded->clock = [] { return wall_ns() + 3600 * kSecond; };
  ImportStats st;
  auto r = snapshot(a, *loaded, &st, src);
  REQUIRE(r.is_ok());
  CHECK(r->digest == first);
  CHECK(st.files_read == 0);
  CHECK(a.opened_under(src + "/").empty());
  CHECK(!loaded->dirty());

  SUBCASE("an object gone from the store is read again") {
    const CachedFile* e = loaded->find("d1/f133.txt");
    REQUIRE(e != nullptr);
    Digest gone = e->digest;
    REQUIRE(a.store->remove(gone).is_ok());
    auto again = snapshot(a, *loaded, &st, src);
    REQUIRE(again.is_ok());
    CHECK(again->digest == first);
    CHECK(st.objects_missing == 1);
    CHECK(st.files_read == 1);
    CHECK(a.opened_under(src + "/") == std::vector<std::string>{src + "/d1/f133.txt"});
    CHECK(*a.store->has(gone));
    CHECK(a.store->verify(first).is_ok());
  }
  SUBCASE("a truncated cache file is dropped, saying so") {
    std::filesystem::resize_file(file, std::filesystem::file_size(file) - 10);
    auto damaged = ImportCache::load(a.env, file, src, &dropped);
    REQUIRE(damaged.is_ok());
    CHECK(damaged->size() == 0);
    CHECK(dropped.find(file) != std::string::npos);
    CHECK(dropped.find("checksum") != std::string::npos);
    damaged->clock = [] { return wall_ns() + 3600 * kSecond; };
    auto full = snapshot(a, *damaged, &st, src);
    REQUIRE(full.is_ok());
    CHECK(full->digest == first);
    CHECK(st.files_read == 150);
  }
  SUBCASE("a cache written for another path is not used") {
    auto other = ImportCache::load(a.env, file, a.dir / "elsewhere", &dropped);
    REQUIRE(other.is_ok());
    CHECK(other->size() == 0);
    CHECK(dropped.find("was written for " + src) != std::string::npos);
    // And a cache is only used for the path it was made for.
    auto wrong = a.store->import_path(src, *other);
    CHECK(wrong.status().code() == StatusCode::kInvalid);
  }
  SUBCASE("no cache file: an empty cache") {
    auto none = ImportCache::load(a.env, a.dir / "absent.cache", src, &dropped);
    REQUIRE(none.is_ok());
    CHECK(none->size() == 0);
    CHECK(dropped.empty());
  }
}

TEST_CASE("import cache: a single-file source; the refusals and their messages are unchanged") {
  Agent a;
  std::string src = a.dir / "src";
  write_file(src + "/table.csv", "x,y\n");
  std::string file_source = src + "/table.csv";
  {
    ImportCache cache = later_cache(file_source);
    auto r = snapshot(a, cache, nullptr, file_source);
    REQUIRE(r.is_ok());
    CHECK(!r->is_tree);
    CHECK(r->digest == blake2b("x,y\n"));
    ImportStats st;
    REQUIRE(snapshot(a, cache, &st, file_source).is_ok());
    CHECK(st.files_read == 0);
    write_file(file_source, "x,y\n1,2\n");
    auto changed = snapshot(a, cache, &st, file_source);
    REQUIRE(changed.is_ok());
    CHECK(changed->digest == blake2b("x,y\n1,2\n"));
  }

  ImportCache cache = later_cache(src);
  REQUIRE(snapshot(a, cache, nullptr, src).is_ok());
  REQUIRE(cache.save(a.env, a.dir / "c").is_ok());
  auto expect_same_refusal = [&](const std::string& path) {
    auto plain = a.store->import_path(path);
    REQUIRE(!plain.is_ok());
    ImportCache fresh = later_cache(path);
    auto cached = a.store->import_path(path, fresh);
    CHECK(cached.status().to_string() == plain.status().to_string());
    CHECK(fresh.size() == 0);
    CHECK(!fresh.dirty());
    if (path == src) {
      // A refused snapshot leaves the cache as it was.
      auto again = a.store->import_path(src, cache);
      CHECK(again.status().to_string() == plain.status().to_string());
      CHECK(cache.size() == 1);
      CHECK(!cache.dirty());
    }
    return plain.status();
  };

  REQUIRE(::symlink("table.csv", (src + "/link").c_str()) == 0);
  Status link = expect_same_refusal(src);
  CHECK(link.code() == StatusCode::kInvalid);
  CHECK(link.message().find(src + "/link") != std::string::npos);
  CHECK(link.message().find("symbolic link") != std::string::npos);
  std::filesystem::remove(src + "/link");

  REQUIRE(::mkfifo((src + "/pipe").c_str(), 0644) == 0);
  Status fifo = expect_same_refusal(src);
  CHECK(fifo.message().find("special file") != std::string::npos);
  std::filesystem::remove(src + "/pipe");

  std::string deep = src;
  for (int i = 0; i <= kMaxTreeDepth; ++i) deep += "/n";
  std::filesystem::create_directories(deep);
  Status too_deep = expect_same_refusal(src);
  CHECK(too_deep.code() == StatusCode::kOverloaded);
  CHECK(too_deep.message().find("deeper than") != std::string::npos);
  std::filesystem::remove_all(src + "/n");

  CHECK(expect_same_refusal(a.dir / "absent").code() == StatusCode::kNotFound);
  // After the refusals, the remembered snapshot still holds: nothing is read.
  ImportStats st;
  REQUIRE(snapshot(a, cache, &st, src).is_ok());
  CHECK(st.files_read == 0);
}

}  // namespace
}  // namespace vow::store
