// Partial imports (ArtifactStore::import_path with ChangedDirs): only the directories
// named as changed, and those above them, are looked into; the digest and the entries are
// a full walk's; whenever the cache cannot vouch for what is not named, the full walk is
// made.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "store/artifact_store.h"
#include "store/import_cache.h"
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

// What a full import of PATH gives (digest, size, top-level entries), computed here
// from the files themselves: a store would sync every file again, which is slow.
ArtifactRef full_import(const std::string& path) {
  ArtifactRef ref;
  ref.is_tree = true;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(path)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string child = path + "/" + name;
    struct stat st {};
    REQUIRE(::lstat(child.c_str(), &st) == 0);
    if (S_ISDIR(st.st_mode)) {
      ArtifactRef sub = full_import(child);
      ref.entries.push_back({name, EntryKind::kTree, sub.digest});
      ref.size_bytes += sub.size_bytes;
    } else {
      std::string bytes = testing::read_file(child);
      auto kind = (st.st_mode & S_IXUSR) ? EntryKind::kExecutable : EntryKind::kFile;
      ref.entries.push_back({name, kind, blake2b(bytes)});
      ref.size_bytes += bytes.size();
    }
  }
  auto encoding = encode_tree(ref.entries);
  REQUIRE(encoding.is_ok());
  ref.digest = blake2b(*encoding);
  return ref;
}

// Snapshots start an hour from now: the test's files are older than the racy window.
ImportCache later_cache(const std::string& source) {
  ImportCache c(source);
  c.clock = [] { return wall_ns() + 3600 * kSecond; };
  return c;
}

// N files in directories of 10 (d0, d1, ...), and d3/sub/x.txt.
void make_dataset(const std::string& src, int n) {
  for (int i = 0; i < n; ++i) {
    write_file(src + "/d" + std::to_string(i / 10) + "/f" + std::to_string(i) + ".txt",
               "record " + std::to_string(i) + "\n");
  }
  write_file(src + "/d3/sub/x.txt", "x\n");
}

Result<ArtifactRef> snapshot(Agent& a, ImportCache& cache, const std::string& src,
                             const ChangedDirs* changed, ImportStats* stats = nullptr) {
  return a.store->import_path(src, cache, stats, changed);
}

// The reference a full walk gives: digest, size and entries.
void check_as_full(const ArtifactRef& r, const std::string& src) {
  ArtifactRef full = full_import(src);
  CHECK(r.digest == full.digest);
  CHECK(r.size_bytes == full.size_bytes);
  CHECK(r.entries == full.entries);
}

TEST_CASE("partial import: only a named directory is looked into; the result is a full walk's") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 100);
  ImportCache cache = later_cache(src);
  ImportStats st;
  auto first = snapshot(a, cache, src, nullptr, &st);
  REQUIRE_MESSAGE(first.is_ok(), first.status().to_string());
  // The reference computed here is what the store's import gives.
  auto plain = a.store->import_path(src);
  REQUIRE(plain.is_ok());
  check_as_full(*plain, src);
  CHECK(st.dirs_walked == 12);  // the top, d0..d9, d3/sub
  CHECK(st.dirs_reused == 0);
  CHECK(cache.dir_count() == 12);
  REQUIRE(cache.save(a.env, a.dir / "src.cache").is_ok());
  a.looked_under("");

  SUBCASE("nothing named: the whole tree from the cache, one lstat of the source") {
    ChangedDirs none;
    auto r = snapshot(a, cache, src, &none, &st);
    REQUIRE(r.is_ok());
    CHECK(a.looked_under(src) == std::vector<std::string>{src});
    CHECK(st.dirs_walked == 0);
    CHECK(st.dirs_reused == 1);
    CHECK(st.files == 101);
    CHECK(st.files_read == 0);
    check_as_full(*r, src);
    CHECK(r->entries == first->entries);
    CHECK(!cache.dirty());
  }
  SUBCASE("one file changed, its directory named") {
    write_file(src + "/d4/f47.txt", "record 47, corrected\n");
    ChangedDirs changed{"d4"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
    CHECK(r->digest != first->digest);
    check_as_full(*r, src);
    CHECK(st.files_read == 1);
    CHECK(st.dirs_walked == 2);  // the top and d4
    CHECK(st.dirs_reused == 9);  // d0..d3 (with sub) and d5..d9, without a look inside
    CHECK(st.files == 101);
    // Looked at: the top's entries, and d4's.
    std::set<std::string> in_d4;
    for (const auto& p : a.looked_under(src + "/")) {
      std::string rest = p.substr(src.size() + 1);
      bool top_entry = rest.find('/') == std::string::npos;
      if (rest.compare(0, 3, "d4/") == 0) in_d4.insert(rest);
      CHECK_MESSAGE((top_entry || rest.compare(0, 3, "d4/") == 0), p);
    }
    CHECK(in_d4.size() == 10);
    CHECK(cache.dirty());
    // What the cache now remembers is what a full walk through it would remember.
    ImportCache walked = later_cache(src);
    REQUIRE(snapshot(a, walked, src, nullptr).is_ok());
    CHECK(walked.dir_count() == cache.dir_count());
    CHECK(*walked.find_dir("") == *cache.find_dir(""));
    CHECK(*walked.find_dir("d4") == *cache.find_dir("d4"));
    CHECK(*walked.find("d4/f47.txt") == *cache.find("d4/f47.txt"));
    // And the next snapshot, nothing named, is the same.
    ChangedDirs none;
    auto again = snapshot(a, cache, src, &none, &st);
    REQUIRE(again.is_ok());
    CHECK(again->digest == r->digest);
    CHECK(again->entries == r->entries);
    CHECK(st.dirs_reused == 1);
  }
  SUBCASE("a directory deeper down named: the ones above it are walked, not their siblings") {
    write_file(src + "/d3/sub/y.txt", "y\n");
    ChangedDirs changed{"d3/sub"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_walked == 3);  // the top, d3, d3/sub
    CHECK(st.dirs_reused == 9);
    CHECK(st.files_read == 1);
  }
}

