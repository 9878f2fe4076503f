// ImportCache: what each file under a source was at its last snapshot, so the next
// snapshot reads only what changed (ArtifactStore::import_path with a cache;
// docs/storage.md, "Incremental import").
//
// For every regular file the cache remembers its stamp (device, inode, size, mtime, ctime
// and mode, as lstat gives them) and the digest its bytes had. A file whose stamp is the
// same at the next snapshot is taken from the cache without being opened, provided its
// object is still held; anything else (a new file, a changed stamp, an object gone from
// the store) is read, hashed and stored as a plain import would.
//
// For every directory the cache remembers its own stamp, its tree (digest, entries, size)
// and how many files it holds, but only when everything under it is remembered too: a
// directory holding a racy file (or one holding such a directory) is not remembered.
// With the directories that may have changed named (ChangedDirs, from inotify), a snapshot
// takes a remembered directory that is neither named nor above a named one, and whose
// stamp is unchanged, from the cache as a whole, without looking at anything inside it.
//
// Racy entries: a file written again within the resolution of its file system's
// timestamps can keep its stamp while its bytes change (git's "racy clean" problem). So a
// file whose mtime or ctime is not older than the snapshot's start by more than
// kRacyWindowNs is not remembered: the next snapshot reads it again. The window (rather
// than "strictly older than the start") also covers file systems that keep times to the
// second or two (ext3, FAT, many network file systems) and the kernel's coarse clock,
// which can lag the wall clock by a scheduler tick.
//
// Persistence: save() writes the cache to a file (temporary, then rename) ending in a
// BLAKE2b checksum of its contents; load() of a missing, damaged or foreign file gives
// an empty cache (and says why), so the next snapshot is a full import. The file is not
// fsynced: an entry only ever claims "a file with this stamp had these bytes", so a stale
// file after a crash costs reads, never a wrong snapshot, and a torn one fails its
// checksum.
//
// Thread-safety: none; one thread at a time (the thread that owns the ArtifactStore).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "promises/digest.h"
#include "promises/status.h"
#include "promises/tree.h"
#include "store/env.h"
#include "store/ledger.h"

namespace vow::store {

// A file modified this close to (or after) a snapshot's start is read again next time.
inline constexpr std::int64_t kRacyWindowNs = 3'000'000'000;

struct FileStamp {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint32_t mode = 0;  // permission bits (the owner's x bit makes an 'x' entry)
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const FileInfo& info);

struct CachedFile {
  FileStamp stamp;
  Digest digest;
  bool operator==(const CachedFile&) const = default;
};

// A directory as it was when last snapshotted, with everything under it remembered.
struct CachedDir {
  FileStamp stamp;  // of the directory itself: a directory replaced is walked again
  Digest tree;
  std::uint64_t size_bytes = 0;    // of every file under it
  std::uint64_t files = 0;         // regular files under it
  std::vector<TreeEntry> entries;  // its tree's entries, sorted by name
  bool operator==(const CachedDir&) const = default;
};

// Directories, by path relative to the source ("" for the source itself), in which an
// entry may have been added, removed, replaced or changed since the cache's last snapshot
// (an inotify event in them, or one naming them as created or moved in). A directory
// added to the source, and every directory under it, must be named: the cache can vouch
// for none of them. Directories that do not exist (any more) may be named.
using ChangedDirs = std::set<std::string>;

class ImportCache {
 public:
  // An empty cache for the source at SOURCE (the path given to import_path).
  explicit ImportCache(std::string source);

  // Reads FILE. A missing file gives an empty cache; so does a damaged one, a file of
  // another format, or one written for another source path, and then *dropped says why
  // (it is left empty otherwise). Errors only when FILE exists and cannot be read.
  static Result<ImportCache> load(Env& env, const std::string& file, const std::string& source,
                                  std::string* dropped);
  // Writes the cache to FILE (its directory must exist) and marks it clean.
  Status save(Env& env, const std::string& file);

  const std::string& source() const { return source_; }
  std::size_t size() const { return files_.size(); }
  std::size_t dir_count() const { return dirs_.size(); }
  // The entry for PATH relative to the source ("" when the source is a single file).
  const CachedFile* find(const std::string& relative) const;
  // The directory at PATH relative to the source ("" for the source itself), if remembered.
  const CachedDir* find_dir(const std::string& relative) const;
  // Whether the last import changed what is remembered (so it should be saved).
  bool dirty() const { return dirty_; }

  // The wall clock (nanoseconds since the epoch) read at the start of each import; tests
  // move it to stand for a snapshot taken later.
  std::function<std::int64_t()> clock;

 private:
  friend class ArtifactStore;

  std::string source_;
  std::unordered_map<std::string, CachedFile> files_;
  std::unordered_map<std::string, CachedDir> dirs_;
  bool dirty_ = false;
  // Digests known to be held by the store instance store_id_ while it had made
  // removals_ removals (not saved): saves an index lookup per unchanged file. The
  // directories remembered are reused only while the store is that instance and has
  // removed nothing since: every object under them is then still held.
  std::uint64_t store_id_ = 0;
  std::uint64_t removals_ = 0;
  std::unordered_map<Digest, ArtifactKind> held_;
  // The store instance and its removals when dirs_ was last made or checked whole by a
  // snapshot (0: never, as after load).
  std::uint64_t dirs_store_id_ = 0;
  std::uint64_t dirs_removals_ = 0;
};

}  // namespace vow::store
