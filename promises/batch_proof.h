// Statements signed together (docs/protocol.md, "Statements signed together"): an author
// that publishes several statements at once signs them with one Ed25519 signature over
// the root of a Merkle tree whose leaves are the statements' signed bytes. Each statement
// keeps its own proof: its place in the tree (`path`), which with its bytes gives the
// root again, so a statement is checked, stored and relayed alone as before; the
// signature is the batch's, shared by all of them.
//
// The tree is RFC 9162's (Certificate Transparency 2.0, section 2.1): a tree of n leaves
// splits at the largest power of two below n; a leaf is hashed apart from an inner node
// (BLAKE2b-256, tagged). A path is encoded as
//   u32 index, u32 count (little-endian), then the sibling digests, 32 bytes each, from
//   the leaf up;
// count is at least 2 (a statement published alone is signed over its bytes directly,
// with an empty path) and at most kMaxBatchLeaves.
//
// Pure functions over values; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "promises/digest.h"

namespace vow {

inline constexpr std::uint32_t kMaxBatchLeaves = 1u << 16;

// The leaf of a statement's signed bytes.
Digest batch_leaf(std::string_view bytes);

// The root of the tree over `leaves` (at least one), and each leaf's path in it.
struct BatchTree {
  Digest root;
  std::vector<std::string> paths;  // one per leaf, in order
};
BatchTree batch_tree(const std::vector<Digest>& leaves);

// The root `bytes` lead to along `path`; nullopt if the path is malformed (too short or
// too long for its index and count, an index not below the count, a count below 2 or
// over kMaxBatchLeaves).
std::optional<Digest> batch_root(std::string_view bytes, std::string_view path);

// What the author signs for a batch with this root: a tagged message no statement's
// encoding can equal (an encoding starts with its Cap'n Proto segment table).
std::string batch_signing_message(const Digest& root);

}  // namespace vow
