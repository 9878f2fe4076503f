// ArtifactStore: importing files and directories, with or without an import cache
// (store/import_cache.h; docs/storage.md, "Incremental import").
#include <sys/stat.h>

#include <algorithm>

#include "store/artifact_store.h"

namespace vow::store {

// One import with a cache: what this snapshot found, to become the cache's contents.
struct ArtifactStore::CachedImport {
  CachedImport(ImportCache& c, std::int64_t bound, const ChangedDirs* t)
      : cache(c), racy_bound_ns(bound), touched(t) {}

  ImportCache& cache;
  // Files whose mtime or ctime is at or after this are not remembered (racy entries).
  std::int64_t racy_bound_ns = 0;
  // A partial walk: the directories that may have changed and every directory above
  // them, which are walked; any other directory the cache remembers, with its stamp
  // unchanged, is taken whole. Null: a full walk (every directory is walked).
  const ChangedDirs* touched = nullptr;
  // A full walk: everything the cache is to remember, built afresh. A partial walk: the
  // changes to what it remembers (nullopt: forgotten). Applied when the import succeeds.
  std::unordered_map<std::string, std::optional<CachedFile>> files;
  std::unordered_map<std::string, std::optional<CachedDir>> dirs;
  ImportStats stats;

  bool partial() const { return touched != nullptr; }
  // A full walk forgets by not remembering; a partial one must say so.
  void forget_file(const std::string& relative) {
    if (partial()) files[relative] = std::nullopt;
  }
  void forget_dir(const std::string& relative) {
    if (partial()) dirs[relative] = std::nullopt;
  }
  // Forgets the directory at RELATIVE and, as far as the cache knows it, what was under
  // it (what it does not know stays until a full walk: an entry for a path that is gone
  // costs memory, never a wrong snapshot, since a file must match its stamp to be used).
  void forget_tree(const std::string& relative) {
    if (!partial()) return;
    forget_dir(relative);
    const CachedDir* known = cache.find_dir(relative);
    if (known == nullptr) return;
    for (const auto& e : known->entries) {
      std::string child = relative.empty() ? e.name : relative + "/" + e.name;
      if (e.kind == EntryKind::kTree) {
        forget_tree(child);
      } else {
        forget_file(child);
      }
    }
  }
};

namespace {

// CHANGED and every directory above each of them, up to "" (the source itself).
ChangedDirs with_ancestors(const ChangedDirs& changed) {
  ChangedDirs out;
  for (const auto& dir : changed) {
    out.insert("");
    for (std::size_t i = dir.find('/'); i != std::string::npos; i = dir.find('/', i + 1)) {
      out.insert(dir.substr(0, i));
    }
    out.insert(dir);
  }
  return out;
}

// Puts CHANGES (nullopt: erase) into MAP; true if that changed it.
template <typename T>
bool apply(std::unordered_map<std::string, std::optional<T>>& changes,
           std::unordered_map<std::string, T>& map) {
  bool changed = false;
  for (auto& [key, value] : changes) {
    if (!value) {
      changed |= map.erase(key) > 0;
      continue;
    }
    auto [it, added] = map.try_emplace(key);
    if (added || it->second != *value) {
      it->second = std::move(*value);
      changed = true;
    }
  }
  return changed;
}

// Replaces MAP by what a full walk found (every value set); true if that changed it.
template <typename T>
bool replace(std::unordered_map<std::string, std::optional<T>>& found,
             std::unordered_map<std::string, T>& map) {
  std::unordered_map<std::string, T> next;
  next.reserve(found.size());
  for (auto& [key, value] : found) next.emplace(key, std::move(*value));
  if (next == map) return false;
  map = std::move(next);
  return true;
}

bool is_tree(const TreeEntry& e) { return e.kind == EntryKind::kTree; }

Status stopped_status(const std::string& path) {
  return Status::unavailable("import " + path + ": import stopped (the agent is stopping)");
}

}  // namespace

Result<ArtifactRef> ArtifactStore::import_file(const std::string& path, bool* executable) {
  auto info = env_.stat(path);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) {
    return Status::invalid("import " + path + ": not a regular file");
  }
  if (executable) *executable = (info->mode & S_IXUSR) != 0;
  auto src = env_.open_readable(path);
  if (!src.is_ok()) return src.status();
  std::string tmp = new_temp_path();
  auto dst = env_.new_writable(tmp, 0444);
  if (!dst.is_ok()) return dst.status();
  Hasher hasher;
  std::vector<std::uint8_t> buf = chunk_buffer(info->size_bytes);
  std::uint64_t off = 0;
  Status s;
  for (;;) {
    if (imports_stopped()) {
      s = stopped_status(path);
      break;
    }
    auto n = (*src)->read_at(off, buf);
    if (!n.is_ok()) {
      s = n.status();
      break;
    }
    if (*n == 0) break;
    auto chunk = std::span<const std::uint8_t>(buf).subspan(0, *n);
    hasher.update(chunk);
    s = (*dst)->append(chunk);
    if (!s.is_ok()) break;
    off += *n;
  }
  if (s.is_ok() && !deferred_) s = (*dst)->sync();
  if (s.is_ok()) s = (*dst)->close();
  if (!s.is_ok()) {
    dst->reset();
    (void)env_.remove_file(tmp);
    return s;
  }
  Digest d = hasher.finish();
  VOW_RETURN_IF_ERROR(written(tmp, d, ArtifactKind::kFile, off));
  ArtifactRef ref;
  ref.digest = d;
  ref.size_bytes = off;
  return ref;
}

