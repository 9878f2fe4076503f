#include "store/import_cache.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

namespace vow::store {
namespace {

// Version 2 added the directories; a file of version 1 is dropped (a full import).
constexpr std::string_view kMagic = "vow import cache 2\n";
// Path length, six stamp fields, digest.
constexpr std::size_t kMinEntryBytes = 8 + 6 * 8 + Digest::kSize;
// Path length, six stamp fields, digest, size, files, entry count.
constexpr std::size_t kMinDirBytes = 8 + 6 * 8 + Digest::kSize + 3 * 8;
// Name length, kind, digest.
constexpr std::size_t kMinTreeEntryBytes = 8 + 1 + Digest::kSize;

std::int64_t wall_clock_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_string(std::string& out, std::string_view v) {
  put_u64(out, v.size());
  out += v;
}

void put_digest(std::string& out, const Digest& d) {
  out.append(reinterpret_cast<const char*>(d.bytes.data()), Digest::kSize);
}

void put_stamp(std::string& out, const FileStamp& s) {
  put_u64(out, s.device);
  put_u64(out, s.inode);
  put_u64(out, s.size);
  put_u64(out, static_cast<std::uint64_t>(s.mtime_ns));
  put_u64(out, static_cast<std::uint64_t>(s.ctime_ns));
  put_u64(out, s.mode);
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u64(std::uint64_t* v) {
    if (in_.size() - pos_ < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) {
      *v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += 8;
    return true;
  }
  bool bytes(std::size_t n, std::string_view* out) {
    if (in_.size() - pos_ < n) return false;
    *out = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool string(std::string* out) {
    std::uint64_t n = 0;
    std::string_view v;
    if (!u64(&n) || n > in_.size() - pos_ || !bytes(static_cast<std::size_t>(n), &v)) return false;
    out->assign(v);
    return true;
  }
  bool digest(Digest* out) {
    std::string_view v;
    if (!bytes(Digest::kSize, &v)) return false;
    std::memcpy(out->bytes.data(), v.data(), Digest::kSize);
    return true;
  }
  bool stamp(FileStamp* s) {
    std::uint64_t mtime = 0, ctime = 0, mode = 0;
    if (!u64(&s->device) || !u64(&s->inode) || !u64(&s->size) || !u64(&mtime) || !u64(&ctime) ||
        !u64(&mode)) {
      return false;
    }
    s->mtime_ns = static_cast<std::int64_t>(mtime);
    s->ctime_ns = static_cast<std::int64_t>(ctime);
    s->mode = static_cast<std::uint32_t>(mode);
    return true;
  }
  std::size_t left() const { return in_.size() - pos_; }

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
};

Result<std::string> read_whole(Env& env, const std::string& file) {
  auto f = env.open_readable(file);
  if (!f.is_ok()) return f.status();
  std::string out;
  std::vector<std::uint8_t> buf(1 << 16);
  std::uint64_t off = 0;
  for (;;) {
    auto n = (*f)->read_at(off, buf);
    if (!n.is_ok()) return n.status();
    if (*n == 0) break;
    out.append(reinterpret_cast<const char*>(buf.data()), *n);
    off += *n;
  }
  return out;
}

}  // namespace

FileStamp stamp_of(const FileInfo& info) {
  FileStamp s;
  s.device = info.device;
  s.inode = info.inode;
  s.size = info.size_bytes;
  s.mtime_ns = info.mtime_ns;
  s.ctime_ns = info.ctime_ns;
  s.mode = static_cast<std::uint32_t>(info.mode);
  return s;
}

ImportCache::ImportCache(std::string source) : clock(wall_clock_ns), source_(std::move(source)) {}

const CachedFile* ImportCache::find(const std::string& relative) const {
  auto it = files_.find(relative);
  return it == files_.end() ? nullptr : &it->second;
}

const CachedDir* ImportCache::find_dir(const std::string& relative) const {
  auto it = dirs_.find(relative);
  return it == dirs_.end() ? nullptr : &it->second;
}

Result<ImportCache> ImportCache::load(Env& env, const std::string& file, const std::string& source,
                                      std::string* dropped) {
  ImportCache cache(source);
  dropped->clear();
  auto info = env.stat(file);
  if (!info.is_ok()) return info.status();
  if (info->type == FileType::kMissing) return cache;
  if (info->type != FileType::kRegular) {
    *dropped = "import cache " + file + " is not a regular file";
    return cache;
  }
  auto bytes = read_whole(env, file);
  if (!bytes.is_ok()) return bytes.status();
  std::string_view all = *bytes;
  auto damaged = [&](const std::string& why) -> Result<ImportCache> {
    *dropped = "import cache " + file + " " + why + "; every file is read again";
    return ImportCache(source);
  };
  if (all.size() < kMagic.size() + Digest::kSize || all.substr(0, kMagic.size()) != kMagic) {
    return damaged("is not an import cache (or of another version)");
  }
  std::string_view body = all.substr(0, all.size() - Digest::kSize);
  Digest sum = blake2b(body);
  if (std::memcmp(sum.bytes.data(), all.data() + body.size(), Digest::kSize) != 0) {
    return damaged("fails its checksum");
  }
  Reader r(body.substr(kMagic.size()));
  std::string recorded;
  std::uint64_t count = 0;
  if (!r.string(&recorded) || !r.u64(&count)) return damaged("is truncated");
  if (recorded != source) return damaged("was written for " + recorded + ", not " + source);
  if (count > r.left() / kMinEntryBytes) return damaged("is truncated");
  cache.files_.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string path;
    CachedFile e;
    if (!r.string(&path) || !r.stamp(&e.stamp) || !r.digest(&e.digest)) {
      return damaged("is truncated");
    }
    if (!cache.files_.emplace(std::move(path), e).second) return damaged("repeats an entry");
  }
  std::uint64_t dir_count = 0;
  if (!r.u64(&dir_count) || dir_count > r.left() / kMinDirBytes) return damaged("is truncated");
  cache.dirs_.reserve(static_cast<std::size_t>(dir_count));
  for (std::uint64_t i = 0; i < dir_count; ++i) {
    std::string path;
    CachedDir d;
    std::uint64_t entries = 0;
    if (!r.string(&path) || !r.stamp(&d.stamp) || !r.digest(&d.tree) || !r.u64(&d.size_bytes) ||
        !r.u64(&d.files) || !r.u64(&entries) || entries > r.left() / kMinTreeEntryBytes) {
      return damaged("is truncated");
    }
    d.entries.resize(static_cast<std::size_t>(entries));
    for (auto& e : d.entries) {
      std::string_view kind;
      if (!r.string(&e.name) || !r.bytes(1, &kind) || !r.digest(&e.digest)) {
        return damaged("is truncated");
      }
      e.kind = static_cast<EntryKind>(kind[0]);
      if (e.kind != EntryKind::kFile && e.kind != EntryKind::kExecutable &&
          e.kind != EntryKind::kTree) {
        return damaged("has an entry of unknown kind");
      }
    }
    if (!cache.dirs_.emplace(std::move(path), std::move(d)).second) {
      return damaged("repeats a directory");
    }
  }
  if (r.left() != 0) return damaged("has bytes after its entries");
  return cache;
}

Status ImportCache::save(Env& env, const std::string& file) {
  // Sorted, so the same cache is always the same bytes.
  std::map<std::string_view, const CachedFile*> sorted;
  for (const auto& [path, e] : files_) sorted.emplace(path, &e);
  std::map<std::string_view, const CachedDir*> sorted_dirs;
  for (const auto& [path, d] : dirs_) sorted_dirs.emplace(path, &d);
  std::string out(kMagic);
  put_string(out, source_);
  put_u64(out, sorted.size());
  for (const auto& [path, e] : sorted) {
    put_string(out, path);
    put_stamp(out, e->stamp);
    put_digest(out, e->digest);
  }
  put_u64(out, sorted_dirs.size());
  for (const auto& [path, d] : sorted_dirs) {
    put_string(out, path);
    put_stamp(out, d->stamp);
    put_digest(out, d->tree);
    put_u64(out, d->size_bytes);
    put_u64(out, d->files);
    put_u64(out, d->entries.size());
    for (const auto& e : d->entries) {
      put_string(out, e.name);
      out.push_back(static_cast<char>(e.kind));
      put_digest(out, e.digest);
    }
  }
  put_digest(out, blake2b(out));

  std::string tmp = file + ".tmp";
  VOW_RETURN_IF_ERROR(env.remove_file(tmp));
  auto f = env.new_writable(tmp, 0644);
  if (!f.is_ok()) return f.status();
  Status s = (*f)->append({reinterpret_cast<const std::uint8_t*>(out.data()), out.size()});
  if (s.is_ok()) s = (*f)->close();
  if (s.is_ok()) s = env.rename(tmp, file);
  if (!s.is_ok()) {
    f->reset();
    (void)env.remove_file(tmp);
    return s;
  }
  dirty_ = false;
  return Status::ok();
}

}  // namespace vow::store
