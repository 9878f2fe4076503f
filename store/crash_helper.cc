// store_crash_helper STATE_DIR SEED [COUNT]: writes statements and artifacts into
// STATE_DIR in a loop until killed (or COUNT rounds are done, then exits 0), reporting each item on
// stdout only after it is committed:
//   S <seq>      own statement <seq> appended (signed by test key 1); for an even <seq>,
//                in one write_together with key 3's statement <seq>/2 (a group commit)
//   B <seq>      a batch of key 2's statements up to <seq> inserted
//   A <hex>      file artifact stored
//   T <hex>      tree artifact (of earlier files, or of a directory imported) stored
// Every fourth round imports a file and a directory of two files in one import_together
// (a group import) and reports each object after the group is stored.
//   g            a GC starts (it may remove any artifact reported so far)
//   R <hex>      the GC removed this artifact
//   G            the GC finished
// The crash test (crash_test.cc) kills it with SIGKILL at random moments and checks that
// everything reported survived and the store is consistent.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <random>
#include <string>

#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace {

void report(const std::string& line) {
  std::string l = line + "\n";
  // One write per line (< PIPE_BUF): a line is in the pipe whole or not at all.
  if (::write(1, l.data(), l.size()) != static_cast<ssize_t>(l.size())) std::_Exit(3);
}

[[noreturn]] void die(const vow::Status& s) {
  std::fprintf(stderr, "store_crash_helper: %s\n", s.to_string().c_str());
  std::_Exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vow;
  using namespace vow::store;
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: store_crash_helper STATE_DIR SEED [COUNT]\n");
    return 2;
  }
  std::string state = argv[1];
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  testing::TestKey me(1), other(2), grouped(3);
  if (Status s = posix_env().make_dir(state, 0755); !s.is_ok()) die(s);
  auto ledger = open_sqlite_ledger(ledger_path(state));
  if (!ledger.is_ok()) die(ledger.status());
  auto store = ArtifactStore::open(artifacts_root(state), **ledger);
  if (!store.is_ok()) die(store.status());
  auto other_vv = (*ledger)->version_vector();
  if (!other_vv.is_ok()) die(other_vv.status());
  std::uint64_t other_seq = other_vv->count(other.public_key) ? other_vv->at(other.public_key) : 0;
  std::vector<Digest> files;
  std::uint64_t rounds = argc == 4 ? std::strtoull(argv[3], nullptr, 10) : UINT64_MAX;
  for (std::uint64_t i = 0; i < rounds; ++i) {
    auto next = (*ledger)->own_next_seq();
    if (!next.is_ok()) die(next.status());
    // The phase follows the persisted own seq, so batches, trees and GCs keep coming
    // even though each run is killed after a few rounds.
    const std::uint64_t round = *next - 1;
    auto st = testing::make_statement(me, *next, "own " + std::to_string(rng()));
    if (*next % 2 == 0) {
      auto peer = testing::make_statement(grouped, *next / 2, "grouped " + std::to_string(rng()));
      Status s = (*ledger)->write_together(
          [&]() -> Status {
            VOW_RETURN_IF_ERROR((*ledger)->append_own(st));
            return (*ledger)->insert(peer);
          },
          nullptr);
      if (!s.is_ok()) die(s);
    } else if (Status s = (*ledger)->append_own(st); !s.is_ok()) {
      die(s);
    }
    report("S " + std::to_string(*next));

    if (round % 4 == 1) {
      // A job's outputs: files written outside the store, imported together.
      std::string src = state + ".src";
      std::error_code ec;
      std::filesystem::remove_all(src, ec);
      std::filesystem::create_directories(src + "/dir", ec);
      if (ec) die(Status::io("create " + src + ": " + ec.message()));
      for (const char* name : {"/file", "/dir/a", "/dir/b"}) {
        std::ofstream out(src + name, std::ios::binary);
        std::string bytes(rng() % 16384, '\0');
        for (auto& c : bytes) c = static_cast<char>(rng());
        out << bytes;
      }
      std::vector<ArtifactRef> refs;
      Status s = (*store)->import_together([&]() -> Status {
        for (const char* name : {"/file", "/dir"}) {
          auto ref = (*store)->import_path(src + name);
          if (!ref.is_ok()) return ref.status();
          refs.push_back(*ref);
        }
        return Status::ok();
      });
      if (!s.is_ok()) die(s);
      report("A " + refs[0].digest.hex());
      for (const auto& e : refs[1].entries) report("A " + e.digest.hex());
      report("T " + refs[1].digest.hex());
    }

    std::string content(rng() % 65536, '\0');
    for (auto& c : content) c = static_cast<char>(rng());
    auto d = (*store)->put_bytes(content);
    if (!d.is_ok()) die(d.status());
    files.push_back(*d);
    report("A " + d->hex());

    if (round % 4 == 3) {
      std::vector<StoredStatement> batch;
      for (int k = 0; k < 5; ++k) {
        batch.push_back(
            testing::make_statement(other, ++other_seq, "other " + std::to_string(rng())));
      }
      if (Status s = (*ledger)->insert_batch(batch); !s.is_ok()) die(s);
      report("B " + std::to_string(other_seq));

      std::vector<TreeEntry> entries;
      for (std::size_t k = 0; k < files.size() && k < 4; ++k) {
        entries.push_back({"f" + std::to_string(k), EntryKind::kFile, files[files.size() - 1 - k]});
      }
      auto t = (*store)->put_tree(entries);
      if (!t.is_ok()) die(t.status());
      report("T " + t->hex());
    }

    if (round % 8 == 7) {
      report("g");
      GcRequest req;
      req.budget_bytes = 256 << 10;
      auto gc = (*store)->gc(req);
      if (!gc.is_ok()) die(gc.status());
      for (const auto& d : gc->removed) report("R " + d.hex());
      report("G");
      files.clear();  // trees are made only from files written since
    }
  }
  return 0;
}
