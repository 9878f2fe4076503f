// ArtifactStore: the content-addressed artifacts an agent holds (docs/coordination.md), in
// STATE_DIR/artifacts/, indexed in the LedgerStore's artifacts table.
//
// Objects are named by their BLAKE2b-256 digest (promises/digest.h). A file object holds
// the file's bytes; a tree object holds the canonical tree encoding (promises/tree.h) and
// its children are objects of their own, so trees share children and a fan-in tree is
// made from existing children without copying (put_tree). Layout, write protocol and GC
// rules: docs/storage.md.
//
//   artifacts/objects/ab/<64 hex>        file object (mode 0444)
//   artifacts/objects/ab/<64 hex>.tree   tree object (mode 0444)
//   artifacts/tmp/                       objects being written (emptied on open)
//
// Writes: hash while writing to tmp/, fsync, rename into objects/, fsync the directory,
// then add the index row. import_together() does the same for many objects with one
// pass of each step (all files synced, all renamed, all directories synced, one index
// commit). A crash leaves at worst a temporary (removed on open) or an object without
// an index row (verified and indexed on open), never a visible object with wrong
// content. Reads verify: read()/read_tree() check the digest before returning
// anything; ArtifactReader::read_next() checks it when the end is reached; a mismatch is
// kCorrupt naming the digest.
//
// Ownership: the store borrows the LedgerStore (its index) and the Env; both must outlive it.
// Thread-safety: none; one thread owns the store (it writes the index through the
// LedgerStore, which has one owner). An ArtifactReader holds its own descriptor and touches
// no shared state, so a reader may be handed to another thread (one thread at a time).
#pragma once

#include <unistd.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "promises/digest.h"
#include "promises/status.h"
#include "promises/tree.h"
#include "store/env.h"
#include "store/import_cache.h"
#include "store/ledger.h"

namespace vow::store {

// Bytes per read/write while copying or hashing.
inline constexpr std::size_t kCopyChunkBytes = 1 << 20;
// Use ticks held in memory before they are written to the index.
inline constexpr std::size_t kMaxPendingTouches = 1024;
// Deepest directory nesting import and materialize follow.
inline constexpr int kMaxTreeDepth = 256;
// Expansions of trees remembered (promises/tree.h): trees never change, so this only
// bounds memory; past it the memo starts again.
inline constexpr std::size_t kMaxExpansionMemo = 100'000;
// File objects remembered as just hashed (materialize links them without reading them
// again while their stamp is unchanged): about 100 bytes each.
inline constexpr std::size_t kMaxRecentlyVerified = 4096;
// Index rows an ArtifactStore keeps in memory (ArtifactStore::lookup).
inline constexpr std::size_t kMaxIndexedRows = 4096;
// A group import reads an object held to know it sound (rather than write it again)
// up to this size: reading and hashing it costs less than the two syncs of a new copy.
inline constexpr std::uint64_t kReadHeldBelow = 256u << 10;
// import_together: past this many files (or directories) to sync, one syncfs of the
// store's file system replaces their fsyncs.
inline constexpr std::size_t kSyncfsAbove = 8;
// import_together: objects written are stored (synced, renamed, their directories
// synced) in rounds of at most this many, so a large group (a source's first snapshot)
// keeps what it has stored if it is cut short, and holds a bounded list meanwhile.
inline constexpr std::size_t kMaxGroupObjects = 4096;

// A buffer to copy or hash a file of about SIZE bytes through: no larger than the file
// needs (at least a page), at most kCopyChunkBytes. A job's small output is not read
// through a zeroed megabyte, which costs more than the file (the allocation is mapped,
// faulted in page by page, and unmapped again for every file).
std::vector<std::uint8_t> chunk_buffer(std::uint64_t size);

// STATE_DIR/vow.db and STATE_DIR/artifacts.
std::string ledger_path(const std::string& state_dir);
std::string artifacts_root(const std::string& state_dir);
// ROOT/objects/ab/<hex>, plus ".tree" for a tree.
std::string object_path(const std::string& root, const Digest& digest, ArtifactKind kind);

// Reads an object in chunks. Positional reads (read_at, for a streaming layer that
// serves offsets) return bytes unverified: pair them with verify_whole() or let the
// receiver check the digest. Sequential reads (read_next) verify at the end.
class ArtifactReader {
 public:
  ArtifactReader(std::unique_ptr<ReadableFile> file, Digest digest, std::uint64_t size_bytes);
  ArtifactReader(const ArtifactReader&) = delete;
  ArtifactReader& operator=(const ArtifactReader&) = delete;

