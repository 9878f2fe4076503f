// Fetched artifacts: small ones arrive in memory and reach the store without a file of
// their own; larger ones spill to STATE/incoming (agent/fetch_sink.h).
#include "agent/fetch_sink.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "agent/local_effects.h"
#include "promises/tree.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::agent {
namespace {

bool exists(const std::string& path) {
  struct stat sb {};
  return ::stat(path.c_str(), &sb) == 0;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::span<const std::uint8_t> bytes_of(const std::string& s, std::size_t from, std::size_t n) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()) + from, n};
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

// A state directory with its ledger and store, as vowd opens them.
struct State {
  store::testing::TempDir dir;
  std::unique_ptr<store::LedgerStore> ledger;
  std::unique_ptr<store::ArtifactStore> artifacts;
  State() {
    auto l = store::open_sqlite_ledger(store::ledger_path(dir.path()));
    REQUIRE(l.is_ok());
    ledger = std::move(l).value();
    auto s = store::ArtifactStore::open(store::artifacts_root(dir.path()), *ledger);
    REQUIRE(s.is_ok());
    artifacts = std::move(s).value();
  }
  std::string part(const Digest& d) const { return incoming_path(dir.path(), d); }
};

// The worker's step: the received artifact into the store, then read back whole, with
// nothing left behind in memory or in STATE/incoming.
void store_and_check(State& st, ReceivedInMemory& received, const Digest& d,
                     const std::string& data) {
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  auto r = store_sink.store_received(d, std::nullopt);
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  CHECK_FALSE(r->tree);
  CHECK(received.size() == 0);
  CHECK_FALSE(exists(st.part(d)));
  auto held = st.artifacts->read(d);
  REQUIRE(held.is_ok());
  CHECK(*held == data);
}

TEST_CASE("fetch sink: a small artifact stays in memory and is stored without a file") {
  State st;
  ReceivedInMemory received;
  const std::string data = pattern(3000);
  const Digest d = blake2b(data);
  auto sink = make_fetch_sink(st.part(d), d, &received);
  REQUIRE(sink->write(0, bytes_of(data, 0, 1000)).is_ok());
  REQUIRE(sink->write(1000, bytes_of(data, 1000, 2000)).is_ok());
  std::string back(500, '\0');
  REQUIRE(sink->read(1000, {reinterpret_cast<std::uint8_t*>(back.data()), back.size()}).is_ok());
  CHECK(back == data.substr(1000, 500));
  REQUIRE(sink->finish(data.size()).is_ok());
  CHECK_FALSE(exists(st.part(d)));
  CHECK(received.size() == 1);

  store_and_check(st, received, d, data);
}

TEST_CASE("fetch sink: a larger artifact spills to the incoming file, which the store adopts") {
  State st;
  ReceivedInMemory received;
  const std::string data = pattern(kInMemoryFetchBytes + 5000);
  const Digest d = blake2b(data);
  auto sink = make_fetch_sink(st.part(d), d, &received);
  const std::size_t first = kInMemoryFetchBytes - 100;
  REQUIRE(sink->write(0, bytes_of(data, 0, first)).is_ok());
  CHECK_FALSE(exists(st.part(d)));  // still in memory
  REQUIRE(sink->write(first, bytes_of(data, first, data.size() - first)).is_ok());
  REQUIRE(exists(st.part(d)));
  std::string back(200, '\0');
  REQUIRE(sink->read(first - 100, {reinterpret_cast<std::uint8_t*>(back.data()), back.size()})
              .is_ok());
  CHECK(back == data.substr(first - 100, 200));
  REQUIRE(sink->finish(data.size()).is_ok());
  CHECK(file_text(st.part(d)) == data);
  CHECK(received.size() == 0);

  store_and_check(st, received, d, data);
}

TEST_CASE("fetch sink: an aborted fetch leaves neither bytes nor a file") {
  State st;
  ReceivedInMemory received;
  const std::string data = pattern(kInMemoryFetchBytes * 2);
  const Digest d = blake2b(data);
  auto small = make_fetch_sink(st.part(d), d, &received);
  REQUIRE(small->write(0, bytes_of(data, 0, 10)).is_ok());
  small->abort(Status::unavailable("peer gone"));
  auto large = make_fetch_sink(st.part(d), d, &received);
  REQUIRE(large->write(0, bytes_of(data, 0, data.size())).is_ok());
  REQUIRE(exists(st.part(d)));
  large->abort(Status::unavailable("peer gone"));
  CHECK_FALSE(exists(st.part(d)));
  CHECK(received.size() == 0);
}

