// ArtifactStore::materialize: artifacts into a job's work directory, read-only.
#include <filesystem>
#include <system_error>

#include "store/artifact_store.h"

namespace vow::store {

// ---------------------------------------------------------------------------------------
// ArtifactStore: materializing

Status ArtifactStore::materialize(const Digest& digest, const std::string& dest,
                                  const MaterializeOptions& options) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  auto info = env_.stat(dest);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kMissing) {
    return Status::invalid("materialize " + digest.short_hex() + ": " + dest + " already exists");
  }
  if (rec->kind == ArtifactKind::kFile) return materialize_file(digest, dest, false, options);
  auto x = expansion(digest);
  if (!x.is_ok()) return x.status();
  VOW_RETURN_IF_ERROR(check_expansion(digest, *x));
  return materialize_tree(digest, dest, 0, options);
}

Result<std::string> ArtifactStore::read_placed(const Digest& digest, std::uint64_t max_bytes) {
  const std::string src = object_path(digest, ArtifactKind::kFile);
  auto info = env_.stat(src);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) {
    return Status::not_found("artifact " + digest.hex() + " is not held");
  }
  if (info->size_bytes > max_bytes) {
    return Status::invalid("artifact " + digest.hex() + " is not indexed and too large to be "
                           "taken unindexed");
  }
  auto in = env_.open_readable(src);
  if (!in.is_ok()) return in.status();
  std::string bytes(info->size_bytes, '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    auto n = (*in)->read_at(
        got, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(bytes.data()) + got,
                                     bytes.size() - got));
    if (!n.is_ok()) return n.status();
    if (*n == 0) break;
    got += *n;
  }
  if (got != bytes.size() || blake2b(bytes) != digest) {
    return Status::corrupt("artifact " + digest.hex() + " in place does not hash to its name");
  }
  return bytes;
}

Status ArtifactStore::materialize_placed(const Digest& digest, const std::string& dest,
                                         std::uint64_t max_bytes) {
  auto bytes = read_placed(digest, max_bytes);
  if (!bytes.is_ok()) return bytes.status();
  auto linked = env_.link(object_path(digest, ArtifactKind::kFile), dest);
  if (!linked.is_ok()) return linked.status();
  if (*linked) return Status::ok();
  auto out = env_.new_writable(dest, 0444);
  if (!out.is_ok()) return out.status();
  Status s = (*out)->append(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(bytes->data()), bytes->size()));
  if (s.is_ok()) s = (*out)->close();
  if (s.is_ok()) s = env_.chmod(dest, 0444);
  if (!s.is_ok()) {
    out->reset();
    (void)env_.remove_file(dest);
  }
  return s;
}

Status ArtifactStore::store_placed(const Digest& digest, std::uint64_t max_bytes) {
  auto bytes = read_placed(digest, max_bytes);
  if (!bytes.is_ok()) return bytes.status();
  auto stored = put_placed(*bytes);
  if (!stored.is_ok()) return stored.status();
  return *stored == digest ? Status::ok()
                           : Status::corrupt("artifact " + digest.hex() + " stored as " +
                                             stored->hex());
}

Status ArtifactStore::materialize_file(const Digest& digest, const std::string& dest,
                                       bool executable, const MaterializeOptions& options) {
  auto rec = require(digest);
  if (!rec.is_ok()) return rec.status();
  if (rec->kind != ArtifactKind::kFile) {
    return Status::corrupt("artifact " + digest.hex() + " is a tree where a file was expected");
  }
  std::string src = object_path(digest, ArtifactKind::kFile);
  if (!executable && options.verify && recently_verified(digest)) {
    // Hashed by this store moments ago (written, or fetched through a stream that
    // checked every byte) and its file unchanged since: linked without reading it.
    auto linked = env_.link(src, dest);
    if (!linked.is_ok()) return linked.status();
    if (*linked) {
      touch(digest);
      return Status::ok();
    }
  }
  auto reader = open_reader(digest);
  if (!reader.is_ok()) return reader.status();
  if (!executable) {
    // The object's inode (mode 0444) is shared: verify it once, then link.
    if (options.verify) {
      VOW_RETURN_IF_ERROR((*reader)->verify_whole());
      remember_verified(digest);
    }
    auto linked = env_.link(src, dest);
    if (!linked.is_ok()) return linked.status();
    if (*linked) return Status::ok();
  }
  auto out = env_.new_writable(dest, executable ? 0555 : 0444);
  if (!out.is_ok()) return out.status();
  std::vector<std::uint8_t> buf = chunk_buffer((*reader)->size());
  Status s;
  for (;;) {
    auto n = (*reader)->read_next(buf);  // verifies at the end
    if (!n.is_ok()) {
      s = n.status();
      break;
    }
    if (*n == 0) break;
    s = (*out)->append(std::span<const std::uint8_t>(buf).subspan(0, *n));
    if (!s.is_ok()) break;
  }
  if (s.is_ok()) s = (*out)->close();
  if (s.is_ok()) s = env_.chmod(dest, executable ? 0555 : 0444);  // umask may have cut bits
  if (!s.is_ok()) {
    out->reset();
    (void)env_.remove_file(dest);
  }
  return s;
}

Status ArtifactStore::materialize_tree(const Digest& digest, const std::string& dest, int depth,
                                       const MaterializeOptions& options) {
  if (depth > kMaxTreeDepth) return Status::corrupt("tree " + digest.hex() + " nested too deep");
  auto entries = read_tree(digest);
  if (!entries.is_ok()) return entries.status();
  VOW_RETURN_IF_ERROR(env_.make_dir(dest, 0755));
  for (const auto& e : *entries) {
    std::string child = dest + "/" + e.name;
    if (e.kind == EntryKind::kTree) {
      VOW_RETURN_IF_ERROR(materialize_tree(e.digest, child, depth + 1, options));
    } else {
      VOW_RETURN_IF_ERROR(
          materialize_file(e.digest, child, e.kind == EntryKind::kExecutable, options));
    }
  }
  return env_.chmod(dest, 0555);
}

Status make_writable_recursive(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto st = fs::symlink_status(path, ec);
  if (ec || st.type() != fs::file_type::directory) return Status::ok();
  fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
  if (ec) return Status::io("chmod " + path + ": " + ec.message());
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->symlink_status(ec).type() == fs::file_type::directory) {
      VOW_RETURN_IF_ERROR(make_writable_recursive(it->path().string()));
    }
  }
  if (ec) return Status::io("list " + path + ": " + ec.message());
  return Status::ok();
}

}  // namespace vow::store
