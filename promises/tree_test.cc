#include "promises/tree.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>

namespace vow {

TEST_CASE("tree digest does not depend on entry order") {
  TreeEntry a{"a", EntryKind::kFile, blake2b("1")};
  TreeEntry b{"b", EntryKind::kTree, blake2b("2")};
  auto d1 = tree_digest({a, b});
  auto d2 = tree_digest({b, a});
  REQUIRE(d1.is_ok());
  REQUIRE(d2.is_ok());
  CHECK(*d1 == *d2);
}

TEST_CASE("tree digest changes with name, kind, executable bit and child") {
  TreeEntry a{"a", EntryKind::kFile, blake2b("1")};
  auto base = *tree_digest({a});
  TreeEntry renamed = a;
  renamed.name = "b";
  CHECK(*tree_digest({renamed}) != base);
  TreeEntry exec = a;
  exec.kind = EntryKind::kExecutable;
  CHECK(*tree_digest({exec}) != base);
  TreeEntry other = a;
  other.digest = blake2b("2");
  CHECK(*tree_digest({other}) != base);
}

TEST_CASE("tree encoding round-trips and rejects bad input") {
  std::vector<TreeEntry> es{{"z", EntryKind::kFile, blake2b("1")},
                            {"m", EntryKind::kTree, blake2b("2")}};
  auto enc = encode_tree(es);
  REQUIRE(enc.is_ok());
  auto dec = decode_tree(*enc);
  REQUIRE(dec.is_ok());
  REQUIRE(dec->size() == 2);
  CHECK((*dec)[0].name == "m");
  CHECK((*dec)[1].name == "z");

  CHECK(decode_tree(enc->substr(0, enc->size() - 1)).status().code() == StatusCode::kCorrupt);
  CHECK(decode_tree("garbage").status().code() == StatusCode::kCorrupt);
  CHECK(encode_tree({{"a/b", EntryKind::kFile, {}}}).status().code() == StatusCode::kInvalid);
  CHECK(encode_tree({{"..", EntryKind::kFile, {}}}).status().code() == StatusCode::kInvalid);
  CHECK(encode_tree({{"a", EntryKind::kFile, {}}, {"a", EntryKind::kTree, {}}}).status().code() ==
        StatusCode::kInvalid);
}

// A tree whose every level names one subtree twice: `levels` levels over one file of
// `file_bytes` bytes, as a reader that counts how often it is asked for a tree.
struct Bomb {
  std::map<Digest, std::vector<TreeEntry>> trees;
  Digest file = blake2b("leaf");
  Digest root;
  int reads = 0;
  Bomb(int levels) {
    Digest below = file;
    EntryKind kind = EntryKind::kFile;
    for (int i = 0; i < levels; ++i) {
      std::vector<TreeEntry> e = {{"a", kind, below}, {"b", kind, below}};
      below = *tree_digest(e);
      trees[below] = e;
      kind = EntryKind::kTree;
    }
    root = below;
  }
  TreeReader reader() {
    return {[this](const Digest& d) -> Result<std::vector<TreeEntry>> {
              ++reads;
              auto it = trees.find(d);
              if (it == trees.end()) return Status::not_found("no tree " + d.hex());
              return it->second;
            },
            [](const Digest&) -> Result<std::uint64_t> { return 1000; }};
  }
};

TEST_CASE("a tree's expansion counts every entry at every depth, one read per subtree") {
  Bomb b(23);  // a few KB of encodings: 2^24 - 2 entries, 2^23 files
  std::map<Digest, TreeExpansion> memo;
  auto x = expand_tree(b.root, b.reader(), &memo);
  REQUIRE(x.is_ok());
  CHECK(x->entries == (std::uint64_t{1} << 24) - 2);
  CHECK(x->bytes == (std::uint64_t{1} << 23) * 1000);
  CHECK(b.reads == 23);  // memoized: not 2^23 reads
  Status s = check_expansion(b.root, *x);
  CHECK(s.code() == StatusCode::kInvalid);
  CHECK(s.message().find("16777214 entries, over the limit of 1000000") != std::string::npos);
  // A second look costs nothing.
  CHECK(expand_tree(b.root, b.reader(), &memo).is_ok());
  CHECK(b.reads == 23);

  Bomb small(3);  // 14 entries, 8 files
  std::map<Digest, TreeExpansion> m2;
  auto y = expand_tree(small.root, small.reader(), &m2);
  REQUIRE(y.is_ok());
  CHECK(*y == TreeExpansion{14, 8000});
  CHECK(check_expansion(small.root, *y).is_ok());
}

TEST_CASE("a tree's expansion saturates instead of wrapping, and stops at the depth limit") {
  Bomb deep(70);  // 2^71 entries: more than 64 bits hold
  std::map<Digest, TreeExpansion> memo;
  auto x = expand_tree(deep.root, deep.reader(), &memo);
  REQUIRE(x.is_ok());
  CHECK(x->entries == UINT64_MAX);
  CHECK(!check_expansion(deep.root, *x).is_ok());
  Bomb deeper(kMaxExpansionDepth + 2);
  std::map<Digest, TreeExpansion> m2;
  auto y = expand_tree(deeper.root, deeper.reader(), &m2);
  CHECK(y.status().code() == StatusCode::kInvalid);
}

}  // namespace vow