TEST_CASE("fetch sink: an empty artifact and a tree arrive in memory") {
  State st;
  ReceivedInMemory received;
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);

  const Digest empty = blake2b(std::string());
  REQUIRE(make_fetch_sink(st.part(empty), empty, &received)->finish(0).is_ok());
  auto r = store_sink.store_received(empty, std::nullopt);
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  CHECK(st.artifacts->has(empty).value());

  // A tree whose one child is not held: the sink names it as missing.
  const std::string child = "a child";
  auto encoded = encode_tree({TreeEntry{"x.txt", EntryKind::kFile, blake2b(child)}});
  REQUIRE(encoded.is_ok());
  const std::string encoding = *encoded;
  const Digest tree = blake2b(encoding);
  auto sink = make_fetch_sink(st.part(tree), tree, &received);
  REQUIRE(sink->write(0, bytes_of(encoding, 0, encoding.size())).is_ok());
  REQUIRE(sink->finish(encoding.size()).is_ok());
  auto t = store_sink.store_received(tree, std::nullopt);
  REQUIRE_MESSAGE(t.is_ok(), t.status().to_string());
  REQUIRE(t->tree);
  REQUIRE(t->missing.size() == 1);
  CHECK(t->missing[0].first == blake2b(child));
}

TEST_CASE("fetch sink: bytes not matching their name are refused") {
  State st;
  ReceivedInMemory received;
  const Digest claimed = blake2b(std::string("what was asked for"));
  received.put(claimed, "something else");
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  auto r = store_sink.store_received(claimed, false);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kCorrupt);
  CHECK(r.status().message().find(claimed.hex()) != std::string::npos);
}

TEST_CASE("fetch sink: transfers stored together: named, not indexed until the rows commit") {
  State st;
  ReceivedInMemory received;
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  std::vector<std::string> data = {pattern(10), pattern(100), pattern(1000)};
  std::vector<std::pair<Digest, std::optional<bool>>> items;
  for (const auto& d : data) {
    received.put(blake2b(d), d);
    items.emplace_back(blake2b(d), std::nullopt);
  }
  // One that does not match its name, in the middle: refused alone.
  const Digest claimed = blake2b(std::string("what was asked for"));
  received.put(claimed, "something else");
  items.insert(items.begin() + 1, {claimed, false});

  std::vector<store::ArtifactRecord> rows;
  auto results = store_sink.store_received_together(items, &rows);
  REQUIRE(results.size() == items.size());
  CHECK(results[0].is_ok());
  REQUIRE_FALSE(results[1].is_ok());
  CHECK(results[1].status().code() == StatusCode::kCorrupt);
  CHECK(results[2].is_ok());
  CHECK(results[3].is_ok());
  CHECK(received.size() == 0);
  for (const auto& d : data) {
    const Digest digest = blake2b(d);
    // In place under its name, but held only once its row is committed (with the
    // agent's next statements).
    CHECK(file_text(store::object_path(store::artifacts_root(st.dir.path()), digest,
                                       store::ArtifactKind::kFile)) == d);
    CHECK_FALSE(st.artifacts->has(digest).value());
    CHECK(std::any_of(rows.begin(), rows.end(),
                      [&](const store::ArtifactRecord& r) { return r.digest == digest; }));
  }
  REQUIRE(st.ledger->index_put(rows).is_ok());
  for (const auto& d : data) {
    auto held = st.artifacts->read(blake2b(d));
    REQUIRE(held.is_ok());
    CHECK(*held == d);
  }
  CHECK_FALSE(st.artifacts->has(claimed).value());
}

TEST_CASE("fetch sink: transfers stored together without rows to hand back are indexed at once") {
  State st;
  ReceivedInMemory received;
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  const std::string a = pattern(20), b = pattern(30);
  received.put(blake2b(a), a);
  received.put(blake2b(b), b);
  auto results =
      store_sink.store_received_together({{blake2b(a), false}, {blake2b(b), std::nullopt}}, nullptr);
  REQUIRE(results.size() == 2);
  CHECK(results[0].is_ok());
  CHECK(results[1].is_ok());
  CHECK(st.artifacts->has(blake2b(a)).value());
  CHECK(st.artifacts->has(blake2b(b)).value());
}

