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

// What a check is to do, decided on the loop.
struct CheckPlan {
  bool full = true;                      // walk everything (else only `changed` and above)
  // The file objects of the version last published (sorted): the others of the new
  // snapshot go with it if small (new_small_files).
  std::shared_ptr<const std::vector<Digest>> known_files;
  store::ChangedDirs changed;            // the directories inotify named since the last check
  std::vector<std::string> watch_roots;  // directories to watch, with all under them
  bool watch_parent = false;
  int inotify_fd = -1;
};

constexpr std::uint32_t kWatchMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                     IN_MOVED_TO | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF |
                                     IN_MOVE_SELF;

// On the worker: watches each directory of ROOTS (relative to the source at SOURCE) and
// every directory under it, and with PARENT the source's parent; adds to FOUND every
// directory watched. A watch added twice is the same watch, so asking again is harmless.
WatchesAdded add_watches(int fd, const std::string& source, const std::vector<std::string>& roots,
                         bool parent, store::ChangedDirs* found) {
  WatchesAdded out;
  // Whether PATH is watched now; a directory gone meanwhile is no loss (its parent's
  // event named it), anything else is.
  auto add = [&](const std::string& path, const std::string& relative) {
    if (out.dirs.size() > kMaxWatches) {
      out.complete = false;
      return false;
    }
    int wd = ::inotify_add_watch(fd, path.c_str(), kWatchMask | IN_DONT_FOLLOW);
    if (wd < 0) {
      if (errno != ENOENT && errno != ENOTDIR) out.complete = false;
      return false;
    }
    out.dirs.emplace_back(wd, relative);
    found->insert(relative);
    return true;
  };
  if (parent) {
    out.parent = ::inotify_add_watch(fd, fs::path(source).parent_path().c_str(), kWatchMask);
    if (out.parent < 0) out.complete = false;
  }
  for (const auto& root : roots) {
    std::string path = root.empty() ? source : source + "/" + root;
    if (!add(path, root)) continue;
    std::error_code ec;
    if (!fs::is_directory(fs::symlink_status(path, ec))) continue;
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->symlink_status(ec).type() != fs::file_type::directory) continue;
      std::string p = it->path().string();
      add(p, p.substr(source.size() + 1));
    }
    // The walk stopped early (a directory gone or unreadable): some may lack a watch.
    if (ec) out.complete = false;
  }
  return out;
}

