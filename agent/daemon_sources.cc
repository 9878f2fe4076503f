// Sources (docs/coordination.md): datasets this agent provides, snapshotted into the store
// when they change (inotify, with polling as the fallback) and fed to the agent; and
// serving stored objects to peers' fetches.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "agent/daemon_internal.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Serves a stored object by positional reads (the receiver verifies the digest).
class FileSource final : public transport::ChunkSource {
 public:
  FileSource(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
  ~FileSource() override { ::close(fd_); }
  std::uint64_t size() const override { return size_; }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    return pread_full(fd_, offset, out, "a stored object");
  }

 private:
  int fd_;
  std::uint64_t size_;
};

class StoreProvider final : public transport::ArtifactProvider {
 public:
  explicit StoreProvider(std::string root) : root_(std::move(root)) {}
  Result<std::unique_ptr<transport::ChunkSource>> open(const Digest& artifact) override {
    for (auto kind : {store::ArtifactKind::kFile, store::ArtifactKind::kTree}) {
      std::string path = store::object_path(root_, artifact, kind);
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      struct stat st {};
      if (::fstat(fd, &st) != 0) {
        ::close(fd);
        return Status::io("stat " + path + ": " + errno_text());
      }
      return std::unique_ptr<transport::ChunkSource>(
          new FileSource(fd, static_cast<std::uint64_t>(st.st_size)));
    }
    return Status::not_found("artifact " + artifact.hex() + " is not held here");
  }

 private:
  std::string root_;
};

}  // namespace

Status pread_full(int fd, std::uint64_t offset, std::span<std::uint8_t> out,
                  const std::string& what) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return Status::io("read " + what + ": " + (n == 0 ? "short" : std::strerror(errno)));
    }
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

std::unique_ptr<transport::ArtifactProvider> make_store_provider(const std::string& state_dir) {
  return std::make_unique<StoreProvider>(store::artifacts_root(state_dir));
}

// ---- sources ----

namespace {

// STATE_DIR/sources/<32 hex>.cache: the import cache of one declared source, named by
// its pipeline and source names.
std::string source_cache_file(const std::string& state_dir, const promises::SourceDecl& decl) {
  Hasher h;
  h.update_field(decl.pipeline);
  h.update_field(decl.source);
  return state_dir + "/sources/" + h.finish().hex().substr(0, 32) + ".cache";
}

// What one check of a source did, handed from the worker to the loop.
struct SourceCheck {
  Result<ArtifactRef> ref = Status::invalid("not checked");
  store::ImportStats stats;
  std::vector<std::string> notes;  // the cache dropped or not saved: for the log
};

// On the worker: loads the source's cache if it is not loaded yet, imports the source
// through it (reading only what changed) and saves the cache if the import changed it.
SourceCheck check_source(store::ArtifactStore* store, SourceCacheSlot* slot,
                         const std::string& path, const std::string& cache_file) {
  SourceCheck out;
  store::Env& env = store::posix_env();
  if (!slot->cache) {
    std::string dropped;
    auto loaded = store::ImportCache::load(env, cache_file, path, &dropped);
    if (!dropped.empty()) out.notes.push_back(dropped);
    if (loaded.is_ok()) {
      slot->cache = std::make_unique<store::ImportCache>(std::move(loaded).value());
    } else {
      out.notes.push_back("import cache not read (" + loaded.status().to_string() +
                          "); every file is read again");
      slot->cache = std::make_unique<store::ImportCache>(path);
    }
  }
  out.ref = store->import_path(path, *slot->cache, &out.stats);
  if (out.ref.is_ok() && slot->cache->dirty()) {
    std::string dir = cache_file.substr(0, cache_file.rfind('/'));
    Status saved = env.make_dir(dir, 0755);
    if (saved.is_ok()) saved = slot->cache->save(env, cache_file);
    // Not fatal: the next check compares with what is in memory; after a restart the
    // files are read again.
    if (!saved.is_ok()) out.notes.push_back("import cache not saved: " + saved.to_string());
  }
  // A version too large to sign would stop the agent when it is published: refuse it
  // here, with what to do about it. Encoded only when a bound on its size (each entry's
  // name and at most 128 bytes besides) says it could be too large.
  std::size_t bound = 4096;
  if (out.ref.is_ok()) {
    for (const auto& e : out.ref->entries) bound += e.name.size() + 128;
  }
  if (out.ref.is_ok() && bound > transport::kMaxStatementBytes) {
    Statement probe;
    probe.author.bytes.fill(1);
    probe.seq = 1;
    probe.body = SourceVersion{std::string(64, 'p'), std::string(64, 's'), ~0ull, *out.ref,
                               AttestationSignature{}};
    auto bytes = transport::encode_statement(probe);
    if (!bytes.is_ok()) {
      out.ref = Status::invalid(
          "its " + std::to_string(out.ref->entries.size()) +
          " top-level entries make a source version over the limit of one statement (" +
          std::to_string(transport::kMaxStatementBytes >> 20) +
          " MiB): not published; group the files into subdirectories (a subdirectory is one "
          "entry of the version, whatever it holds)");
    }
  }
  return out;
}

}  // namespace

void Daemon::Impl::start_sources() {
  for (const auto& decl : config.sources) {
    WatchedSource w;
    w.decl = decl;
    w.path = decl.path;
    sources.push_back(std::move(w));
  }
  // Sources with watch = true are checked when inotify reports a change under them
  // (and every kSourcePollMs anyway, the fallback where inotify is unavailable or a
  // change escapes it, e.g. on a network filesystem).
  inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) log->warn("inotify unavailable ({}): sources are polled", errno_text());
  watch_source_dirs();
  poll_sources();
}

