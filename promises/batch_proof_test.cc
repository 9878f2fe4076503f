#include "promises/batch_proof.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace vow {
namespace {

// The tree's root by RFC 9162's definition, written the plain recursive way.
Digest reference_root(const std::vector<Digest>& leaves, std::size_t lo, std::size_t hi) {
  if (hi - lo == 1) return leaves[lo];
  std::size_t k = 1;
  while (k * 2 < hi - lo) k *= 2;
  Hasher h;
  h.update_field("vow-batch-node-v1");
  h.update(reference_root(leaves, lo, lo + k).bytes);
  h.update(reference_root(leaves, lo + k, hi).bytes);
  return h.finish();
}

std::vector<std::string> statements(std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back("statement " + std::to_string(i));
  return out;
}

}  // namespace

TEST_CASE("every statement of a batch leads to the batch's root, and only it") {
  for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 13u, 16u, 17u, 33u, 100u}) {
    CAPTURE(n);
    const auto bytes = statements(n);
    std::vector<Digest> leaves;
    for (const auto& b : bytes) leaves.push_back(batch_leaf(b));
    const BatchTree t = batch_tree(leaves);
    REQUIRE(t.paths.size() == n);
    CHECK(t.root == reference_root(leaves, 0, n));
    if (n == 1) {
      CHECK(t.paths[0].empty());  // alone: signed over its bytes, no path
      CHECK(t.root == leaves[0]);
      continue;
    }
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      auto root = batch_root(bytes[i], t.paths[i]);
      REQUIRE(root.has_value());
      CHECK(*root == t.root);
      // Other bytes on the same path: another root.
      auto other = batch_root(bytes[i] + "!", t.paths[i]);
      REQUIRE(other.has_value());
      CHECK(*other != t.root);
      // The statement's path under another's index: another root (or none).
      const std::string& elsewhere = t.paths[(i + 1) % n];
      auto moved = batch_root(bytes[i], elsewhere);
      CHECK((!moved || *moved != t.root));
      // One sibling less or one more: malformed.
      CHECK_FALSE(batch_root(bytes[i], t.paths[i].substr(0, t.paths[i].size() - 32)).has_value());
      CHECK_FALSE(batch_root(bytes[i], t.paths[i] + std::string(32, 'x')).has_value());
    }
  }
}

TEST_CASE("a malformed batch path names no root") {
  const std::string leaf = "statement";
  auto path = [](std::uint32_t index, std::uint32_t count, std::size_t siblings) {
    std::string p;
    for (int i = 0; i < 4; ++i) p.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
    for (int i = 0; i < 4; ++i) p.push_back(static_cast<char>((count >> (8 * i)) & 0xff));
    p.append(siblings * 32, 'a');
    return p;
  };
  CHECK(batch_root(leaf, path(0, 2, 1)).has_value());
  CHECK(batch_root(leaf, path(4, 5, 1)).has_value());  // the last of five: one hop
  CHECK_FALSE(batch_root(leaf, path(3, 5, 1)).has_value());  // the fourth: three
  CHECK(batch_root(leaf, path(0, 5, 3)).has_value());
  CHECK_FALSE(batch_root(leaf, "").has_value());
  CHECK_FALSE(batch_root(leaf, path(0, 1, 0)).has_value());   // a batch of one
  CHECK_FALSE(batch_root(leaf, path(2, 2, 1)).has_value());   // index past the count
  CHECK_FALSE(batch_root(leaf, path(0, kMaxBatchLeaves + 1, 17)).has_value());
  CHECK_FALSE(batch_root(leaf, path(0, 2, 1) + "x").has_value());  // not whole digests
  CHECK_FALSE(batch_root(leaf, path(0, 2, 1).substr(0, 7)).has_value());
}

TEST_CASE("a batch's signing message is no statement's bytes") {
  Digest root;
  root.bytes.fill(7);
  const std::string m = batch_signing_message(root);
  CHECK(m.size() == 23 + 32);
  CHECK(m.substr(0, 23) == "vow statement batch v1\n");
  CHECK(m.substr(23) == std::string(32, '\7'));
}

}  // namespace vow