TEST_CASE(
    "partial import: a hint that omits a change is not relied on when the cache cannot vouch") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 30);
  ImportCache cache = later_cache(src);
  auto first = snapshot(a, cache, src, nullptr);
  REQUIRE(first.is_ok());
  // Every case below changes d2 and names nothing: only a full walk sees the change.
  ChangedDirs none;
  ImportStats st;

  SUBCASE("control: with the cache vouching, the hint is taken at its word") {
    write_file(src + "/d2/f25.txt", "changed\n");
    auto r = snapshot(a, cache, src, &none, &st);
    REQUIRE(r.is_ok());
    CHECK(r->digest == first->digest);  // why the hint must name every change
    CHECK(st.dirs_reused == 1);
  }
  SUBCASE("a cache that never snapshotted the source") {
    ImportCache fresh = later_cache(src);
    write_file(src + "/d2/f25.txt", "changed\n");
    auto r = snapshot(a, fresh, src, &none, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_reused == 0);
  }
  SUBCASE("a cache loaded after a restart, then one made by this store") {
    REQUIRE(cache.save(a.env, a.dir / "src.cache").is_ok());
    a.restart();
    std::string dropped;
    auto loaded = ImportCache::load(a.env, a.dir / "src.cache", src, &dropped);
    REQUIRE(loaded.is_ok());
    CHECK(dropped.empty());
    CHECK(loaded->dir_count() == cache.dir_count());
    CHECK(*loaded->find_dir("") == *cache.find_dir(""));
    loaded->clock = [] { return wall_ns() + 3600 * kSecond; };
    write_file(src + "/d2/f25.txt", "changed\n");
    auto r = snapshot(a, *loaded, src, &none, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_reused == 0);
    CHECK(st.files_read == 1);
    // Checked whole by that walk, its directories are taken from now on.
    auto again = snapshot(a, *loaded, src, &none, &st);
    REQUIRE(again.is_ok());
    CHECK(again->digest == r->digest);
    CHECK(st.dirs_reused == 1);
  }
  SUBCASE("the store removed an object since") {
    const CachedFile* e = cache.find("d0/f5.txt");
    REQUIRE(e != nullptr);
    REQUIRE(a.store->remove(e->digest).is_ok());
    write_file(src + "/d2/f25.txt", "changed\n");
    auto r = snapshot(a, cache, src, &none, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_reused == 0);
    CHECK(st.objects_missing == 1);
    CHECK(a.store->verify(r->digest).is_ok());
  }
  SUBCASE("a directory put in the place of one remembered, its parent named") {
    std::filesystem::rename(src + "/d2", a.dir / "old-d2");
    write_file(src + "/d2/f25.txt", "changed\n");
    ChangedDirs top{""};
    auto r = snapshot(a, cache, src, &top, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_walked == 2);  // the top, and d2: another inode
  }
}

