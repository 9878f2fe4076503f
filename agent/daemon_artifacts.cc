// Hand-off and replication of artifacts between agents (DESIGN.md 4.7), and sources
// (4.3). Bytes stream over the transport into a file under STATE/incoming; the
// background worker then moves it into the store (adopt_file), which hashes it again,
// so nothing enters the store that does not match its name. A tree arrives as its
// encoding first, then each child the store lacks; the tree is stored once all its
// children are.
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

// Reads exactly out.size() bytes at `offset` (kIo naming `what` on error or end of file).
Status pread_full(int fd, std::uint64_t offset, std::span<std::uint8_t> out,
                  const std::string& what) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::io("read " + what + ": " + (n == 0 ? "short" : errno_text()));
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

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

class FileSink final : public transport::ChunkSink {
 public:
  static Result<std::unique_ptr<transport::ChunkSink>> create(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Status::io("open " + path + ": " + errno_text());
    return std::unique_ptr<transport::ChunkSink>(new FileSink(fd, path));
  }
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n =
          ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::io("write " + path_ + ": " + errno_text());
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    return pread_full(fd_, offset, out, path_);
  }
  Status finish(std::uint64_t total_bytes) override {
    if (::ftruncate(fd_, static_cast<off_t>(total_bytes)) != 0) {
      return Status::io("truncate " + path_ + ": " + errno_text());
    }
    return Status::ok();
  }
  void abort(const Status&) override { ::unlink(path_.c_str()); }

 private:
  FileSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

constexpr std::string_view kTreeTag = "vow-tree-v1\n";

}  // namespace

std::unique_ptr<transport::ArtifactProvider> make_store_provider(const std::string& state_dir) {
  return std::make_unique<StoreProvider>(store::artifacts_root(state_dir));
}

void Daemon::Impl::fetch_artifact(const Digest& digest, std::vector<AgentKey> holders,
                                  bool replicate, bool for_core) {
  if (auto it = fetches.find(digest); it != fetches.end()) {
    // Already on its way (e.g. as a child of a tree being replicated): the core must
    // still hear when it arrives, or a job waiting for it waits forever.
    if (for_core) it->second.for_core = true;
    return;
  }
  Fetch f;
  f.digest = digest;
  std::erase(holders, identity->key());
  f.holders = std::move(holders);
  f.replicate = replicate;
  f.for_core = for_core;
  if (auto it = is_tree.find(digest); it != is_tree.end()) f.is_tree = it->second;
  auto [it, inserted] = fetches.emplace(digest, std::move(f));
  fetch_next_holder(it->second, Status::ok());
}

void Daemon::Impl::fetch_next_holder(Fetch& f, const Status& why) {
  if (!why.is_ok()) log->info("fetch of {}: {}", f.digest.short_hex(), why.to_string());
  std::string dir = state_dir + "/incoming";
  std::error_code ec;
  fs::create_directories(dir, ec);
  while (f.holder < f.holders.size()) {
    AgentKey peer = f.holders[f.holder++];
    f.part_path = dir + "/" + f.digest.hex() + ".part";
    auto sink = FileSink::create(f.part_path);
    if (!sink.is_ok()) break;
    auto sid = transport->fetch(peer, f.digest, 0, std::nullopt, std::move(sink).value(), now_ms());
    if (sid.is_ok()) {
      f.stream_id = *sid;
      fetch_by_stream[*sid] = f.digest;
      return;
    }
    if (sid.status().code() == StatusCode::kOverloaded) {
      // This agent's own limit of concurrent fetches (a refusal by the peer arrives
      // later, as an outcome): wait for a place instead of failing, so a tree of many
      // files is fetched max_receiving at a time, not failed for its 65th child.
      --f.holder;
      f.stream_id = 0;
      ::unlink(f.part_path.c_str());
      fetch_queue.push_back(f.digest);
      return;
    }
    log->info("fetch of {} from {}: {}", f.digest.short_hex(),
              transport::agent_id(peer).substr(0, 12), sid.status().to_string());
  }
  fetch_stored(f.digest, Status::unavailable("no holder could send artifact " + f.digest.hex()));
}