Result<bool> ArtifactStore::is_object(const std::string& path) {
  auto info = env_.stat(path);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) return false;
  auto ref = hash_in_place(path, info->size_bytes);
  if (!ref.is_ok()) return ref.status();
  // Indexed or not: the agent may have stopped between the object's rename and the
  // commit of its row (the store's open indexes such an object again).
  auto object = env_.stat(object_path(ref->digest, ArtifactKind::kFile));
  if (!object.is_ok()) return object.status();
  return object->type == FileType::kRegular && object->device == info->device &&
         object->inode == info->inode;
}

Result<ArtifactRef> ArtifactStore::take_file(const std::string& path) {
  auto info = env_.stat(path);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) {
    return Status::invalid("import " + path + ": not a regular file");
  }
  std::string tmp = new_temp_path();
  auto linked = env_.link(path, tmp);
  if (!linked.is_ok()) return linked.status();
  if (!*linked) return import_file(path, nullptr);
  auto ref = hash_in_place(tmp, info->size_bytes);
  Status s = ref.status();
  if (s.is_ok() && !deferred_) s = env_.sync_file(tmp);
  if (!s.is_ok()) {
    (void)env_.remove_file(tmp);
    return s;
  }
  VOW_RETURN_IF_ERROR(written(tmp, ref->digest, ArtifactKind::kFile, ref->size_bytes));
  return ref;
}

Result<ArtifactRef> ArtifactStore::import_dir(const std::string& path, int depth,
                                              CachedImport* cached, const std::string& relative,
                                              const FileInfo& info, Walked& walked) {
  if (depth > kMaxTreeDepth) {
    return Status::overloaded("import " + path + ": deeper than " + std::to_string(kMaxTreeDepth) +
                              " directories");
  }
  if (cached) {
    auto reused = reuse_dir(*cached, relative, info, depth, walked);
    if (reused) return *reused;
    ++cached->stats.dirs_walked;
  }
  auto names = env_.list_dir(path);
  if (!names.is_ok()) return names.status();
  std::sort(names->begin(), names->end());
  ArtifactRef ref;
  ref.is_tree = true;
  // Whether everything under it is remembered (then so is the directory), and how many
  // files it holds.
  bool whole = true;
  std::uint64_t files = 0;
  for (const auto& name : *names) {
    std::string child = path + "/" + name;
    if (imports_stopped()) return stopped_status(child);
    Status valid = validate_entry_name(name);
    if (!valid.is_ok()) return Status::invalid("import " + child + ": " + valid.message());
    auto child_info = env_.stat(child);
    if (!child_info.is_ok()) return child_info.status();
    TreeEntry e;
    e.name = name;
    std::string child_relative = relative.empty() ? name : relative + "/" + name;
    if (child_info->type == FileType::kRegular) {
      bool exec = false;
      bool remembered = false;
      auto r = cached ? import_cached_file(child, child_relative, *child_info, *cached, remembered)
                      : import_file(child, &exec);
      if (!r.is_ok()) return r;
      if (cached) exec = (child_info->mode & S_IXUSR) != 0;
      e.kind = exec ? EntryKind::kExecutable : EntryKind::kFile;
      e.digest = r->digest;
      ref.size_bytes += r->size_bytes;
      whole = whole && remembered;
      ++files;
    } else if (child_info->type == FileType::kDirectory) {
      Walked below;
      auto r = import_dir(child, depth + 1, cached, child_relative, *child_info, below);
      if (!r.is_ok()) return r;
      e.kind = EntryKind::kTree;
      e.digest = r->digest;
      ref.size_bytes += r->size_bytes;
      whole = whole && below.remembered;
      files += below.files;
    } else if (child_info->type == FileType::kSymlink) {
      return Status::invalid("import " + child +
                             ": symbolic link refused (artifacts hold regular files and "
                             "directories only)");
    } else if (child_info->type == FileType::kMissing) {
      return Status::not_found("import " + child + ": vanished during import");
    } else {
      return Status::invalid("import " + child + ": special file (device, socket or FIFO) refused");
    }
    ref.entries.push_back(std::move(e));
  }
  auto encoding = encode_tree(ref.entries);
  if (!encoding.is_ok()) {
    return Status(encoding.status().code(), "import " + path + ": " + encoding.status().message());
  }
  // A tree already held (an unchanged directory) is not written again.
  std::optional<Digest> held_tree;
  if (cached) {
    Digest d = blake2b(*encoding);
    auto held = held_for_import(d, ArtifactKind::kTree, *cached);
    if (!held.is_ok()) return held.status();
    if (*held) {
      ++cached->stats.trees_reused;
      held_tree = d;
    }
  }
  if (held_tree) {
    ref.digest = *held_tree;
  } else {
    auto d = write_object(ArtifactKind::kTree, *encoding);
    if (!d.is_ok()) return d.status();
    if (cached) {
      ++cached->stats.trees_written;
      cached->cache.held_[*d] = ArtifactKind::kTree;
    }
    ref.digest = *d;
  }
  if (cached) remember_dir(*cached, relative, info, depth, whole, files, ref, walked);
  return ref;
}

