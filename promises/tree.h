// Artifact identity: files and directory trees as a Merkle DAG of BLAKE2b-256 digests.
//
// A file's digest is BLAKE2b-256 of its bytes. A directory (a "tree") is encoded
// canonically and its digest is BLAKE2b-256 of that encoding:
//
//   "vow-tree-v1\n"
//   for each entry, sorted by name (bytewise):
//     kind   1 byte: 'f' regular file, 'x' executable file, 'd' directory
//     name   u64 little-endian length, then the bytes (no '/', not "." or "..", not empty)
//     digest 32 bytes: the child's digest
//
// Symbolic links, devices and other kinds have no encoding: importing them is an
// error. The store keeps the tree encoding itself as an object, so a tree is
// materialized from its encoding plus its children, and a fan-in output (a directory
// of shard outputs) is made without copying any data: see docs/identity.md.
//
// Pure value code; thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "promises/digest.h"
#include "promises/status.h"

namespace vow {

enum class EntryKind : std::uint8_t { kFile = 'f', kExecutable = 'x', kTree = 'd' };

struct TreeEntry {
  std::string name;
  EntryKind kind = EntryKind::kFile;
  Digest digest;
  auto operator<=>(const TreeEntry&) const = default;
};

// Limits on what a tree may hold (a tree encoding is also sent in statements).
inline constexpr std::size_t kMaxTreeEntries = 1'000'000;
inline constexpr std::size_t kMaxEntryNameBytes = 255;

// Checks a single entry name: non-empty, at most kMaxEntryNameBytes, no '/' or NUL,
// not "." or "..".
Status validate_entry_name(std::string_view name);

// Sorts the entries and encodes them. Fails (kInvalid) on a bad or duplicate name.
Result<std::string> encode_tree(std::vector<TreeEntry> entries);
// Parses an encoding made by encode_tree; kCorrupt on anything else (unsorted,
// duplicate names, bad kind, truncated).
Result<std::vector<TreeEntry>> decode_tree(std::string_view encoding);
// Digest of a tree with these entries (sorted here).
Result<Digest> tree_digest(std::vector<TreeEntry> entries);

// What a tree becomes when materialized: every entry at every depth (a subtree named
// twice counts twice) and the bytes of its files. A peer can send a tree of a few KB
// whose levels each name one subtree twice: 23 levels are 8 million files. So the
// expansion is computed before a tree is stored from a fetch, materialized or copied
// out, and checked against these limits.
struct TreeExpansion {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
  bool operator==(const TreeExpansion&) const = default;
};
inline constexpr std::uint64_t kMaxExpandedEntries = 1'000'000;
inline constexpr std::uint64_t kMaxExpandedBytes = std::uint64_t{1} << 40;  // 1 TiB
inline constexpr int kMaxExpansionDepth = 256;  // as deep as import and materialize go

// Reads what expand_tree needs: a subtree's entries, a file's size.
struct TreeReader {
  std::function<Result<std::vector<TreeEntry>>(const Digest&)> entries;
  std::function<Result<std::uint64_t>(const Digest&)> file_bytes;
};

// The expansion of tree `root`, memoized per subtree in `memo` (which the caller may keep
// across calls: trees are immutable), so a tree costs one visit per distinct subtree
// however often each is named. Sums saturate instead of wrapping. kInvalid past
// kMaxExpansionDepth; a reader's error as it is.
Result<TreeExpansion> expand_tree(const Digest& root, const TreeReader& reader,
                                  std::map<Digest, TreeExpansion>* memo);
// kInvalid naming the tree, its expansion and the limit it passes, if it passes one.
Status check_expansion(const Digest& root, const TreeExpansion& expansion);

// How an artifact is referenced in statements: its digest and kind, with a tree's
// top-level entries so that any agent can plan fan-out jobs (one per entry) from the
// ledger alone, without holding the artifact.
struct ArtifactRef {
  Digest digest;
  bool is_tree = false;
  std::uint64_t size_bytes = 0;    // file: length; tree: sum of file lengths
  std::vector<TreeEntry> entries;  // trees only, sorted by name
  bool operator==(const ArtifactRef&) const = default;
};

}  // namespace vow
