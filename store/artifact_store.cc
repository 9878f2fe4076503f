#include "store/artifact_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "promises/assert.h"

namespace vow::store {

std::string ledger_path(const std::string& state_dir) { return state_dir + "/vow.db"; }
std::string artifacts_root(const std::string& state_dir) { return state_dir + "/artifacts"; }

namespace {

Status corrupt_object(const Digest& d, const std::string& path, const std::string& why) {
  return Status::corrupt("artifact " + d.hex() + ": " + why + " (object " + path + ")");
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// ArtifactStore: writing

namespace {
std::atomic<std::uint64_t> next_store_id{1};
}  // namespace

ArtifactStore::ArtifactStore(std::string root, LedgerStore& index, Env& env)
    : root_(std::move(root)), index_(index), env_(env), id_(next_store_id++) {}

ArtifactStore::~ArtifactStore() { (void)flush(); }

Result<std::unique_ptr<ArtifactStore>> ArtifactStore::open(std::string root, LedgerStore& index,
                                                           Env& env) {
  std::unique_ptr<ArtifactStore> store(new ArtifactStore(std::move(root), index, env));
  VOW_RETURN_IF_ERROR(env.make_dir(store->root_, 0755));
  VOW_RETURN_IF_ERROR(env.make_dir(store->root_ + "/objects", 0755));
  VOW_RETURN_IF_ERROR(env.make_dir(store->root_ + "/tmp", 0755));
  auto tick = index.index_max_tick();
  if (!tick.is_ok()) return tick.status();
  store->tick_ = *tick;
  VOW_RETURN_IF_ERROR(store->recover());
  return store;
}

std::string object_path(const std::string& root, const Digest& digest, ArtifactKind kind) {
  std::string hex = digest.hex();
  std::string p = root + "/objects/" + hex.substr(0, 2) + "/" + hex;
  if (kind == ArtifactKind::kTree) p += ".tree";
  return p;
}

std::string ArtifactStore::object_path(const Digest& digest, ArtifactKind kind) const {
  return store::object_path(root_, digest, kind);
}

std::string ArtifactStore::new_temp_path() {
  return root_ + "/tmp/" + pid_text_ + "-" + std::to_string(++temp_counter_);
}

Status ArtifactStore::ensure_fanout(const Digest& digest, bool sync_now) {
  std::string dir = root_ + "/objects/" + digest.hex().substr(0, 2);
  if (fanouts_.count(dir)) return Status::ok();
  auto info = env_.stat(dir);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kDirectory) {
    VOW_RETURN_IF_ERROR(env_.make_dir(dir, 0755));
    // In a group, `objects/` is synced with the fan-out directories, before any row.
    if (sync_now) VOW_RETURN_IF_ERROR(env_.sync_dir(root_ + "/objects"));
    fanout_made_ = fanout_made_ || !sync_now;
  }
  fanouts_.insert(dir);
  return Status::ok();
}

Status ArtifactStore::make_fanouts() {
  static constexpr char kHex[] = "0123456789abcdef";
  bool made = false;
  for (int i = 0; i < 256; ++i) {
    std::string dir = root_ + "/objects/" + kHex[i >> 4] + kHex[i & 15];
    if (fanouts_.count(dir)) continue;
    auto info = env_.stat(dir);
    if (!info.is_ok()) return info.status();
    if (info->type != FileType::kDirectory) {
      VOW_RETURN_IF_ERROR(env_.make_dir(dir, 0755));
      made = true;
    }
    fanouts_.insert(dir);
  }
  return made ? env_.sync_dir(root_ + "/objects") : Status::ok();
}

Status ArtifactStore::install(const std::string& tmp, const Digest& digest, ArtifactKind kind,
                              std::uint64_t size_bytes, bool sync_dir, bool known_new) {
  auto existing = known_new ? Result<std::optional<ArtifactRecord>>(std::nullopt) : lookup(digest);
  if (!existing.is_ok()) return existing.status();
  if (existing->has_value() && (*existing)->kind != kind) {
    (void)env_.remove_file(tmp);
    return Status::invalid("artifact " + digest.hex() + " is already stored as a " +
                           artifact_kind_name((*existing)->kind) + ", not a " +
                           artifact_kind_name(kind));
  }
  // Always rename over an existing copy: the new bytes were just hashed, the old ones
  // may have rotted, so writing an object again is also how a corrupt one is repaired.
  // (Hard links already handed to jobs keep the old inode.)
  std::string dest = object_path(digest, kind);
  Status s = env_.chmod(tmp, 0444);
  if (s.is_ok()) s = ensure_fanout(digest, sync_dir);
  if (s.is_ok()) s = env_.rename(tmp, dest);
  if (!s.is_ok()) {
    (void)env_.remove_file(tmp);
    return s;
  }
  if (kind == ArtifactKind::kFile) remember_verified(digest);
  if (sync_dir) VOW_RETURN_IF_ERROR(env_.sync_dir(root_ + "/objects/" + digest.hex().substr(0, 2)));
  pending_rows_.push_back(ArtifactRecord{digest, size_bytes, kind, false, ++tick_});
  return Status::ok();
}

void ArtifactStore::remember_verified(const Digest& digest) {
  auto info = env_.stat(object_path(digest, ArtifactKind::kFile));
  if (!info.is_ok() || info->type != FileType::kRegular) return;
  verified_.put(digest, *info);
}

bool ArtifactStore::recently_verified(const Digest& digest) {
  const FileInfo* then = verified_.find(digest);
  if (then == nullptr) return false;
  auto now = env_.stat(object_path(digest, ArtifactKind::kFile));
  if (now.is_ok() && now->type == FileType::kRegular && now->device == then->device &&
      now->inode == then->inode && now->size_bytes == then->size_bytes &&
      now->mtime_ns == then->mtime_ns && now->ctime_ns == then->ctime_ns) {
    return true;
  }
  verified_.erase(digest);  // changed (or gone) since: hashed again, and remembered if sound
  return false;
}

// Every object of the digest, of either kind, has its file at its name: with neither
// file there, nothing is held under the digest (a row left without its file names
// nothing sound, and the put writes the file and replaces the row). Two stats instead of
// a read of the index, which after each commit of the loop's connection starts from an
// empty page cache (SQLite drops a reader's cache when the log has changed).
bool ArtifactStore::absent_on_disk(const Digest& digest) {
  if (indexed_.find(digest) != nullptr) return false;
  for (ArtifactKind kind : {ArtifactKind::kFile, ArtifactKind::kTree}) {
    auto info = env_.stat(object_path(digest, kind));
    if (!info.is_ok() || info->type != FileType::kMissing) return false;
  }
  return true;
}

Result<std::optional<ArtifactRecord>> ArtifactStore::lookup(const Digest& digest) {
  if (const ArtifactRecord* known = indexed_.find(digest)) {
    return std::optional<ArtifactRecord>(*known);
  }
  auto rec = index_.index_get(digest);
  if (rec.is_ok() && rec->has_value()) indexed_.put(digest, **rec);
  return rec;
}

void ArtifactStore::forget_indexed(const Digest& digest) { indexed_.erase(digest); }

Status ArtifactStore::flush_index() {
  if (pending_rows_.empty()) return Status::ok();
  Status s = index_.index_put(pending_rows_);
  // On failure the objects stay on disk without rows; open() indexes them again.
  pending_rows_.clear();
  return s;
}

Result<Digest> ArtifactStore::write_object(ArtifactKind kind, std::string_view data) {
  std::string tmp = new_temp_path();
  auto file = env_.new_writable(tmp, 0444);
  if (!file.is_ok()) return file.status();
  Status s = (*file)->append(bytes_of(data));
  if (s.is_ok() && !deferred_) s = (*file)->sync();
  if (s.is_ok()) s = (*file)->close();
  if (!s.is_ok()) {
    file->reset();
    (void)env_.remove_file(tmp);
    return s;
  }
  Digest d = blake2b(data);
  VOW_RETURN_IF_ERROR(written(tmp, d, kind, data.size()));
  return d;
}

Status ArtifactStore::written(const std::string& tmp, const Digest& digest, ArtifactKind kind,
                              std::uint64_t size_bytes) {
  if (!deferred_) return install(tmp, digest, kind, size_bytes);
  return defer(Deferred{tmp, digest, kind, size_bytes});
}

Status ArtifactStore::defer(Deferred object) {
  deferred_->push_back(std::move(object));
  if (deferred_->size() < kMaxGroupObjects) return Status::ok();
  std::vector<Deferred> round = std::move(*deferred_);
  deferred_->clear();
  return store_deferred(round, group_rows_);
}

void ArtifactStore::settle_group_import(ImportCache& cache, bool stored) {
  if (stored) {
    cache.dirs_store_id_ = id_;
    cache.dirs_removals_ = removals_;
    return;
  }
  cache.held_.clear();
  cache.dirs_store_id_ = 0;
}

Status ArtifactStore::import_together(const std::function<Status()>& fn,
                                      std::vector<ArtifactRecord>* rows) {
  if (deferred_) return fn();  // part of the outer group
  deferred_.emplace();
  group_rows_ = rows;
  Status s = fn();
  std::vector<Deferred> objects = std::move(*deferred_);
  deferred_.reset();
  group_rows_ = nullptr;
  if (!s.is_ok()) {
    for (const auto& o : objects) {
      if (!o.in_place) (void)env_.remove_file(o.tmp);
    }
    return s;
  }
  return store_deferred(objects, rows);
}

// The write protocol of install(), one pass per step over all the objects: their bytes
// are durable before any is renamed, and every name is durable before any index row is
// committed (docs/storage.md, "Group import").
Status ArtifactStore::store_deferred(std::vector<Deferred>& objects,
                                     std::vector<ArtifactRecord>* rows) {
  // A file object already held and known sound is not written again: its bytes and its
  // name are durable, and writing it again (a sync of the new copy and of its
  // directory, a rename) would only repair a copy that could have rotted, which this one
  // has not. Known sound: this store hashed it and its file has not changed since
  // (recently_verified), or, when small (kReadHeldBelow), it is read and hashed now
  // (a hard link made to it since changes its stamp, not its bytes). A job whose output
  // is a copy of its input (or of an earlier run's output) so costs no sync for it. Its
  // temporary goes; the use tick below still marks it used.
  std::vector<Digest> already_held;
  std::erase_if(objects, [&](Deferred& o) {
    if (o.kind != ArtifactKind::kFile || o.in_place) return false;
    if (absent_on_disk(o.digest)) {
      o.known_new = true;
      return false;
    }
    auto held = lookup(o.digest);
    if (!held.is_ok() || !held->has_value() || (*held)->kind != o.kind) return false;
    if (!recently_verified(o.digest)) {
      if ((*held)->size_bytes > kReadHeldBelow) return false;
      auto reader = open_reader(o.digest);
      if (!reader.is_ok() || !(*reader)->verify_whole().is_ok()) return false;
      remember_verified(o.digest);
    }
    (void)env_.remove_file(o.tmp);
    already_held.push_back(o.digest);
    return true;
  });
  if (rows != nullptr) {
    for (const auto& d : already_held) touch(d);
  }
  if (objects.empty()) return Status::ok();
  auto drop_from = [&](std::size_t i) {
    for (; i < objects.size(); ++i) {
      if (!objects[i].in_place) (void)env_.remove_file(objects[i].tmp);
    }
  };
  Status s;
  if (objects.size() > kSyncfsAbove) {
    s = env_.sync_filesystem(root_ + "/tmp");
  } else {
    for (const auto& o : objects) {
      s = env_.sync_file(o.in_place ? object_path(o.digest, o.kind) : o.tmp);
      if (!s.is_ok()) break;
    }
  }
  if (!s.is_ok()) {
    drop_from(0);
    return s;
  }
  std::size_t rows_before = pending_rows_.size();
  std::set<std::string> dirs;
  fanout_made_ = false;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const auto& o = objects[i];
    if (o.in_place) {
      // At its name already (put_placed): its name is synced with the others below.
      remember_verified(o.digest);
      pending_rows_.push_back(ArtifactRecord{o.digest, o.size_bytes, o.kind, false, ++tick_});
    } else {
      s = install(o.tmp, o.digest, o.kind, o.size_bytes, /*sync_dir=*/false, o.known_new);
    }
    if (!s.is_ok()) {
      drop_from(i + 1);  // install removed this one's temporary
      break;
    }
    dirs.insert(root_ + "/objects/" + o.digest.hex().substr(0, 2));
  }
  if (fanout_made_) dirs.insert(root_ + "/objects");  // it gained a fan-out directory
  if (s.is_ok()) {
    if (dirs.size() > kSyncfsAbove) {
      s = env_.sync_filesystem(root_ + "/objects");
    } else {
      for (const auto& d : dirs) {
        s = env_.sync_dir(d);
        if (!s.is_ok()) break;
      }
    }
  }
  if (!s.is_ok()) {
    // The names may not be durable: no rows (the next open indexes what it verifies).
    pending_rows_.resize(rows_before);
    return s;
  }
  if (rows == nullptr) return flush_index();
  // An object held before keeps its old row until the caller commits the new one: a use
  // tick (written before any GC runs) keeps a GC meanwhile from taking it as unused.
  for (const auto& o : objects) touch(o.digest);
  rows->insert(rows->end(), pending_rows_.begin() + static_cast<std::ptrdiff_t>(rows_before),
               pending_rows_.end());
  pending_rows_.resize(rows_before);
  return Status::ok();
}

bool ArtifactStore::holds_in_place(const Digest& digest, std::string_view data) {
  const std::string path = object_path(digest, ArtifactKind::kFile);
  auto info = env_.stat(path);
  // Read-only as every object is (place() made it 0444): one a job could write through
  // the link to its input is not taken as it is.
  if (!info.is_ok() || info->type != FileType::kRegular || info->size_bytes != data.size() ||
      (info->mode & 0222) != 0) {
    return false;
  }
  auto in = env_.open_readable(path);
  if (!in.is_ok()) return false;
  std::string bytes(data.size(), '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    auto n = (*in)->read_at(
        got, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(bytes.data()) + got,
                                     bytes.size() - got));
    if (!n.is_ok() || *n == 0) return false;
    got += *n;
  }
  return bytes == data;
}