std::optional<ArtifactRef> ArtifactStore::reuse_dir(CachedImport& cached,
                                                    const std::string& relative,
                                                    const FileInfo& info, int depth,
                                                    Walked& walked) {
  if (!cached.partial() || cached.touched->contains(relative)) return std::nullopt;
  // Nothing changed in it or below it since the cache's snapshot (nothing was named), and
  // it is still the directory that was snapshotted (a directory put in its place has
  // another inode): its tree is the one remembered, and every object under it is held.
  const CachedDir* known = cached.cache.find_dir(relative);
  if (known == nullptr || known->stamp != stamp_of(info)) return std::nullopt;
  ++cached.stats.dirs_reused;
  cached.stats.files += known->files;
  cached.stats.files_reused += known->files;
  walked.remembered = true;
  walked.files = known->files;
  ArtifactRef ref;
  ref.is_tree = true;
  ref.digest = known->tree;
  ref.size_bytes = known->size_bytes;
  if (depth == 0) ref.entries = known->entries;  // a parent needs only the digest and size
  return ref;
}

void ArtifactStore::remember_dir(CachedImport& cached, const std::string& relative,
                                 const FileInfo& info, int depth, bool whole, std::uint64_t files,
                                 ArtifactRef& ref, Walked& walked) {
  // What the directory held at the cache's snapshot and holds no more (or holds as a
  // file instead of a directory, or the reverse) is forgotten with all it held.
  if (const CachedDir* known = cached.partial() ? cached.cache.find_dir(relative) : nullptr) {
    for (const auto& old : known->entries) {
      auto now =
          std::lower_bound(ref.entries.begin(), ref.entries.end(), old.name,
                           [](const TreeEntry& e, const std::string& n) { return e.name < n; });
      if (now != ref.entries.end() && now->name == old.name && is_tree(*now) == is_tree(old)) {
        continue;
      }
      std::string child = relative.empty() ? old.name : relative + "/" + old.name;
      if (is_tree(old)) {
        cached.forget_tree(child);
      } else {
        cached.forget_file(child);
      }
    }
  }
  walked.remembered = whole;
  walked.files = files;
  if (!whole) {
    // Something under it is not remembered (a racy file): it is walked again next time.
    cached.forget_dir(relative);
    return;
  }
  CachedDir d;
  d.stamp = stamp_of(info);
  d.tree = ref.digest;
  d.size_bytes = ref.size_bytes;
  d.files = files;
  // The caller of a directory below the top needs only its digest and size.
  d.entries = depth == 0 ? ref.entries : std::move(ref.entries);
  cached.dirs[relative] = std::move(d);
}

Result<bool> ArtifactStore::held_for_import(const Digest& digest, ArtifactKind kind,
                                            CachedImport& cached) {
  auto& memo = cached.cache.held_;
  auto it = memo.find(digest);
  if (it != memo.end()) return it->second == kind;
  auto rec = lookup(digest);
  if (!rec.is_ok()) return rec.status();
  if (!rec->has_value()) return false;
  memo[digest] = (*rec)->kind;
  return (*rec)->kind == kind;
}