// Adds watches on every directory under the watched sources (inotify is not recursive);
// called again after each change, so new subdirectories are watched too.
void Daemon::Impl::watch_source_dirs() {
  if (inotify_fd < 0) return;
  constexpr std::uint32_t kMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                  IN_MOVED_TO | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF |
                                  IN_MOVE_SELF;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    const auto& src = sources[i];
    if (!src.decl.watch) continue;
    auto add = [&](const std::string& path, const std::string& only) {
      if (watches.size() >= kMaxWatches) return;
      int wd = ::inotify_add_watch(inotify_fd, path.c_str(), kMask);
      if (wd >= 0) watches[wd] = {i, only};
    };
    std::error_code ec;
    add(src.path, "");
    // The parent too, for the source's own name: a source replaced by rename.
    fs::path p(src.path);
    add(p.parent_path().string(), p.filename().string());
    if (!fs::is_directory(src.path, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(src.path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec)) add(it->path().string(), "");
    }
  }
}

void Daemon::Impl::on_inotify() {
  alignas(inotify_event) char buf[16384];
  std::set<std::size_t> changed;
  ssize_t n;
  while ((n = ::read(inotify_fd, buf, sizeof(buf))) > 0) {
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      auto it = watches.find(ev->wd);
      if (it == watches.end()) continue;
      const auto& [index, only] = it->second;
      if (!only.empty() && (ev->len == 0 || only != ev->name)) continue;
      changed.insert(index);
    }
  }
  if (changed.empty()) return;
  std::int64_t soon = now_ms() + kSourceSettleMs;
  for (std::size_t i : changed) {
    sources[i].next_check_ms = std::min(sources[i].next_check_ms, soon);
  }
  watch_source_dirs();
}

void Daemon::Impl::poll_sources() {
  std::int64_t now = now_ms();
  for (std::size_t i = 0; i < sources.size(); ++i) {
    WatchedSource& src = sources[i];
    if (src.importing) continue;
    bool asked = src.refresh_asked > src.refresh_started;  // by `vow wait`: now
    if (!asked && now < src.next_check_ms) continue;
    if (!asked && src.snapshotted && !src.decl.watch) continue;
    src.importing = true;
    std::uint64_t started_before = src.refresh_started;
    std::uint64_t ticket = src.refresh_asked;
    src.refresh_started = ticket;
    store::ArtifactStore* w = worker->artifacts.get();
    std::string path = src.path;
    std::string cache_file = source_cache_file(state_dir, src.decl);
    // One walk of the source per check: files whose stamp is unchanged are not read, so
    // an unchanged source costs an lstat per entry and writes nothing.
    Status submitted = background->submit(
        [this, w, i, path, cache_file, slot = src.cache, ticket]() -> std::function<void()> {
          auto check = std::make_shared<SourceCheck>(check_source(w, slot.get(), path, cache_file));
          return [this, i, check, ticket] {
            WatchedSource& s = sources[i];
            s.importing = false;
            // With inotify watching every directory of it, a walk is only the safety
            // net for a change inotify missed: rarely (a walk stats every entry). Not
            // while the source changes: a check that read files looks again soon (files
            // modified within the racy window are read again, and the import cache
            // remembers them only then).
            const bool watched = inotify_fd >= 0 && watches.size() < kMaxWatches;
            const bool changing = !check->ref.is_ok() || check->stats.files_read > 0;
            s.next_check_ms =
                now_ms() + (watched && !changing ? kSourceRescanMs : kSourcePollMs);
            for (const auto& note : check->notes) {
              log->warn("source {}/{}: {}", s.decl.pipeline, s.decl.source, note);
            }
            const auto& ref = check->ref;
            if (!ref.is_ok()) {
              s.refresh_done = std::max(s.refresh_done, ticket);
              // Logged when it appears or changes, not at every check; vow status and
              // /metrics show it meanwhile.
              std::string error = ref.status().to_string();
              if (error != s.error) {
                log->error("source {}/{} at {}: {}", s.decl.pipeline, s.decl.source, s.path,
                           error);
                if (s.error.empty()) s.error_since_ms = wall_ms();
                s.error = std::move(error);
              }
              return;
            }
            if (!s.error.empty()) {
              log->info("source {}/{} at {}: readable again", s.decl.pipeline, s.decl.source,
                        s.path);
              s.error.clear();
              s.error_since_ms = 0;
            }
            s.last_ok_ms = wall_ms();
            s.snapshotted = true;
            if (s.reported != ref->digest) {
              const auto& st = check->stats;
              log->info("source {}/{} snapshot {} ({} bytes; {} of {} files read, {} bytes)",
                        s.decl.pipeline, s.decl.source, ref->digest.short_hex(), ref->size_bytes,
                        st.files_read, st.files, st.bytes_read);
              s.reported = ref->digest;
              // The core has the new version once this returns: then the check is done.
              agent->source_snapshot(s.decl.pipeline, s.decl.source, *ref);
            }
            s.refresh_done = std::max(s.refresh_done, ticket);
          };
        });
    if (!submitted.is_ok()) {
      // The worker is full: look again at the next poll.
      src.refresh_started = started_before;
      src.importing = false;
      src.next_check_ms = now + kSourceSettleMs;
      log->warn("source {}/{}: {}; checked again shortly", src.decl.pipeline, src.decl.source,
                submitted.to_string());
    }
  }
}

}  // namespace vow::agent