TEST_CASE("partial import: a directory holding a racy file is walked again next time") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 30);
  std::int64_t start = wall_ns() + 3600 * kSecond;
  ImportCache cache(src);
  cache.clock = [&start] { return start; };
  REQUIRE(snapshot(a, cache, src, nullptr).is_ok());
  CHECK(cache.find_dir("d1") != nullptr);

  // Written just now and snapshotted at once: d1's files are racy, so d1 (and the top,
  // above it) is not remembered.
  write_file(src + "/d1/new.txt", "new\n");
  start = wall_ns();
  ChangedDirs changed{"d1"};
  ImportStats st;
  auto r = snapshot(a, cache, src, &changed, &st);
  REQUIRE(r.is_ok());
  check_as_full(*r, src);
  CHECK(cache.find_dir("d1") == nullptr);
  CHECK(cache.find_dir("") == nullptr);
  CHECK(cache.find("d1/new.txt") == nullptr);
  CHECK(cache.find_dir("d0") != nullptr);

  // Rewritten, and nothing named: the cache vouches for d0 and d2 only.
  write_file(src + "/d1/new.txt", "NEW!\n");
  a.looked_under("");
  ChangedDirs none;
  auto again = snapshot(a, cache, src, &none, &st);
  REQUIRE(again.is_ok());
  CHECK(again->digest != r->digest);
  check_as_full(*again, src);
  CHECK(st.dirs_walked == 2);  // the top and d1
  CHECK(st.dirs_reused == 3);  // d0, d2, d3 (with sub)
  auto looked = a.looked_under(src + "/d1/");
  CHECK(std::find(looked.begin(), looked.end(), src + "/d1/new.txt") != looked.end());

  // Once old enough, remembered again, and then taken whole.
  start = wall_ns() + 3600 * kSecond;
  REQUIRE(snapshot(a, cache, src, &none).is_ok());
  CHECK(cache.find_dir("d1") != nullptr);
  CHECK(cache.find_dir("") != nullptr);
  REQUIRE(snapshot(a, cache, src, &none, &st).is_ok());
  CHECK(st.dirs_reused == 1);
}

TEST_CASE("partial import: new, removed and retyped directories") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 30);
  ImportCache cache = later_cache(src);
  REQUIRE(snapshot(a, cache, src, nullptr).is_ok());
  ImportStats st;

  SUBCASE("a new directory tree, each directory in it named") {
    write_file(src + "/d2/new/deeper/a.txt", "a\n");
    write_file(src + "/d2/new/b.txt", "b\n");
    ChangedDirs changed{"d2", "d2/new", "d2/new/deeper"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.files_read == 2);
    CHECK(cache.find_dir("d2/new/deeper") != nullptr);
    CHECK(cache.find("d2/new/b.txt") != nullptr);
  }
  SUBCASE("a removed directory is forgotten with all it held") {
    std::filesystem::remove_all(src + "/d3");
    ChangedDirs changed{"", "d3"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_walked == 1);
    CHECK(cache.find_dir("d3") == nullptr);
    CHECK(cache.find_dir("d3/sub") == nullptr);
    CHECK(cache.find("d3/sub/x.txt") == nullptr);
    CHECK(cache.find("d2/f25.txt") != nullptr);
    CHECK(cache.size() == 30);
  }
  SUBCASE("a file that became a directory, and a directory that became a file") {
    std::filesystem::remove(src + "/d1/f15.txt");
    write_file(src + "/d1/f15.txt/inner.txt", "inner\n");
    std::filesystem::remove_all(src + "/d3/sub");
    write_file(src + "/d3/sub", "now a file\n");
    ChangedDirs changed{"d1", "d1/f15.txt", "d3"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(cache.find("d1/f15.txt") == nullptr);
    CHECK(cache.find_dir("d1/f15.txt") != nullptr);
    CHECK(cache.find_dir("d3/sub") == nullptr);
    CHECK(cache.find("d3/sub/x.txt") == nullptr);
    CHECK(cache.find("d3/sub") != nullptr);
    // The next snapshot takes it all from the cache, as a full walk gives it.
    ChangedDirs none;
    auto again = snapshot(a, cache, src, &none, &st);
    REQUIRE(again.is_ok());
    CHECK(again->digest == r->digest);
    CHECK(st.dirs_reused == 1);
  }
  SUBCASE("a named directory that is gone since, or never was") {
    ChangedDirs changed{"nosuch/dir", "d0"};
    auto r = snapshot(a, cache, src, &changed, &st);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(st.dirs_walked == 2);
  }
  SUBCASE("a refusal inside a named directory is the full walk's, with its message") {
    REQUIRE(::symlink("f0.txt", (src + "/d0/link").c_str()) == 0);
    ChangedDirs changed{"d0"};
    auto r = snapshot(a, cache, src, &changed, &st);
    auto plain = a.store->import_path(src);
    REQUIRE(!r.is_ok());
    CHECK(r.status().to_string() == plain.status().to_string());
    CHECK(r.status().message().find(src + "/d0/link") != std::string::npos);
  }
}