  const Digest& digest() const { return digest_; }
  std::uint64_t size() const { return size_; }
  // Up to out.size() bytes at offset; 0 at or past the end. Unverified.
  Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> out);
  // The next bytes in order. When the end is reached the whole content has been hashed:
  // returns 0 if it matches the digest, kCorrupt if not (or if the size changed).
  Result<std::size_t> read_next(std::span<std::uint8_t> out);
  // Hashes the whole object (independent of read_next's position); kCorrupt on mismatch.
  Status verify_whole();

 private:
  std::unique_ptr<ReadableFile> file_;
  Digest digest_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  Hasher hasher_;
  bool done_ = false;
};

// Receives an object in pieces (a transfer from a peer), hashing as it writes, into a
// temporary in tmp/. commit() makes it visible; destroying an uncommitted writer removes
// the temporary. A writer outlives a failed transfer, so the agent can resume it from
// size() with another holder (transport's ChunkSink maps onto write_at/read_at/commit).
// Not thread-safe; must not outlive its ArtifactStore.
class ArtifactWriter {
 public:
  virtual ~ArtifactWriter() = default;
  virtual Status append(std::span<const std::uint8_t> data) = 0;
  // append() at an explicit offset, which must be size() (kInvalid otherwise).
  Status write_at(std::uint64_t offset, std::span<const std::uint8_t> data) {
    if (offset != size()) {
      return Status::invalid("artifact writer: write at " + std::to_string(offset) + ", but " +
                             std::to_string(size()) + " bytes are written");
    }
    return append(data);
  }
  // Reads back bytes already written: [offset, offset + out.size()) within size().
  virtual Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
  virtual std::uint64_t size() const = 0;
  // Syncs, checks the digest against `expected` (if given: kCorrupt on mismatch, and
  // nothing is stored), and moves the object into place. After a kCorrupt the writer is
  // spent (destroy it); after another error commit may be retried.
  virtual Result<Digest> commit(std::optional<Digest> expected) = 0;
};

struct WriterOptions {
  // false: do not hash; the caller has verified the bytes itself (transport's stream
  // checks the digest of every fetch) and commit() must be given the digest, which it
  // trusts. Saves a second hash pass on the hand-off path.
  bool hash = true;
};

struct GcRequest {
  // Keep at most this many bytes of objects (as far as protection allows); 0 removes
  // every unprotected object.
  std::uint64_t budget_bytes = 0;
  // Needed by jobs running here (inputs, checkpoints): never removed.
  std::vector<Digest> running_inputs;
  // Outputs of canonical results held here: removed only if held_elsewhere says so.
  std::vector<Digest> canonical_outputs;
  // True if another holder of this artifact is known (replication). Empty: none known.
  std::function<bool(const Digest&)> held_elsewhere;
  // Report what would be removed (`removed`, `removed_bytes`, `kept_bytes` as if it had
  // been), remove nothing.
  bool dry_run = false;
};

struct GcReport {
  std::vector<Digest> removed;
  std::uint64_t removed_bytes = 0;
  std::uint64_t kept_bytes = 0;
};

// What an import with a cache did (import_path(path, cache, stats)).
struct ImportStats {
  std::uint64_t files = 0;            // regular files under the path
  std::uint64_t files_read = 0;       // read, hashed and stored: new, changed or racy
  std::uint64_t bytes_read = 0;       // their bytes
  std::uint64_t files_reused = 0;     // unchanged since the cached snapshot: not opened
  std::uint64_t objects_missing = 0;  // unchanged, but the object was gone: read again
  std::uint64_t trees_written = 0;    // tree objects stored
  std::uint64_t trees_reused = 0;     // tree objects already held: not written again
  std::uint64_t dirs_walked = 0;      // directories listed, each entry stat'ed
  std::uint64_t dirs_reused = 0;      // taken whole from the cache: nothing under them looked at
};