// A placed object is adopted where it lies: its bytes were checked against its name
// before it was placed, and are compared with DATA again here; what a store would add is
// their sync, their name's sync and the row. Writing them again cost a new file, a
// rename over the placed one (whose inode is then freed), and on a file system that
// skips recently freed inodes when it allocates one, a longer search for the next.
Result<Digest> ArtifactStore::put_placed(std::string_view data) {
  if (data.size() > kReadHeldBelow) return put_bytes(data);
  const Digest digest = blake2b(data);
  const ArtifactRecord* known = indexed_.find(digest);
  if ((known != nullptr && known->kind != ArtifactKind::kFile) ||
      !holds_in_place(digest, data)) {
    return put_bytes(data);
  }
  if (deferred_) {
    VOW_RETURN_IF_ERROR(defer(Deferred{"", digest, ArtifactKind::kFile, data.size(), false, true}));
    return digest;
  }
  const std::string path = object_path(digest, ArtifactKind::kFile);
  VOW_RETURN_IF_ERROR(env_.sync_file(path));
  VOW_RETURN_IF_ERROR(env_.sync_dir(root_ + "/objects/" + digest.hex().substr(0, 2)));
  remember_verified(digest);
  pending_rows_.push_back(ArtifactRecord{digest, data.size(), ArtifactKind::kFile, false, ++tick_});
  VOW_RETURN_IF_ERROR(flush_index());
  return digest;
}