TEST_CASE("partial import: a cache file of the previous format is an empty cache") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 10);
  // Version 1: the magic line, the source path, no entries, the checksum.
  std::string body = "vow import cache 1\n";
  auto put_u64 = [&body](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) body.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put_u64(src.size());
  body += src;
  put_u64(0);
  Digest sum = blake2b(body);
  body.append(reinterpret_cast<const char*>(sum.bytes.data()), Digest::kSize);
  std::string file = a.dir / "old.cache";
  write_file(file, body);

  std::string dropped;
  auto loaded = ImportCache::load(a.env, file, src, &dropped);
  REQUIRE(loaded.is_ok());
  CHECK(loaded->size() == 0);
  CHECK(loaded->dir_count() == 0);
  CHECK(dropped.find("another version") != std::string::npos);
  loaded->clock = [] { return wall_ns() + 3600 * kSecond; };
  ChangedDirs none;
  ImportStats st;
  auto r = snapshot(a, *loaded, src, &none, &st);
  REQUIRE(r.is_ok());
  check_as_full(*r, src);
  CHECK(st.files_read == 11);
  CHECK(st.dirs_reused == 0);
  // Saved and loaded again, it holds the directories.
  REQUIRE(loaded->save(a.env, file).is_ok());
  auto again = ImportCache::load(a.env, file, src, &dropped);
  REQUIRE(again.is_ok());
  CHECK(dropped.empty());
  CHECK(again->dir_count() == 4);  // the top, d0, d3, d3/sub
  CHECK(again->size() == 11);
}

// A whole walk stores what it reads as one group (the agent's full source checks): the
// cache's directories are vouched for once the group is stored, and what it took for
// held is forgotten if the group was not.
TEST_CASE("a snapshot imported in one group: vouched once stored, forgotten if not") {
  Agent a;
  std::string src = a.dir / "src";
  make_dataset(src, 100);
  ImportStats st;
  SUBCASE("stored: the next partial import takes the tree whole") {
    ImportCache cache = later_cache(src);
    Result<ArtifactRef> r = Status::invalid("not run");
    Status stored = a.store->import_together([&]() -> Status {
      r = snapshot(a, cache, src, nullptr, &st);
      return r.status();
    });
    REQUIRE_MESSAGE(stored.is_ok(), stored.to_string());
    a.store->settle_group_import(cache, true);
    REQUIRE(r.is_ok());
    check_as_full(*r, src);
    CHECK(*a.store->has(r->digest));
    CHECK(*a.store->has(blake2b("record 7\n")));
    ChangedDirs none;
    auto again = snapshot(a, cache, src, &none, &st);
    REQUIRE(again.is_ok());
    CHECK(again->digest == r->digest);
    CHECK(st.dirs_reused == 1);
    CHECK(st.dirs_walked == 0);
  }
  SUBCASE("not stored: nothing it wrote is taken for held") {
    ImportCache cache = later_cache(src);
    a.env.plan().fail_sync = true;  // the group's syncs fail: nothing is stored
    Result<ArtifactRef> r = Status::invalid("not run");
    Status stored = a.store->import_together([&]() -> Status {
      r = snapshot(a, cache, src, nullptr, &st);
      return r.status();
    });
    CHECK(!stored.is_ok());
    a.store->settle_group_import(cache, false);
    a.env.plan().fail_sync = false;
    CHECK(!*a.store->has(blake2b("record 7\n")));
    ChangedDirs none;
    auto again = snapshot(a, cache, src, &none, &st);
    REQUIRE_MESSAGE(again.is_ok(), again.status().to_string());
    check_as_full(*again, src);
    CHECK(st.dirs_reused == 0);         // not vouched: walked
    CHECK(st.objects_missing == 101);   // each file's object looked up, found missing, read
    CHECK(*a.store->has(again->digest));
    CHECK(*a.store->has(blake2b("record 7\n")));
  }
}