struct MaterializeOptions {
  // Hash each object while materializing (kCorrupt instead of handing a job bad input).
  bool verify = true;
};

class ArtifactStore {
 public:
  // ROOT is STATE_DIR/artifacts (created if absent). Removes leftover temporaries and
  // indexes objects a crash left without an index row (after verifying them).
  static Result<std::unique_ptr<ArtifactStore>> open(std::string root, LedgerStore& index,
                                                     Env& env = posix_env());
  // Flushes pending use ticks (errors ignored: they only order GC).
  ~ArtifactStore();
  ArtifactStore(const ArtifactStore&) = delete;
  ArtifactStore& operator=(const ArtifactStore&) = delete;

  // Imports a file or a directory (recursively), hashing while copying, in one pass.
  // Symbolic links, devices, sockets and FIFOs are refused (kInvalid naming the path).
  // An executable file (owner x bit) is an 'x' entry inside a tree.
  Result<ArtifactRef> import_path(const std::string& path);
  // The same import (same refusals and errors, same digests), reading only what changed
  // since CACHE's last snapshot of PATH (store/import_cache.h, docs/storage.md): a file
  // whose stamp is unchanged and whose object is held is not opened, and a tree object
  // already held is not written again. On success CACHE remembers this snapshot (dirty()
  // says whether that changed it); on failure CACHE is left as it was. kInvalid if CACHE
  // was made for another path.
  // With CHANGED (the directories that may have changed since CACHE's last snapshot,
  // store/import_cache.h), a directory that is neither named nor above a named one, and
  // that the cache remembers whole with its stamp unchanged, is taken from the cache
  // without being looked into: the snapshot costs what the named directories and those
  // above them hold. The result is the full walk's, provided CHANGED names every
  // directory that changed; the full walk is made instead when the cache cannot vouch
  // for its directories (none remembered, or made by another store instance, or the
  // store has removed objects since), and when the partial walk fails.
  Result<ArtifactRef> import_path(const std::string& path, ImportCache& cache,
                                  ImportStats* stats = nullptr,
                                  const ChangedDirs* changed = nullptr);
  // Runs FN, whose imports (import_path) then reach the disk together, as a finished
  // job's outputs and logs do: each object is written to tmp/ without a sync; after FN,
  // one pass syncs them all, they are renamed into place, one pass syncs the directories
  // that gained names, and one commit indexes them. An import inside FN returns its
  // reference before the object is stored: nothing may name it (a persisted statement)
  // until this returns ok. On an error nothing of FN's is indexed (objects already
  // renamed into place are verified and indexed by the next open). With ROWS, the index
  // rows are added there instead of committed: the caller commits them
  // (LedgerStore::index_put) with, or before, the first statement naming the objects;
  // until then the objects are on disk but not held (has() is false), and a crash
  // leaves them to the next open.
  Status import_together(const std::function<Status()>& fn,
                         std::vector<ArtifactRecord>* rows = nullptr);
  // After an import_path with an ImportCache inside import_together: STORED says whether
  // the group was stored. If it was, every object under the cache's directories is held
  // and they may be taken whole by the next import (as after an import outside a
  // group); if not, the digests the import took for held are forgotten.
  void settle_group_import(ImportCache& cache, bool stored);
  // Makes every import running or started from now on (import_path, on any thread)
  // stop at its next file or chunk with kUnavailable ("import stopped"), leaving the
  // store as a failed import does. For an agent that is stopping: its worker need not
  // finish walking a large source directory first. Thread-safe.
  void stop_imports() { imports_stopped_.store(true, std::memory_order_relaxed); }
  // Moves a regular file into the store instead of copying it: hashed where it is,
  // synced, renamed into place. The file must be on the store's file system and the
  // caller gives it up (on success it is gone; on failure it may remain). For a file the
  // agent wrote itself, such as a fetched artifact: an import would write every byte
  // again and sync the copy (BENCHMARKS.md, artifact hand-off). With VERIFIED, the
  // digest its bytes were checked against as they were written (a fetch's stream checks
  // every byte it receives), the file is not read again: one hash pass less per byte.
  // An object adopted so is verified when it is first used (materialize) as any is.
  Result<ArtifactRef> adopt_file(const std::string& path,
                                 std::optional<Digest> verified = std::nullopt);
  // Imports a regular file as import_path does (inside import_together too), but by a
  // hard link into tmp/ rather than a copy: no byte written, no inode allocated. The
  // file stays where it is, and becomes the object (made read-only): only for a file
  // nothing writes to any more, such as the output of a sandboxed job all of whose
  // processes are gone. A copy where the file system cannot link (another one).
  Result<ArtifactRef> take_file(const std::string& path);
  // Whether the regular file at PATH is, by inode, the store's object of its own content
  // (take_file linked it in; indexed or not yet). Hashes it. False for anything else.
  Result<bool> is_object(const std::string& path);
  Result<Digest> put_bytes(std::string_view data);
  // Bytes the agent may have placed already (agent/effects.h, ArtifactSink::place: a
  // read-only file at their object's name, neither synced nor indexed): where the file
  // there holds exactly these bytes, it becomes the object as it is (synced, its name
  // synced, indexed, inside import_together too), and nothing is written again; else
  // they are stored as put_bytes stores them.
  Result<Digest> put_placed(std::string_view data);
  // A tree from existing children (kNotFound naming the first missing child; kInvalid
  // for bad names or an entry whose kind does not match the stored child).
  Result<Digest> put_tree(std::vector<TreeEntry> entries);
  // Starts receiving a file or tree object in pieces.
  Result<std::unique_ptr<ArtifactWriter>> new_writer(ArtifactKind kind,
                                                     const WriterOptions& options = {});