Result<Digest> ArtifactStore::put_bytes(std::string_view data) {
  auto d = write_object(ArtifactKind::kFile, data);
  Status f = flush_index();
  if (!d.is_ok()) return d;
  if (!f.is_ok()) return f;
  return d;
}

Result<Digest> ArtifactStore::put_tree(std::vector<TreeEntry> entries) {
  for (const auto& e : entries) {
    auto rec = lookup(e.digest);
    if (!rec.is_ok()) return rec.status();
    if (!rec->has_value()) {
      return Status::not_found("put_tree: child '" + e.name + "' (" + e.digest.hex() +
                               ") is not held");
    }
    bool child_is_tree = (*rec)->kind == ArtifactKind::kTree;
    if (child_is_tree != (e.kind == EntryKind::kTree)) {
      return Status::invalid("put_tree: entry '" + e.name + "' says " +
                             (e.kind == EntryKind::kTree ? "tree" : "file") + " but " +
                             e.digest.hex() + " is a " + artifact_kind_name((*rec)->kind));
    }
  }
  // A tree made from held children (a fetched tree, a fan-in input) is refused if it
  // would expand past the limits: nobody could materialize it.
  TreeExpansion x;
  for (const auto& e : entries) {
    ++x.entries;
    if (e.kind == EntryKind::kTree) {
      auto sub = expansion(e.digest);
      if (!sub.is_ok()) return sub.status();
      x.entries = sub->entries > UINT64_MAX - x.entries ? UINT64_MAX : x.entries + sub->entries;
      x.bytes = sub->bytes > UINT64_MAX - x.bytes ? UINT64_MAX : x.bytes + sub->bytes;
    } else {
      auto rec = lookup(e.digest);
      if (rec.is_ok() && rec->has_value()) {
        std::uint64_t n = (*rec)->size_bytes;
        x.bytes = n > UINT64_MAX - x.bytes ? UINT64_MAX : x.bytes + n;
      }
    }
  }
  auto encoding = encode_tree(std::move(entries));
  if (!encoding.is_ok()) return encoding.status();
  VOW_RETURN_IF_ERROR(check_expansion(blake2b(*encoding), x));
  auto d = write_object(ArtifactKind::kTree, *encoding);
  Status f = flush_index();
  if (!d.is_ok()) return d;
  if (!f.is_ok()) return f;
  return d;
}