// The file objects of REF: its own digest for a file, its file entries' for a tree.
std::vector<Digest> file_digests(const ArtifactRef& ref) {
  std::vector<Digest> out;
  if (!ref.is_tree) {
    out.push_back(ref.digest);
  } else {
    for (const auto& e : ref.entries) {
      if (e.kind != EntryKind::kFile) continue;
      out.push_back(e.digest);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// On the worker, after the import: the bytes of REF's file objects (FILES, sorted) that
// KNOWN (sorted; null: none) does not hold and that are at most
// promises::kMaxAttachedBytes each, together at most promises::kMaxAttachedBatchBytes,
// read back from the store: they go to every peer with the version (docs/coordination.md,
// "Small outputs travel with their result"). A file past the limit is only stat'ed, and
// at most kMaxOwnAttached new files are looked at (a first snapshot of a large source
// costs at most that many stats more).
std::vector<promises::Attached> new_small_files(store::ArtifactStore* store, const ArtifactRef& ref,
                                                const std::vector<Digest>& files,
                                                const std::vector<Digest>* known) {
  std::vector<promises::Attached> out;
  if (!ref.is_tree && ref.size_bytes > promises::kMaxAttachedBytes) return out;
  std::size_t total = 0;
  std::size_t looked = 0;
  for (const Digest& d : files) {
    if (known != nullptr && std::binary_search(known->begin(), known->end(), d)) continue;
    if (++looked > kMaxOwnAttached) break;
    auto bytes = store->read_placed(d, promises::kMaxAttachedBytes);
    if (!bytes.is_ok()) continue;  // larger, or gone: fetched as before
    if (total + bytes->size() > promises::kMaxAttachedBatchBytes) break;
    total += bytes->size();
    out.push_back(promises::Attached{d, std::move(*bytes)});
  }
  return out;
}

// On the worker: adds the watches PLAN asks for, loads the source's cache if it is not
// loaded yet, imports the source through it (reading only what changed; with a partial
// plan looking only into the directories named, and the new ones just watched) and
// saves the cache if the import changed it.
SourceCheck check_source(store::ArtifactStore* store, SourceCacheSlot* slot,
                         const std::string& path, const std::string& cache_file, CheckPlan plan) {
  SourceCheck out;
  // Watched before the import walks them, so a change after the walk is an event.
  if (!plan.watch_roots.empty()) {
    out.watches =
        add_watches(plan.inotify_fd, path, plan.watch_roots, plan.watch_parent, &plan.changed);
  }
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
  if (plan.full) {
    // A whole walk (the first snapshot, a rescan) stores what it reads as one group:
    // the new objects' bytes synced together, then renamed, then their directories
    // synced, a round per kMaxGroupObjects, rather than two or three syncs each (2.8 a
    // file, all before the first job could start: BENCHMARKS.md).
    Status stored = store->import_together([&]() -> Status {
      out.ref = store->import_path(path, *slot->cache, &out.stats, nullptr);
      return out.ref.status();
    });
    store->settle_group_import(*slot->cache, stored.is_ok());
    if (out.ref.is_ok() && !stored.is_ok()) out.ref = stored;
  } else {
    out.ref = store->import_path(path, *slot->cache, &out.stats, &plan.changed);
  }
  if (out.ref.is_ok()) {
    out.files = std::make_shared<const std::vector<Digest>>(file_digests(*out.ref));
    out.attached = new_small_files(store, *out.ref, *out.files, plan.known_files.get());
  }
  // The file only spares reads after a restart (the cache in memory is what checks use),
  // and writing it costs what the whole cache holds: after a partial walk it is written
  // by a task of its own once the snapshot has been handed over (save_source_cache), so
  // that the snapshot does not wait for it.
  out.unsaved = out.ref.is_ok() && slot->cache->dirty() && !plan.full;
  if (out.ref.is_ok() && slot->cache->dirty() && plan.full) {
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
  // Sources with watch = true are checked when inotify reports a change under them; the
  // first check of each adds the watches (inotify is not recursive) on the worker. Every
  // kSourcePollMs a source is walked anyway where inotify is unavailable or cannot watch
  // all of it, and every kSourceRescanMs where it can (a change it missed, e.g. on a
  // network filesystem).
  inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) log->warn("inotify unavailable ({}): sources are polled", errno_text());
  poll_sources();
}

// On the worker, after a partial walk changed the cache: its file written (the source
// counts as importing meanwhile: the cache is the worker's while it is set).
void Daemon::Impl::save_source_cache(std::size_t i) {
  WatchedSource& src = sources[i];
  src.importing = true;
  std::string file = source_cache_file(state_dir, src.decl);
  Status submitted = background->submit([this, i, file, slot = src.cache]() -> std::function<void()> {
    Status saved = Status::ok();
    if (slot->cache && slot->cache->dirty()) {
      store::Env& env = store::posix_env();
      saved = env.make_dir(file.substr(0, file.rfind('/')), 0755);
      if (saved.is_ok()) saved = slot->cache->save(env, file);
    }
    return [this, i, saved] {
      WatchedSource& s = sources[i];
      s.importing = false;
      if (!saved.is_ok()) {
        log->warn("source {}/{}: import cache not saved: {}", s.decl.pipeline, s.decl.source,
                  saved.to_string());
      }
    };
  });
  // The worker is full: the next full walk, or the stop, writes it.
  if (!submitted.is_ok()) src.importing = false;
}

void Daemon::Impl::save_source_caches() {
  store::Env& env = store::posix_env();
  for (const auto& s : sources) {
    if (!s.cache || !s.cache->cache || !s.cache->cache->dirty()) continue;
    std::string file = source_cache_file(state_dir, s.decl);
    Status saved = env.make_dir(file.substr(0, file.rfind('/')), 0755);
    if (saved.is_ok()) saved = s.cache->cache->save(env, file);
    if (!saved.is_ok()) {
      log->warn("source {}/{}: import cache not saved: {}", s.decl.pipeline, s.decl.source,
                saved.to_string());
    }
  }
}

void Daemon::Impl::walk_all_of(std::size_t i) {
  WatchedSource& s = sources[i];
  s.walk_all = true;
  s.changed_dirs.clear();
  s.new_dirs.clear();
  s.next_check_ms = std::min(s.next_check_ms, now_ms() + kSourceSettleMs);
}

void Daemon::Impl::mark_source_dir(std::size_t i, const std::string& relative, bool created) {
  WatchedSource& s = sources[i];
  s.next_check_ms = std::min(s.next_check_ms, now_ms() + kSourceSettleMs);
  if (s.walk_all) return;  // everything is looked at anyway
  if (s.changed_dirs.size() >= kMaxChangedDirs) return walk_all_of(i);
  s.changed_dirs.insert(relative);
  if (created) s.new_dirs.insert(relative);
}

void Daemon::Impl::unwatch_source_dirs(std::size_t i, const std::string& relative) {
  auto& dirs = sources[i].dir_watches;
  auto drop = [&](std::map<std::string, int>::iterator it) {
    int wd = it->second;
    auto [lo, hi] = watches.equal_range(wd);
    std::size_t others = 0;
    for (auto w = lo; w != hi;) {
      if (w->second.source == i && w->second.only.empty()) {
        w = watches.erase(w);
      } else {
        ++w, ++others;
      }
    }
    if (others == 0) ::inotify_rm_watch(inotify_fd, wd);
    return dirs.erase(it);
  };
  if (auto it = dirs.find(relative); it != dirs.end()) drop(it);
  // Below RELATIVE: the names from RELATIVE + "/" up to (not including) RELATIVE + "0".
  std::string below = relative + "/";
  for (auto it = dirs.lower_bound(below);
       it != dirs.end() && it->first.compare(0, below.size(), below) == 0;) {
    it = drop(it);
  }
}

void Daemon::Impl::on_source_event(SourceWatch& watch, int wd, std::uint32_t mask,
                                   const std::string& name) {
  const std::size_t i = watch.source;
  if (!watch.only.empty()) {
    // The parent: the source itself created, removed or replaced.
    if (name == watch.only) walk_all_of(i);
    return;
  }
  if (mask & IN_UNMOUNT) return walk_all_of(i);
  if (mask & IN_IGNORED) {
    // The watch is gone. After IN_DELETE_SELF the directory is (its parent's event named
    // it); otherwise a watch was lost and only a walk of everything can say what changed.
    auto& dirs = sources[i].dir_watches;
    if (auto d = dirs.find(watch.relative); d != dirs.end() && d->second == wd) dirs.erase(d);
    if (!watch.deleted) walk_all_of(i);
    return;
  }
  if (mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
    if (watch.relative.empty()) return walk_all_of(i);  // the source itself
    if (mask & IN_DELETE_SELF) watch.deleted = true;
    return;  // a directory below: its parent's IN_DELETE or IN_MOVED_FROM names it
  }
  mark_source_dir(i, watch.relative, false);
  if (name.empty() || !(mask & IN_ISDIR)) return;
  std::string child = watch.relative.empty() ? name : watch.relative + "/" + name;
  if (mask & (IN_CREATE | IN_MOVED_TO)) {
    mark_source_dir(i, child, true);
  } else if (mask & IN_MOVED_FROM) {
    // Its watches follow it wherever it went, with names that are no longer its.
    unwatch_source_dirs(i, child);
  }
}

void Daemon::Impl::on_inotify() {
  alignas(inotify_event) char buf[16384];
  ssize_t n;
  while ((n = ::read(inotify_fd, buf, sizeof(buf))) > 0) {
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        // Events were lost: any directory of any source may have changed.
        for (std::size_t i = 0; i < sources.size(); ++i) {
          if (sources[i].decl.watch) walk_all_of(i);
        }
        continue;
      }
      auto [lo, hi] = watches.equal_range(ev->wd);
      if (lo == hi) {
        // A watch a check in flight has just added: placed when the check hands it over.
        if (watch_checks == 0 || (ev->mask & IN_IGNORED)) continue;
        if (stray_watches.size() < kMaxWatches) {
          stray_watches.insert(ev->wd);
        } else {
          for (std::size_t i = 0; i < sources.size(); ++i) {
            if (sources[i].decl.watch) walk_all_of(i);
          }
        }
        continue;
      }
      std::string name = ev->len > 0 ? std::string(ev->name) : std::string();
      // Handling one may drop the watches of other directories (a directory moved away),
      // never this one's: its entries stay where they are until the loop is done.
      std::vector<SourceWatch*> targets;
      for (auto it = lo; it != hi; ++it) targets.push_back(&it->second);
      for (SourceWatch* w : targets) on_source_event(*w, ev->wd, ev->mask, name);
      if (ev->mask & IN_IGNORED) watches.erase(ev->wd);
    }
  }
}

// On the loop: takes over the watches a check added for source I.
void Daemon::Impl::place_watches(std::size_t i, const WatchesAdded& added, bool full) {
  WatchedSource& s = sources[i];
  bool complete = added.complete;
  for (const auto& [wd, relative] : added.dirs) {
    auto [lo, hi] = watches.equal_range(wd);
    auto mine = std::find_if(
        lo, hi, [i](const auto& w) { return w.second.source == i && w.second.only.empty(); });
    if (mine == hi) {
      if (watches.size() >= kMaxWatches) {
        if (lo == hi) ::inotify_rm_watch(inotify_fd, wd);
        complete = false;
        continue;
      }
      mine = watches.emplace(wd, SourceWatch{i, "", relative, false});
    } else if (mine->second.relative != relative) {
      // The same directory under another name (moved while no event said so).
      if (auto d = s.dir_watches.find(mine->second.relative);
          d != s.dir_watches.end() && d->second == wd) {
        s.dir_watches.erase(d);
      }
      mine->second.relative = relative;
    }
    s.dir_watches[relative] = wd;
    // Events came for it before it was known here: look into it, and all below it.
    if (stray_watches.erase(wd) > 0) mark_source_dir(i, relative, true);
  }
  if (added.parent >= 0) {
    std::string name = fs::path(s.path).filename().string();
    auto [lo, hi] = watches.equal_range(added.parent);
    bool known = std::any_of(
        lo, hi, [&](const auto& w) { return w.second.source == i && w.second.only == name; });
    if (!known) watches.emplace(added.parent, SourceWatch{i, name, "", false});
  }
  // A full walk asked for every directory, so it says whether all are watched; a
  // partial one only whether those it asked for are.
  if (full) {
    s.watched = complete;
  } else if (!complete) {
    s.watched = false;
  }
}

void Daemon::Impl::poll_sources() {
  std::int64_t now = now_ms();
  bool events_read = false;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    WatchedSource& src = sources[i];
    if (src.importing) continue;
    bool asked = src.refresh_asked > src.refresh_started;  // by `vow wait`: now
    if (!asked && now < src.next_check_ms) continue;
    if (!asked && src.snapshotted && !src.decl.watch) continue;
    // Events already queued (a change just before `vow wait`) belong to this check.
    if (!events_read && inotify_fd >= 0) on_inotify();
    events_read = true;
    start_source_check(i, now);
  }
}