  // The whole object, verified (kNotFound if not held, kCorrupt naming the digest).
  Result<std::string> read(const Digest& digest);
  Result<std::vector<TreeEntry>> read_tree(const Digest& digest);
  Result<std::unique_ptr<ArtifactReader>> open_reader(const Digest& digest);
  // Hashes the object (and, for a tree, checks its children are held).
  Status verify(const Digest& digest);
  // The reference statements carry: kind, size (tree: sum of file sizes), entries.
  Result<ArtifactRef> ref(const Digest& digest);

  // Makes every fan-out directory of objects/ that is missing, then syncs objects/ once:
  // an agent does this at start, so that the objects it places ahead of storing them
  // (agent/effects.h, ArtifactSink::place) always find their directory made and synced.
  Status make_fanouts();

  // Creates DEST (which must not exist) read-only: files 0444, executables 0555,
  // directories 0555 (hard links to the objects where possible, copies otherwise).
  Status materialize(const Digest& digest, const std::string& dest,
                     const MaterializeOptions& options = {});
  // A small file object in place whose index row is not committed yet (put there by
  // the agent ahead of storing it: agent/effects.h, ArtifactSink::place), as materialize
  // makes a held one: hashed (kCorrupt unless it is DIGEST's), then linked read-only to
  // DEST, or copied. kNotFound if there is no such file, kInvalid past MAX_BYTES.
  Status materialize_placed(const Digest& digest, const std::string& dest,
                            std::uint64_t max_bytes);
  // Such a placed object stored now, as put_bytes stores bytes (synced, indexed): for a
  // tree made of it (a fan-in input) before the agent's own store gets to it. Errors as
  // materialize_placed's.
  Status store_placed(const Digest& digest, std::uint64_t max_bytes);
  // The bytes of a file object in place, indexed or not (a placed one, or one just
  // imported whose row is not committed yet), checked against DIGEST: kNotFound if there
  // is none, kInvalid past MAX_BYTES, kCorrupt if they are not DIGEST's.
  Result<std::string> read_placed(const Digest& digest, std::uint64_t max_bytes);

  // What a held tree becomes when materialized (memoized per subtree).
  Result<TreeExpansion> expansion(const Digest& tree);
  Result<ArtifactRecord> stat(const Digest& digest);  // kNotFound if not held
  Result<bool> has(const Digest& digest);
  Result<std::vector<ArtifactRecord>> list();  // least recently used first
  Result<std::vector<Digest>> held();          // every indexed digest, in no order
  Result<std::uint64_t> bytes_held();          // of every indexed object
  Status pin(const Digest& digest, bool pinned = true);
  // Drops an object (index row, then file) whatever protects it: for an object found
  // corrupt, before fetching it again. kNotFound if not held.
  Status remove(const Digest& digest);
  Result<GcReport> gc(const GcRequest& request);
  // Writes pending use ticks to the index.
  Status flush();