Result<ArtifactRef> ArtifactStore::adopt_file(const std::string& path,
                                              std::optional<Digest> verified) {
  auto info = env_.stat(path);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) {
    return Status::invalid("adopt " + path + ": not a regular file");
  }
  ArtifactRef ref;
  if (verified) {
    ref.digest = *verified;
    ref.size_bytes = info->size_bytes;
  } else {
    auto hashed = hash_in_place(path, info->size_bytes);
    if (!hashed.is_ok()) return hashed.status();
    ref = *hashed;
  }
  VOW_RETURN_IF_ERROR(env_.sync_file(path));
  // install() renames the file over any copy already held (and removes it on failure).
  Status s = install(path, ref.digest, ArtifactKind::kFile, ref.size_bytes);
  Status f = flush_index();
  if (!s.is_ok()) return s;
  if (!f.is_ok()) return f;
  return ref;
}

Result<ArtifactRef> ArtifactStore::hash_in_place(const std::string& path, std::uint64_t size) {
  auto src = env_.open_readable(path);
  if (!src.is_ok()) return src.status();
  Hasher hasher;
  std::vector<std::uint8_t> buf = chunk_buffer(size);
  ArtifactRef ref;
  for (;;) {
    auto n = (*src)->read_at(ref.size_bytes, buf);
    if (!n.is_ok()) return n.status();
    if (*n == 0) break;
    hasher.update(std::span<const std::uint8_t>(buf).subspan(0, *n));
    ref.size_bytes += *n;
  }
  ref.digest = hasher.finish();
  return ref;
}