TEST_CASE("fetch sink: received bytes never taken are bounded, the oldest dropped") {
  ReceivedInMemory received;
  for (std::size_t i = 0; i <= kMaxInMemoryReceived; ++i) {
    received.put(blake2b(std::to_string(i)), std::to_string(i));
  }
  CHECK(received.size() == kMaxInMemoryReceived);
  CHECK_FALSE(received.take(blake2b(std::string("0"))));
  auto last = received.take(blake2b(std::to_string(kMaxInMemoryReceived)));
  REQUIRE(last);
  CHECK(*last == std::to_string(kMaxInMemoryReceived));
}

TEST_CASE("attached bytes: checked against their name, placed for a job, then stored with a row") {
  State st;
  ReceivedInMemory received;
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  const std::string data = pattern(300);
  const Digest d = blake2b(data);
  CHECK(store_sink.bytes_match(d, data));
  CHECK_FALSE(store_sink.bytes_match(d, data + "x"));
  const std::string path =
      store::object_path(store::artifacts_root(st.dir.path()), d, store::ArtifactKind::kFile);
  // Placed: whole, in an unnamed file a job's input is linked from, and not named in the
  // store until the start it lets go is made.
  REQUIRE(store_sink.place(d, data).is_ok());
  CHECK(store_sink.unnamed() == 1);
  REQUIRE(store_sink.placed_source(d).fd >= 0);
  CHECK(file_text("/proc/self/fd/" + std::to_string(store_sink.placed_source(d).fd)) == data);
  CHECK_FALSE(exists(path));
  // No fan-out directory made by the store yet: not named there (the worker's store
  // writes it from the bytes held), and nothing left behind.
  store_sink.name_placed();
  CHECK(store_sink.unnamed() == 0);
  CHECK_FALSE(exists(path));
  CHECK(store_sink.placed_source(d).fd < 0);
  CHECK(store_sink.placed_source(d).path == path);
  REQUIRE(st.artifacts->make_fanouts().is_ok());
  REQUIRE(store_sink.place(d, data).is_ok());
  CHECK_FALSE(exists(path));
  store_sink.name_placed();
  CHECK(file_text(path) == data);
  struct stat sb {};
  REQUIRE(::stat(path.c_str(), &sb) == 0);
  CHECK((sb.st_mode & 0777) == 0444);
  CHECK_FALSE(st.artifacts->has(d).value());  // not held: no row yet
  // A job takes it as it is: hashed, linked.
  store::testing::TempDir work;
  REQUIRE(st.artifacts->materialize_placed(d, work.path() + "/in", 4096).is_ok());
  CHECK(file_text(work.path() + "/in") == data);
  // Then the worker's store makes it durable and hands back its row.
  store_sink.hold(d, data);
  std::vector<store::ArtifactRecord> rows;
  auto results = store_sink.store_received_together({{d, false}}, &rows);
  REQUIRE(results.size() == 1);
  CHECK(results[0].is_ok());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].digest == d);
  REQUIRE(st.ledger->index_put(rows).is_ok());
  CHECK(st.artifacts->read(d).value() == data);
  // Placing what is in place already changes nothing (the same file), and leaves
  // nothing behind.
  REQUIRE(::stat(path.c_str(), &sb) == 0);
  const ino_t inode = sb.st_ino;
  CHECK(store_sink.place(d, data).is_ok());
  store_sink.name_placed();
  CHECK(st.artifacts->verify(d).is_ok());
  REQUIRE(::stat(path.c_str(), &sb) == 0);
  CHECK(sb.st_ino == inode);
  CHECK(std::filesystem::is_empty(store::artifacts_root(st.dir.path()) + "/tmp"));
}

// The inodes of this process's open files that have no name (unnamed files in tmp/).
std::set<ino_t> unnamed_open_inodes() {
  std::set<ino_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    struct stat sb {};
    if (::stat(e.path().c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_nlink == 0) {
      out.insert(sb.st_ino);
    }
  }
  return out;
}