void Daemon::Impl::start_source_check(std::size_t i, std::int64_t now) {
  WatchedSource& src = sources[i];
  src.importing = true;
  std::uint64_t started_before = src.refresh_started;
  std::uint64_t ticket = src.refresh_asked;
  src.refresh_started = ticket;
  // With every directory watched, a check looks only where inotify saw a change; it
  // walks everything first (the watches are added then), when events or a watch were
  // lost, and every kSourceRescanMs (the safety net).
  const bool watching = src.decl.watch && inotify_fd >= 0;
  CheckPlan plan;
  plan.inotify_fd = inotify_fd;
  plan.full = !watching || src.walk_all || !src.watched || now >= src.next_full_walk_ms;
  if (plan.full) {
    if (watching) {
      plan.watch_roots = {""};
      plan.watch_parent = true;
    }
    src.next_full_walk_ms = now + kSourceRescanMs;
  } else {
    plan.changed = std::move(src.changed_dirs);
    plan.watch_roots.assign(src.new_dirs.begin(), src.new_dirs.end());
  }
  src.changed_dirs.clear();
  src.new_dirs.clear();
  src.walk_all = false;
  plan.known_files = src.reported_files;
  const bool full = plan.full;
  const bool adds_watches = !plan.watch_roots.empty();
  if (adds_watches) ++watch_checks;
  store::ArtifactStore* w = worker->artifacts.get();
  std::string path = src.path;
  std::string cache_file = source_cache_file(state_dir, src.decl);
  Status submitted =
      background->submit([this, w, i, path, cache_file, slot = src.cache, ticket, full,
                          adds_watches, plan = std::move(plan)]() mutable -> std::function<void()> {
        const auto began = std::chrono::steady_clock::now();
        auto check = std::make_shared<SourceCheck>(
            check_source(w, slot.get(), path, cache_file, std::move(plan)));
        check->full = full;
        check->took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - began)
                             .count();
        return [this, i, check, ticket, full, adds_watches] {
          if (adds_watches) {
            place_watches(i, check->watches, full);
            if (--watch_checks == 0) stray_watches.clear();
          }
          finish_source_check(i, *check, ticket);
        };
      });
  if (!submitted.is_ok()) {
    // The worker is full: look again at the next poll, at everything.
    if (adds_watches) --watch_checks;
    src.refresh_started = started_before;
    src.importing = false;
    src.walk_all = true;
    src.next_check_ms = now + kSourceSettleMs;
    log->warn("source {}/{}: {}; checked again shortly", src.decl.pipeline, src.decl.source,
              submitted.to_string());
  }
}