void Daemon::Impl::start_queued_fetches() {
  // One place freed per ended fetch; a fetch that finds no place goes back in the queue.
  std::size_t n = fetch_queue.size();
  while (n-- > 0 && !fetch_queue.empty()) {
    Digest d = fetch_queue.front();
    fetch_queue.pop_front();
    auto it = fetches.find(d);
    if (it == fetches.end() || it->second.stream_id != 0) continue;
    std::size_t before = fetch_queue.size();
    fetch_next_holder(it->second, Status::ok());
    if (fetch_queue.size() > before) break;  // still no place
  }
}

// A fetch from a peer the core has declared dead would wait for the stream's idle
// timeout (5 s) before trying another holder; a job waiting for that input (often the
// one being failed over) would wait as long. Cancel it (its outcome moves the fetch on)
// and strike the peer from the holders not tried yet.
void Daemon::Impl::abandon_fetches_from(const AgentKey& peer) {
  std::vector<std::uint64_t> cancel;
  for (auto& [digest, f] : fetches) {
    if (f.holder < f.holders.size()) {
      f.holders.erase(std::remove(f.holders.begin() + static_cast<std::ptrdiff_t>(f.holder),
                                  f.holders.end(), peer),
                      f.holders.end());
    }
    if (f.stream_id == 0 || f.holder == 0 || f.holders[f.holder - 1] != peer) continue;
    if (!fetch_by_stream.count(f.stream_id)) continue;
    log->info("fetch of {} from {}: the peer is dead, trying another holder", digest.short_hex(),
              transport::agent_id(peer).substr(0, 12));
    cancel.push_back(f.stream_id);
  }
  for (auto sid : cancel) transport->cancel_fetch(sid);
}

