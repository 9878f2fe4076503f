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

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "promises/digest.h"
#include "promises/statement.h"

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

// Signs statements published together, whose forms hold their bytes, with SIGN (a
// signer of messages: Ed25519, or the simulator's stand-in): one alone over its bytes
// (an empty path), two or more with one signature over their batch's root, each given
// its path; more than kMaxBatchLeaves in batches of that many.
using MessageSigner = std::function<std::array<std::uint8_t, 64>(std::string_view message)>;
void sign_forms_together(const std::vector<SignedForm*>& forms, const MessageSigner& sign);

// What the signature of a statement with these bytes and path is over: the bytes
// themselves (an empty path), or the signing message of the root the path leads to,
// made in STORAGE. nullopt for a malformed path.
std::optional<std::string_view> signed_message(std::string_view bytes, std::string_view path,
                                               std::string& storage);

// Whether a statement with this path carries its own signature or its batch's first
// (index 0): counting these counts signatures made.
bool first_of_batch(std::string_view path);

}  // namespace vow