// ---------------------------------------------------------------------------------------
// ArtifactStore: reading

Result<ArtifactRecord> ArtifactStore::require(const Digest& digest) {
  auto rec = lookup(digest);
  if (!rec.is_ok()) return rec.status();
  if (!rec->has_value()) return Status::not_found("artifact " + digest.hex() + " is not held");
  return **rec;
}

void ArtifactStore::touch(const Digest& digest) {
  pending_touch_[digest] = ++tick_;
  if (pending_touch_.size() >= kMaxPendingTouches) (void)flush();
}

Status ArtifactStore::flush() {
  VOW_RETURN_IF_ERROR(flush_index());
  if (pending_touch_.empty()) return Status::ok();
  std::vector<std::pair<Digest, std::uint64_t>> ticks(pending_touch_.begin(), pending_touch_.end());
  pending_touch_.clear();  // ticks only order GC: a lost batch is harmless
  return index_.index_touch(ticks);
}

Result<std::unique_ptr<ArtifactReader>> ArtifactStore::open_reader(const Digest& digest) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  std::string path = object_path(digest, rec->kind);
  auto file = env_.open_readable(path);
  if (!file.is_ok()) {
    if (file.status().code() == StatusCode::kNotFound) {
      return Status::corrupt("artifact " + digest.hex() + ": indexed but its object " + path +
                             " is missing");
    }
    return file.status();
  }
  auto size = (*file)->size();
  if (!size.is_ok()) return size.status();
  if (*size != rec->size_bytes) {
    return corrupt_object(
        digest, path,
        "size " + std::to_string(*size) + ", index says " + std::to_string(rec->size_bytes));
  }
  touch(digest);
  return std::make_unique<ArtifactReader>(std::move(file).value(), digest, *size);
}