  const std::string& root() const { return root_; }
  std::string object_path(const Digest& digest, ArtifactKind kind) const;

 private:
  friend class StoreWriter;
  ArtifactStore(std::string root, LedgerStore& index, Env& env);
  Status recover();
  // Makes the fan-out directory of DIGEST if it is missing, and syncs `objects/` then,
  // or (SYNC_NOW false, in a group) sets fanout_made_ for the group's directory syncs.
  Status ensure_fanout(const Digest& digest, bool sync_now = true);
  std::string new_temp_path();
  // Moves a synced temporary into place as DIGEST and queues its index row; syncs the
  // directory unless the caller syncs it later (import_together).
  // KNOWN_NEW: no file of this digest is on disk, as either kind (absent_on_disk), so no
  // sound row names it: its index row is not read.
  Status install(const std::string& tmp, const Digest& digest, ArtifactKind kind,
                 std::uint64_t size_bytes, bool sync_dir = true, bool known_new = false);
  bool absent_on_disk(const Digest& digest);
  // An object written to tmp/ inside import_together, not synced yet.
  struct Deferred {
    std::string tmp;
    Digest digest;
    ArtifactKind kind = ArtifactKind::kFile;
    std::uint64_t size_bytes = 0;
    bool known_new = false;  // absent_on_disk when store_deferred looked
    bool in_place = false;   // no temporary: the file at the object's name (put_placed)
  };
  // A written, closed temporary: installed now, or deferred inside import_together.
  Status written(const std::string& tmp, const Digest& digest, ArtifactKind kind,
                 std::uint64_t size_bytes);
  Status store_deferred(std::vector<Deferred>& objects, std::vector<ArtifactRecord>* rows);
  // Adds OBJECT to the open group, which stores a round of kMaxGroupObjects at once.
  Status defer(Deferred object);
  Result<Digest> write_object(ArtifactKind kind, std::string_view data);
  // Whether the file at the file object's name holds exactly DATA (put_placed).
  bool holds_in_place(const Digest& digest, std::string_view data);
  struct CachedImport;
  // What a directory's import tells its parent's: whether the cache remembers it (and so
  // everything under it), and the files under it.
  struct Walked {
    bool remembered = false;
    std::uint64_t files = 0;
  };
  // One import through CACHE: a partial walk with TOUCHED (the changed directories and
  // those above them), else a full one.
  Result<ArtifactRef> import_cached(const std::string& path, ImportCache& cache,
                                    const ChangedDirs* touched, ImportStats* stats);
  Result<ArtifactRef> import_any(const std::string& path, CachedImport* cached);
  Result<ArtifactRef> import_file(const std::string& path, bool* executable);
  // The digest and size of the file at PATH, read where it lies (adopt_file, take_file).
  // SIZE: what stat said of it (sizes the buffer; the file is read to its end).
  Result<ArtifactRef> hash_in_place(const std::string& path, std::uint64_t size);
  // CACHED, if given, is consulted and filled in; RELATIVE is PATH below the source and
  // INFO what lstat said of it.
  Result<ArtifactRef> import_dir(const std::string& path, int depth, CachedImport* cached,
                                 const std::string& relative, const FileInfo& info, Walked& walked);
  // The directory at RELATIVE from the cache, when a partial walk may take it whole.
  std::optional<ArtifactRef> reuse_dir(CachedImport& cached, const std::string& relative,
                                       const FileInfo& info, int depth, Walked& walked);
  // Records what the walk of the directory at RELATIVE found in CACHED (may move
  // REF's entries below the top).
  void remember_dir(CachedImport& cached, const std::string& relative, const FileInfo& info,
                    int depth, bool whole, std::uint64_t files, ArtifactRef& ref, Walked& walked);
  // REMEMBERED says whether the cache is to remember the file (not when it is racy).
  Result<ArtifactRef> import_cached_file(const std::string& path, const std::string& relative,
                                         const FileInfo& info, CachedImport& cached,
                                         bool& remembered);
  // Whether DIGEST is held as KIND (memoized in the import's cache).
  Result<bool> held_for_import(const Digest& digest, ArtifactKind kind, CachedImport& cached);
  Result<ArtifactRecord> require(const Digest& digest);
  Status materialize_file(const Digest& digest, const std::string& dest, bool executable,
                          const MaterializeOptions& options);
  Status materialize_tree(const Digest& digest, const std::string& dest, int depth,
                          const MaterializeOptions& options);
  void touch(const Digest& digest);
  bool imports_stopped() const { return imports_stopped_.load(std::memory_order_relaxed); }
  Status flush_index();
  // Objects whose bytes this instance has just hashed (written, adopted under a checked
  // digest, or verified whole), with their file's stamp then: materialize links such an
  // object without hashing it again while the stamp is unchanged (docs/storage.md,
  // "Materializing"). The oldest are forgotten past kMaxRecentlyVerified.
  void remember_verified(const Digest& digest);
  bool recently_verified(const Digest& digest);
  // The index row of DIGEST, from `indexed_` when this instance read it before: a held
  // object looked up again (a job's input, an output that copies it, the empty log)
  // costs no SQLite read transaction, whose locks and reads were about 20 system calls
  // of every job. Only rows this instance found are kept, and only this instance
  // removes rows (remove, gc: `forget_indexed`); a row's kind and size never change
  // while it exists. The oldest are forgotten past kMaxIndexedRows.
  Result<std::optional<ArtifactRecord>> lookup(const Digest& digest);
  void forget_indexed(const Digest& digest);