TEST_CASE("a placement takes a file made ahead where one is ready") {
  State st;
  ReceivedInMemory received;
  StoreSink store_sink(st.dir.path(), st.artifacts.get(), &received);
  REQUIRE(st.artifacts->make_fanouts().is_ok());
  CHECK(store_sink.spares_ready() == 0);
  store_sink.make_spares();
  REQUIRE(store_sink.spares_ready() == StoreSink::kSpareFiles);
  const std::set<ino_t> ahead = unnamed_open_inodes();
  REQUIRE(ahead.size() >= StoreSink::kSpareFiles);
  const std::string a = pattern(200), b = pattern(900);
  std::set<ino_t> used;
  for (const std::string* data : {&a, &b}) {
    const Digest d = blake2b(*data);
    REQUIRE(store_sink.place(d, *data).is_ok());
    store_sink.name_placed();
    const std::string path =
        store::object_path(store::artifacts_root(st.dir.path()), d, store::ArtifactKind::kFile);
    CHECK(file_text(path) == *data);
    struct stat sb {};
    REQUIRE(::stat(path.c_str(), &sb) == 0);
    CHECK((sb.st_mode & 0777) == 0444);
    CHECK(ahead.count(sb.st_ino) == 1);  // the file made ahead, now named
    used.insert(sb.st_ino);
  }
  CHECK(used.size() == 2);
  CHECK(store_sink.spares_ready() == 0);
  // None ready: a placement makes its own file.
  const std::string c = pattern(77);
  REQUIRE(store_sink.place(blake2b(c), c).is_ok());
  store_sink.name_placed();
  CHECK(file_text(store::object_path(store::artifacts_root(st.dir.path()), blake2b(c),
                                     store::ArtifactKind::kFile)) == c);
  // Made again up to their number, and no more.
  store_sink.make_spares();
  CHECK(store_sink.spares_ready() == StoreSink::kSpareFiles);
  store_sink.make_spares();
  CHECK(store_sink.spares_ready() == StoreSink::kSpareFiles);
  CHECK(unnamed_open_inodes().size() == ahead.size());
  CHECK(std::filesystem::is_empty(store::artifacts_root(st.dir.path()) + "/tmp"));
}

TEST_CASE("a placed object is taken only whole and sound, and only when small") {
  State st;
  REQUIRE(st.artifacts->make_fanouts().is_ok());
  store::testing::TempDir work;
  const std::string data = pattern(100);
  const Digest d = blake2b(data);
  const std::string path =
      store::object_path(store::artifacts_root(st.dir.path()), d, store::ArtifactKind::kFile);
  CHECK(st.artifacts->materialize_placed(d, work.path() + "/a", 4096).code() ==
        StatusCode::kNotFound);
  {
    std::ofstream out(path, std::ios::binary);
    out << data.substr(0, 99) << "X";  // what a crash or a bad write may leave
  }
  CHECK(st.artifacts->materialize_placed(d, work.path() + "/b", 4096).code() ==
        StatusCode::kCorrupt);
  CHECK_FALSE(exists(work.path() + "/b"));
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
  }
  CHECK(st.artifacts->materialize_placed(d, work.path() + "/c", 99).code() ==
        StatusCode::kInvalid);
  REQUIRE(st.artifacts->materialize_placed(d, work.path() + "/d", 100).is_ok());
  CHECK(file_text(work.path() + "/d") == data);
}

// A store with its fan-out directories, a sink that places in it and an executor whose
// jobs take placed inputs; PlacedFile sources as the agent gives them.
struct Placing {
  State st;
  ReceivedInMemory received;
  StoreSink sink{st.dir.path(), st.artifacts.get(), &received};
  LocalExecutor ex{st.dir.path(), st.artifacts.get()};
  Placing() { REQUIRE(st.artifacts->make_fanouts().is_ok()); }
  Executor::PlacedSource source() {
    return [this](const Digest& d) { return sink.placed_source(d); };
  }
  std::string object(const std::string& data) {
    return store::object_path(store::artifacts_root(st.dir.path()), blake2b(data),
                              store::ArtifactKind::kFile);
  }
};