Result<std::string> ArtifactStore::read(const Digest& digest) {
  auto reader = open_reader(digest);
  if (!reader.is_ok()) return reader.status();
  std::string out;
  out.resize(static_cast<std::size_t>((*reader)->size()));
  std::size_t off = 0;
  for (;;) {
    std::span<std::uint8_t> rest(reinterpret_cast<std::uint8_t*>(out.data()) + off,
                                 out.size() - off);
    if (rest.empty()) {
      // Reaching the end (a 0-byte read) is what runs the verification.
      std::uint8_t probe[1];
      auto n = (*reader)->read_next(probe);
      if (!n.is_ok()) return n.status();
      if (*n != 0) return Status::corrupt("artifact " + digest.hex() + ": grew while read");
      break;
    }
    auto n = (*reader)->read_next(rest);
    if (!n.is_ok()) return n.status();
    if (*n == 0) return Status::corrupt("artifact " + digest.hex() + ": truncated");
    off += *n;
  }
  return out;
}

Result<std::vector<TreeEntry>> ArtifactStore::read_tree(const Digest& digest) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  if (rec->kind != ArtifactKind::kTree) {
    return Status::invalid("artifact " + digest.hex() + " is a file, not a tree");
  }
  auto bytes = read(digest);
  if (!bytes.is_ok()) return bytes.status();
  auto entries = decode_tree(*bytes);
  if (!entries.is_ok()) {
    return Status::corrupt("tree " + digest.hex() + ": " + entries.status().message());
  }
  return entries;
}

Status ArtifactStore::verify(const Digest& digest) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  if (rec->kind == ArtifactKind::kFile) {
    auto reader = open_reader(digest);
    if (!reader.is_ok()) return reader.status();
    return (*reader)->verify_whole();
  }
  auto entries = read_tree(digest);
  if (!entries.is_ok()) return entries.status();
  for (const auto& e : *entries) {
    auto child = index_.index_get(e.digest);  // a check: the index itself, not lookup()
    if (!child.is_ok()) return child.status();
    if (!child->has_value()) {
      return Status::corrupt("tree " + digest.hex() + ": child '" + e.name + "' (" +
                             e.digest.hex() + ") is missing");
    }
  }
  return Status::ok();
}

Result<TreeExpansion> ArtifactStore::expansion(const Digest& tree) {
  if (expansion_memo_.size() > kMaxExpansionMemo) expansion_memo_.clear();
  TreeReader reader;
  reader.entries = [this](const Digest& d) { return read_tree(d); };
  reader.file_bytes = [this](const Digest& d) -> Result<std::uint64_t> {
    auto rec = require(d);
    if (!rec.is_ok()) return rec.status();
    return rec->size_bytes;
  };
  return expand_tree(tree, reader, &expansion_memo_);
}

Result<ArtifactRef> ArtifactStore::ref(const Digest& digest) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  ArtifactRef r;
  r.digest = digest;
  if (rec->kind == ArtifactKind::kFile) {
    r.size_bytes = rec->size_bytes;
    return r;
  }
  r.is_tree = true;
  auto entries = read_tree(digest);
  if (!entries.is_ok()) return entries.status();
  r.entries = std::move(entries).value();
  auto total = expansion(digest);
  if (!total.is_ok()) return total.status();
  r.size_bytes = total->bytes;
  return r;
}

// From the index itself: the row as it is now (pinned, last use), not as first read.
Result<ArtifactRecord> ArtifactStore::stat(const Digest& digest) {
  auto rec = index_.index_get(digest);
  if (!rec.is_ok()) return rec.status();
  if (!rec->has_value()) return Status::not_found("artifact " + digest.hex() + " is not held");
  return **rec;
}

Result<bool> ArtifactStore::has(const Digest& digest) {
  auto rec = lookup(digest);
  if (!rec.is_ok()) return rec.status();
  return rec->has_value();
}

Result<std::vector<ArtifactRecord>> ArtifactStore::list() {
  VOW_RETURN_IF_ERROR(flush());
  return index_.index_list();
}

Result<std::vector<Digest>> ArtifactStore::held() {
  VOW_RETURN_IF_ERROR(flush());
  return index_.index_digests();
}

Result<std::uint64_t> ArtifactStore::bytes_held() {
  VOW_RETURN_IF_ERROR(flush());
  return index_.index_bytes();
}

Status ArtifactStore::pin(const Digest& digest, bool pinned) {
  return index_.index_set_pinned(digest, pinned);
}

Status ArtifactStore::remove(const Digest& digest) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  VOW_RETURN_IF_ERROR(flush());
  // Row first, as in GC: a crash in between leaves an object the next open re-indexes.
  VOW_RETURN_IF_ERROR(index_.index_remove(digest));
  forget_indexed(digest);
  ++removals_;
  pending_touch_.erase(digest);
  return env_.remove_file(object_path(digest, rec->kind));
}

}  // namespace vow::store