TEST_CASE("a group larger than one round stores every object") {
  Agent a;
  std::string src = a.dir / "src";
  const int n = static_cast<int>(kMaxGroupObjects) + 50;
  make_dataset(src, n);
  Result<ArtifactRef> r = Status::invalid("not run");
  Status stored = a.store->import_together([&]() -> Status {
    r = a.store->import_path(src);
    return r.status();
  });
  REQUIRE_MESSAGE(stored.is_ok(), stored.to_string());
  REQUIRE(r.is_ok());
  check_as_full(*r, src);
  for (int i = 0; i < n; i += 97) {
    CHECK(*a.store->has(blake2b("record " + std::to_string(i) + "\n")));
  }
  CHECK(*a.store->has(blake2b("record " + std::to_string(n - 1) + "\n")));
  CHECK(*a.store->has(r->digest));
  a.restart();  // indexed, not only known to that instance
  CHECK(*a.store->has(blake2b("record 0\n")));
  CHECK(*a.store->has(r->digest));
}

// A new fan-out directory is a name in `objects/`: alone, an object that makes one syncs
// `objects/` at once; in a group, `objects/` is synced once, with the fan-out
// directories, before any row is committed.
TEST_CASE("a group syncs objects/ once for the fan-out directories it made") {
  Agent a;
  const std::string objects = artifacts_root(a.dir.path()) + "/objects";
  auto objects_syncs = [&] {
    return std::count(a.env.synced().begin(), a.env.synced().end(), objects);
  };
  // Three contents whose digests fall in three different fan-out directories.
  std::vector<std::string> texts;
  std::set<std::string> fanouts;
  for (int i = 0; texts.size() < 6; ++i) {
    std::string t = "content " + std::to_string(i);
    if (fanouts.insert(blake2b(t).hex().substr(0, 2)).second) texts.push_back(t);
  }
  for (int i = 0; i < 3; ++i) {
    write_file(a.dir / ("alone" + std::to_string(i)), texts[static_cast<std::size_t>(i)]);
    REQUIRE(a.store->import_path(a.dir / ("alone" + std::to_string(i))).is_ok());
  }
  CHECK(objects_syncs() == 3);
  for (int i = 3; i < 6; ++i) {
    write_file(a.dir / ("grouped" + std::to_string(i)), texts[static_cast<std::size_t>(i)]);
  }
  Status s = a.store->import_together([&]() -> Status {
    for (int i = 3; i < 6; ++i) {
      VOW_RETURN_IF_ERROR(a.store->import_path(a.dir / ("grouped" + std::to_string(i))).status());
    }
    return Status::ok();
  });
  REQUIRE_MESSAGE(s.is_ok(), s.to_string());
  CHECK(objects_syncs() == 4);
  for (int i = 3; i < 6; ++i) CHECK(*a.store->has(blake2b(texts[static_cast<std::size_t>(i)])));
}


// An agent makes every fan-out directory at start (ArtifactSink::place puts objects only
// where the store made and synced the directory): made once, `objects/` synced once.
TEST_CASE("every fan-out directory made ahead, with one sync of objects/") {
  Agent a;
  const std::string objects = artifacts_root(a.dir.path()) + "/objects";
  auto objects_syncs = [&] {
    return std::count(a.env.synced().begin(), a.env.synced().end(), objects);
  };
  write_file(a.dir / "one", "one object first");
  REQUIRE(a.store->import_path(a.dir / "one").is_ok());
  CHECK(objects_syncs() == 1);
  REQUIRE(a.store->make_fanouts().is_ok());
  CHECK(objects_syncs() == 2);
  int dirs = 0;
  for (const auto& e : std::filesystem::directory_iterator(objects)) dirs += e.is_directory();
  CHECK(dirs == 256);
  REQUIRE(a.store->make_fanouts().is_ok());  // nothing missing: nothing synced
  CHECK(objects_syncs() == 2);
  // An object that lands in one now makes no directory and syncs no `objects/`.
  write_file(a.dir / "two", "a second object");
  REQUIRE(a.store->import_path(a.dir / "two").is_ok());
  CHECK(objects_syncs() == 2);
}

}  // namespace
}  // namespace vow::store