TEST_CASE("a start whose inputs were all placed has them linked, or none of them") {
  Placing pl;
  StoreSink& store_sink = pl.sink;
  LocalExecutor& ex = pl.ex;
  const std::string a = pattern(10), b = pattern(20);
  promises::StartJob start;
  start.job.job = blake2b("job");
  start.epoch = 1;
  start.inputs = {{"a", {blake2b(a), false, a.size(), {}}}, {"b", {blake2b(b), false, b.size(), {}}}};
  REQUIRE(ex.create_work_dir(start).is_ok());
  const std::string in = ex.work_dir(start) + "/in/";
  auto source = pl.source();
  REQUIRE(store_sink.place(blake2b(a), a).is_ok());
  // b is not placed: a, linked first, is taken back, and the worker's way is left whole.
  CHECK_FALSE(ex.link_placed_inputs(start, source).is_ok());
  CHECK_FALSE(exists(in + "a"));
  CHECK_FALSE(exists(in + "b"));
  // a, once linked, is named in the store as it leaves the job's directory (an unnamed
  // file that had a name cannot be linked again once it has none).
  const std::string object_a = pl.object(a);
  CHECK(file_text(object_a) == a);
  REQUIRE(store_sink.place(blake2b(b), b).is_ok());
  REQUIRE(ex.link_placed_inputs(start, source).is_ok());
  CHECK(file_text(in + "a") == a);
  CHECK(file_text(in + "b") == b);
  // b is linked from its unnamed file: the start made no link into the store's fan-out
  // directories, which come after it.
  const std::string object_b = pl.object(b);
  CHECK_FALSE(exists(object_b));
  store_sink.name_placed();
  // Linked, not copied: the job's inputs are the placed objects, read-only.
  for (const auto& [name, object_path] : {std::pair{"a", object_a}, std::pair{"b", object_b}}) {
    struct stat input {}, object {};
    REQUIRE(::stat((in + name).c_str(), &input) == 0);
    REQUIRE(::stat(object_path.c_str(), &object) == 0);
    CHECK(input.st_ino == object.st_ino);
    CHECK(input.st_nlink == 2);
    CHECK((input.st_mode & 0777) == 0444);
  }
  CHECK(store_sink.unnamed() == 0);
  // A tree input, or one too large to have come with its result, is never taken so.
  promises::StartJob tree = start;
  tree.epoch = 2;
  tree.inputs = {{"t", {blake2b(a), true, a.size(), {}}}};
  REQUIRE(ex.create_work_dir(tree).is_ok());
  CHECK(ex.link_placed_inputs(tree, source).code() == StatusCode::kUnavailable);
  CHECK_FALSE(exists(ex.work_dir(tree) + "/in/t"));
}

TEST_CASE("where the kernel refuses a link by descriptor, placed inputs are linked through /proc") {
  // As on Linux before 6.10 without CAP_DAC_READ_SEARCH; the next tests link as before.
  struct Refused {
    Refused() { link_open_file_by_descriptor(false); }
    ~Refused() { link_open_file_by_descriptor(true); }
  } refused;
  Placing pl;
  const std::string a = pattern(40);
  promises::StartJob start;
  start.job.job = blake2b("job-proc");
  start.epoch = 1;
  start.inputs = {{"a", {blake2b(a), false, a.size(), {}}}};
  REQUIRE(pl.ex.create_work_dir(start).is_ok());
  REQUIRE(pl.sink.place(blake2b(a), a).is_ok());
  const int fd = pl.sink.placed_source(blake2b(a)).fd;
  REQUIRE(fd >= 0);
  struct stat placed {};
  REQUIRE(::fstat(fd, &placed) == 0);
  CHECK(placed.st_nlink == 0);
  REQUIRE(pl.ex.link_placed_inputs(start, pl.source()).is_ok());
  pl.sink.name_placed();
  const std::string input = pl.ex.work_dir(start) + "/in/a";
  struct stat in {}, obj {};
  REQUIRE(::stat(input.c_str(), &in) == 0);
  REQUIRE(::stat(pl.object(a).c_str(), &obj) == 0);
  CHECK(in.st_ino == placed.st_ino);
  CHECK(obj.st_ino == placed.st_ino);
  CHECK(file_text(input) == a);
}

}  // namespace
}  // namespace vow::agent