  std::string root_;
  LedgerStore& index_;
  Env& env_;
  std::uint64_t tick_ = 0;
  std::uint64_t temp_counter_ = 0;
  // This process's id in its temporaries' names, read once (each getpid is a system call).
  const std::string pid_text_ = std::to_string(::getpid());
  const std::uint64_t id_;        // tells store instances apart (an ImportCache's memo)
  std::uint64_t removals_ = 0;    // objects removed (remove, gc) since open
  std::set<std::string> fanouts_;                   // fan-out directories known to exist
  std::optional<std::vector<Deferred>> deferred_;   // set inside import_together
  std::vector<ArtifactRecord>* group_rows_ = nullptr;  // import_together's ROWS
  bool fanout_made_ = false;  // a group's round made a fan-out directory (ensure_fanout)
  std::atomic<bool> imports_stopped_{false};        // stop_imports()
  std::vector<ArtifactRecord> pending_rows_;        // installed, not yet indexed
  std::map<Digest, std::uint64_t> pending_touch_;   // bounded by kMaxPendingTouches
  std::map<Digest, TreeExpansion> expansion_memo_;  // bounded by kMaxExpansionMemo
  // Digest -> V for the last LIMIT digests put, in memory; the oldest are forgotten first.
  template <typename V>
  class RecentMap {
   public:
    explicit RecentMap(std::size_t limit) : limit_(limit) {}
    const V* find(const Digest& d) const {
      auto it = map_.find(d);
      return it == map_.end() ? nullptr : &it->second;
    }
    void put(const Digest& d, V v) {
      if (map_.insert_or_assign(d, std::move(v)).second) order_.push_back(d);
      while (map_.size() > limit_ && !order_.empty()) {
        map_.erase(order_.front());
        order_.pop_front();
      }
      // Entries of forgotten digests (erased) are dropped when they come first.
      if (order_.size() > 2 * limit_) {
        std::erase_if(order_, [&](const Digest& x) { return !map_.count(x); });
      }
    }
    void erase(const Digest& d) { map_.erase(d); }

   private:
    std::size_t limit_;
    std::map<Digest, V> map_;
    std::deque<Digest> order_;  // oldest first (may name forgotten ones)
  };
  RecentMap<FileInfo> verified_{kMaxRecentlyVerified};  // remember_verified
  RecentMap<ArtifactRecord> indexed_{kMaxIndexedRows};  // lookup()
};

// Makes a materialized directory writable again (u+w on every directory) so it can be
// removed. Follows no symbolic links.
Status make_writable_recursive(const std::string& path);

}  // namespace vow::store