Result<ArtifactRef> ArtifactStore::import_cached_file(const std::string& path,
                                                      const std::string& relative,
                                                      const FileInfo& info, CachedImport& cached,
                                                      bool& remembered) {
  // INFO was taken before the file is read: if the file changes while it is read, the
  // stamp remembered is the older one and the next snapshot reads the file again.
  FileStamp stamp = stamp_of(info);
  ++cached.stats.files;
  const CachedFile* known = cached.cache.find(relative);
  auto remember = [&](const Digest& d) {
    remembered = stamp.mtime_ns < cached.racy_bound_ns && stamp.ctime_ns < cached.racy_bound_ns;
    if (remembered) {
      cached.files[relative] = CachedFile{stamp, d};
    } else if (known != nullptr) {
      cached.forget_file(relative);
    }
  };
  if (known != nullptr && known->stamp == stamp) {
    auto held = held_for_import(known->digest, ArtifactKind::kFile, cached);
    if (!held.is_ok()) return held.status();
    if (*held) {
      ++cached.stats.files_reused;
      remember(known->digest);
      ArtifactRef ref;
      ref.digest = known->digest;
      ref.size_bytes = stamp.size;
      return ref;
    }
    ++cached.stats.objects_missing;  // collected or removed since: read it again
  }
  auto r = import_file(path, nullptr);
  if (!r.is_ok()) return r;
  ++cached.stats.files_read;
  cached.stats.bytes_read += r->size_bytes;
  cached.cache.held_[r->digest] = ArtifactKind::kFile;
  remember(r->digest);
  return r;
}

Result<ArtifactRef> ArtifactStore::import_path(const std::string& path) {
  return import_any(path, nullptr);
}

Result<ArtifactRef> ArtifactStore::import_path(const std::string& path, ImportCache& cache,
                                               ImportStats* stats, const ChangedDirs* changed) {
  if (cache.source() != path) {
    return Status::invalid("import " + path + ": the import cache given is for " + cache.source());
  }
  // The directories remembered may be taken whole only if every object under them is
  // still held: the store instance that made or checked them has removed nothing since.
  // Inside import_together nothing is indexed until the group is stored.
  const bool vouched = changed != nullptr && !deferred_ && cache.dirs_store_id_ == id_ &&
                       cache.dirs_removals_ == removals_;
  if (cache.store_id_ != id_ || cache.removals_ != removals_) {
    cache.held_.clear();  // objects may have been removed since it was filled
    cache.store_id_ = id_;
    cache.removals_ = removals_;
  }
  if (vouched) {
    ChangedDirs touched = with_ancestors(*changed);
    auto r = import_cached(path, cache, &touched, stats);
    if (r.is_ok()) return r;
    // Something named is gone, or an error: the full walk decides, with its own errors.
  }
  return import_cached(path, cache, nullptr, stats);
}

Result<ArtifactRef> ArtifactStore::import_cached(const std::string& path, ImportCache& cache,
                                                 const ChangedDirs* touched, ImportStats* stats) {
  CachedImport cached(cache, cache.clock() - kRacyWindowNs, touched);
  auto r = import_any(path, &cached);
  if (stats) *stats = cached.stats;
  if (!r.is_ok()) {
    // Rows of objects written may not be indexed: look them up again next time.
    cache.held_.clear();
    return r;
  }
  bool changed = false;
  if (cached.partial()) {
    changed |= apply(cached.files, cache.files_);
    changed |= apply(cached.dirs, cache.dirs_);
  } else {
    changed |= replace(cached.files, cache.files_);
    changed |= replace(cached.dirs, cache.dirs_);
  }
  if (changed) cache.dirty_ = true;
  // Inside import_together the objects are not held until the group is stored.
  cache.dirs_store_id_ = deferred_ ? 0 : id_;
  cache.dirs_removals_ = removals_;
  return r;
}

Result<ArtifactRef> ArtifactStore::import_any(const std::string& path, CachedImport* cached) {
  auto info = env_.stat(path);
  if (!info.is_ok()) return info.status();
  Result<ArtifactRef> r = Status::invalid("");
  switch (info->type) {
    case FileType::kRegular:
      if (cached) {
        bool remembered = false;
        r = import_cached_file(path, "", *info, *cached, remembered);
      } else {
        r = import_file(path, nullptr);
      }
      break;
    case FileType::kDirectory: {
      Walked walked;
      r = import_dir(path, 0, cached, "", *info, walked);
      break;
    }
    case FileType::kSymlink:
      return Status::invalid("import " + path +
                             ": symbolic link refused (artifacts hold regular files and "
                             "directories only)");
    case FileType::kMissing:
      return Status::not_found("import " + path + ": no such file or directory");
    case FileType::kOther:
      return Status::invalid("import " + path + ": special file (device, socket or FIFO) refused");
  }
  if (deferred_) return r;  // indexed when the group is stored
  Status f = flush_index();
  if (!r.is_ok()) return r;
  if (!f.is_ok()) return f;
  return r;
}

}  // namespace vow::store
