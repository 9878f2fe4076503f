#include "promises/tree.h"

#include <doctest/doctest.h>

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

}  // namespace vow