void Daemon::Impl::on_fetch_outcome(const transport::FetchOutcome& outcome) {
  auto sit = fetch_by_stream.find(outcome.stream_id);
  if (sit == fetch_by_stream.end()) return;
  Digest digest = sit->second;
  fetch_by_stream.erase(sit);
  auto it = fetches.find(digest);
  if (it == fetches.end()) return;
  Fetch& f = it->second;
  if (!outcome.status.is_ok()) {
    fetch_next_holder(f, outcome.status);
    return;
  }
  // Verified by the stream; now into the store, off the loop.
  log->debug("artifact {} received ({} bytes): storing", digest.short_hex(), outcome.total_bytes);
  Worker* w = worker.get();
  std::string part = f.part_path;
  std::optional<bool> tree_hint = f.is_tree;
  (void)background->submit([this, w, digest, part, tree_hint]() -> std::function<void()> {
    std::string head;
    {
      std::ifstream in(part, std::ios::binary);
      head.resize(kTreeTag.size());
      in.read(head.data(), static_cast<std::streamsize>(head.size()));
      head.resize(static_cast<std::size_t>(in.gcount()));
    }
    bool tree = tree_hint.value_or(head == kTreeTag);
    if (!tree) {
      // Moved into the store, not copied (hashed again where it lies, synced, renamed).
      auto ref = w->artifacts->adopt_file(part);
      ::unlink(part.c_str());  // left behind only on failure
      Status s = ref.is_ok() ? Status::ok() : ref.status();
      if (s.is_ok() && ref->digest != digest) {
        s = Status::corrupt("artifact " + digest.hex() + " arrived with digest " +
                            ref->digest.hex());
      }
      return [this, digest, s] { fetch_stored(digest, s); };
    }
    std::ifstream in(part, std::ios::binary);
    std::string encoding((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ::unlink(part.c_str());
    auto entries = decode_tree(encoding);
    if (!entries.is_ok() || blake2b(encoding) != digest) {
      Status s = Status::corrupt("tree " + digest.hex() + " arrived malformed");
      return [this, digest, s] { fetch_stored(digest, s); };
    }
    std::vector<std::pair<Digest, bool>> missing;
    for (const auto& e : *entries) {
      auto has = w->artifacts->has(e.digest);
      if (!has.is_ok() || !*has) missing.emplace_back(e.digest, e.kind == EntryKind::kTree);
    }
    return [this, digest, entries = std::move(entries).value(), missing] {
      auto fit = fetches.find(digest);
      if (fit == fetches.end()) return;
      fit->second.tree_entries = entries;
      for (const auto& [child, is_child_tree] : missing) {
        fit->second.waiting_children.insert(child);
        is_tree[child] = is_child_tree;
      }
      if (missing.empty()) {
        store_fetched(digest);
        return;
      }
      std::vector<AgentKey> holders = fit->second.holders;
      for (const auto& [child, is_child_tree] : missing) {
        fetch_artifact(child, holders, false, /*for_core=*/false);
        auto cit = fetches.find(child);
        if (cit != fetches.end()) cit->second.parents.push_back(digest);
      }
    };
  });
}

// A tree whose children are all held: store its encoding.
void Daemon::Impl::store_fetched(const Digest& digest) {
  auto it = fetches.find(digest);
  if (it == fetches.end() || !it->second.tree_entries) return;
  Worker* w = worker.get();
  auto entries = *it->second.tree_entries;
  (void)background->submit([this, w, digest, entries]() -> std::function<void()> {
    auto d = w->artifacts->put_tree(entries);
    Status s = d.is_ok() ? Status::ok() : d.status();
    if (s.is_ok() && *d != digest) s = Status::corrupt("tree " + digest.hex() + " rebuilt wrong");
    return [this, digest, s] { fetch_stored(digest, s); };
  });
}

void Daemon::Impl::fetch_stored(const Digest& digest, const Status& status) {
  auto it = fetches.find(digest);
  if (it == fetches.end()) return;
  Fetch f = std::move(it->second);
  fetches.erase(it);
  for (const auto& parent : f.parents) {
    auto pit = fetches.find(parent);
    if (pit == fetches.end()) continue;
    if (!status.is_ok()) {
      fetch_stored(parent, status);
      continue;
    }
    pit->second.waiting_children.erase(digest);
    if (pit->second.waiting_children.empty()) store_fetched(parent);
  }
  if (!f.parents.empty() && !f.for_core) return;
  if (status.is_ok()) {
    log->debug("artifact {} fetched", digest.short_hex());
    carry_out(core->artifact_fetched(digest));
  } else {
    log->warn("artifact {} not fetched: {}", digest.short_hex(), status.to_string());
    carry_out(core->artifact_fetch_failed(digest));
  }
}

// ---- sources ----

namespace {

// Names, sizes, modes and modification times under a path: a cheap test for change
// before the path is hashed again.
std::string fingerprint(const std::string& path) {
  Hasher h;
  std::error_code ec;
  auto add = [&](const fs::path& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return;
    h.update_field(p.string());
    h.update_u64(static_cast<std::uint64_t>(st.st_size));
    h.update_u64(static_cast<std::uint64_t>(st.st_mode));
    h.update_u64(static_cast<std::uint64_t>(st.st_mtim.tv_sec));
    h.update_u64(static_cast<std::uint64_t>(st.st_mtim.tv_nsec));
  };
  add(path);
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> all;
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      all.push_back(it->path());
    }
    std::sort(all.begin(), all.end());
    for (const auto& p : all) add(p);
  }
  return h.finish().hex();
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
    if (src.importing || now < src.next_check_ms) continue;
    if (!src.fingerprint.empty() && !src.decl.watch) continue;
    src.importing = true;
    Worker* w = worker.get();
    std::string path = src.path;
    std::string old = src.fingerprint;
    (void)background->submit([this, w, i, path, old]() -> std::function<void()> {
      std::string fp = fingerprint(path);
      if (fp == old) {
        return [this, i] {
          sources[i].importing = false;
          sources[i].next_check_ms = now_ms() + kSourcePollMs;
        };
      }
      auto ref = w->artifacts->import_path(path);
      return [this, i, fp, ref] {
        WatchedSource& s = sources[i];
        s.importing = false;
        s.next_check_ms = now_ms() + kSourcePollMs;
        if (!ref.is_ok()) {
          log->error("source {}/{} at {}: {}", s.decl.pipeline, s.decl.source, s.path,
                     ref.status().to_string());
          return;
        }
        s.fingerprint = fp;
        is_tree[ref->digest] = ref->is_tree;
        for (const auto& e : ref->entries) is_tree[e.digest] = e.kind == EntryKind::kTree;
        log->info("source {}/{} snapshot {} ({} bytes)", s.decl.pipeline, s.decl.source,
                  ref->digest.short_hex(), ref->size_bytes);
        carry_out(core->source_snapshot(s.decl.pipeline, s.decl.source, *ref));
      };
    });
  }
}

}  // namespace vow::agent