void Daemon::Impl::finish_source_check(std::size_t i, const SourceCheck& check,
                                       std::uint64_t ticket) {
  WatchedSource& s = sources[i];
  s.importing = false;
  if (check.unsaved) save_source_cache(i);
  // A walk of everything is only the safety net for a change inotify missed: rarely. Not
  // while the source changes: a check that read files looks again soon (files modified
  // within the racy window are read again, and the import cache remembers them only
  // then). Sooner if inotify saw a change while it ran. Walks of everything are spaced by
  // what the last one took (kSourceRescanShare, kSourcePollShare): a large source's
  // safety net costs its agent little.
  const bool watched = inotify_fd >= 0 && s.decl.watch && s.watched;
  const bool changing = !check.ref.is_ok() || check.stats.files_read > 0;
  const std::int64_t now = now_ms();
  if (check.full) {
    s.next_full_walk_ms =
        std::max(s.next_full_walk_ms, now + source_walk_spacing(kSourceRescanMs, kSourceRescanShare,
                                                                check.took_ms));
  }
  if (changing) {
    s.next_check_ms = now + kSourcePollMs;
  } else if (watched) {
    s.next_check_ms = std::max(now + kSourcePollMs, s.next_full_walk_ms);
  } else {
    s.next_check_ms = now + source_walk_spacing(kSourcePollMs, kSourcePollShare, check.took_ms);
  }
  if (s.walk_all || !s.changed_dirs.empty()) {
    s.next_check_ms = std::min(s.next_check_ms, now + kSourceSettleMs);
  }
  // The cache did not take what was named: the next check (kSourcePollMs from now, as
  // after any failure) walks everything.
  if (!check.ref.is_ok()) s.walk_all = true;
  for (const auto& note : check.notes) {
    log->warn("source {}/{}: {}", s.decl.pipeline, s.decl.source, note);
  }
  const auto& ref = check.ref;
  if (!ref.is_ok()) {
    s.refresh_done = std::max(s.refresh_done, ticket);
    // Logged when it appears or changes, not at every check; vow status and /metrics
    // show it meanwhile.
    std::string error = ref.status().to_string();
    if (error != s.error) {
      log->error("source {}/{} at {}: {}", s.decl.pipeline, s.decl.source, s.path, error);
      if (s.error.empty()) s.error_since_ms = wall_ms();
      s.error = std::move(error);
    }
    return;
  }
  if (!s.error.empty()) {
    log->info("source {}/{} at {}: readable again", s.decl.pipeline, s.decl.source, s.path);
    s.error.clear();
    s.error_since_ms = 0;
  }
  s.last_ok_ms = wall_ms();
  s.snapshotted = true;
  if (s.reported != ref->digest) {
    const auto& st = check.stats;
    log->info(
        "source {}/{} snapshot {} ({} bytes; {} of {} files read, {} bytes; {} directories "
        "walked, {} taken whole)",
        s.decl.pipeline, s.decl.source, ref->digest.short_hex(), ref->size_bytes, st.files_read,
        st.files, st.bytes_read, st.dirs_walked, st.dirs_reused);
    s.reported = ref->digest;
    s.reported_files = check.files;
    agent->source_snapshot(s.decl.pipeline, s.decl.source, *ref, check.attached);
    if (agent->held()) {
      // The core has the new version when the agent is released, at the end of this
      // turn of the loop: the check is done then, not before.
      refreshed_at_release.emplace_back(i, ticket);
      return;
    }
  }
  s.refresh_done = std::max(s.refresh_done, ticket);
}

}  // namespace vow::agent
