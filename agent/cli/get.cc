// vow get ARTIFACT | PIPELINE/STAGE.OUTPUT -o PATH: copies an artifact out of the mesh.
// The agent asked resolves the name, fetches the artifact from whichever agent holds it
// if it has no copy (the transfer is verified by the transport), and the command then
// reads the objects from the agent's store, hashing every byte: a file or tree whose
// content does not match its digest is refused and nothing is left at PATH. A remote
// agent (--agent ID@tcp://..., with a client key) streams the objects to a private
// directory first (each verified against its digest as it arrives; a tree's listings
// first, checked against the expansion limits before any file is fetched), and the
// same reading follows from there. A corrupt copy in the agent's store (local or
// remote) is replaced: the agent drops the objects that do not match and fetches the
// artifact again from another holder (`repair`), and the reading is made once more.
// Files and directory trees are materialized writable, executables keep their bit.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/cli/table.h"
#include "promises/config.h"
#include "promises/digest.h"
#include "promises/tree.h"
#include "store/artifact_store.h"

namespace fs = std::filesystem;

namespace vow::agent::cli {
namespace {

using nlohmann::json;

struct Reading {
  std::string root;
  std::uint64_t bytes = 0;
};

// Reads a whole object, checking its digest. `what` names it in errors.
Result<std::string> read_object(const std::string& path, const Digest& digest) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::not_found("object " + digest.hex() + " is not in the store");
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      ::close(fd);
      return Status::io("read " + path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  Hasher h;
  h.update(data);
  Digest got = h.finish();
  if (got != digest) {
    return Status::corrupt("artifact " + digest.hex() + " is corrupt in the agent's store (" +
                           path + " hashes to " + got.hex() + "): refused");
  }
  return data;
}

// A tree object's entries, read from the objects under `root` and checked.
Result<std::vector<TreeEntry>> read_tree(const std::string& root, const Digest& digest) {
  auto data = read_object(store::object_path(root, digest, store::ArtifactKind::kTree), digest);
  if (!data.is_ok()) return data.status();
  return decode_tree(*data);
}

// Streams a file object into `out`, hashing as it goes (into r.bytes when `count`).
// kCorrupt if the bytes do not match the digest.
Status stream_file(Reading& r, const Digest& digest, int out, const std::string& dest, bool count) {
  std::string path = store::object_path(r.root, digest, store::ArtifactKind::kFile);
  int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::not_found("file object " + digest.hex() + " is not in the store");
  Hasher h;
  std::vector<char> buf(store::kCopyChunkBytes);
  Status st = Status::ok();
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      st = Status::io("read " + path);
      break;
    }
    if (n == 0) break;
    h.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    if (count) r.bytes += static_cast<std::uint64_t>(n);
    for (ssize_t done = 0; out >= 0 && done < n;) {
      ssize_t w = ::write(out, buf.data() + done, static_cast<std::size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        st = Status::io("write " + dest + ": " + std::strerror(errno));
        break;
      }
      done += w;
    }
    if (!st.is_ok()) break;
  }
  ::close(in);
  if (st.is_ok()) {
    Digest got = h.finish();
    if (got != digest) {
      st = Status::corrupt("artifact " + digest.hex() + " is corrupt in the agent's store (" +
                           path + " hashes to " + got.hex() + "): refused");
    }
  }
  return st;
}

// Copies a file object to dest, hashing as it goes; dest is removed on a mismatch.
Status copy_file(Reading& r, const Digest& digest, const std::string& dest, bool executable) {
  int out = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, executable ? 0755 : 0644);
  if (out < 0) return Status::io("create " + dest + ": " + std::strerror(errno));
  Status st = stream_file(r, digest, out, dest, true);
  if (::close(out) != 0 && st.is_ok()) st = Status::io("close " + dest);
  if (!st.is_ok()) ::unlink(dest.c_str());
  return st;
}

// A file object to stdout: hashed whole first, so that a corrupt copy writes nothing,
// then streamed (and hashed again: the store's objects are read-only).
Status copy_to_stdout(Reading& r, const Digest& digest) {
  VOW_RETURN_IF_ERROR(stream_file(r, digest, -1, "", false));
  return stream_file(r, digest, STDOUT_FILENO, "stdout", true);
}

// What the tree becomes once copied out, from the store's objects: refused before a
// single file is written if it passes the limits (promises/tree.h).
Status check_tree(const Reading& r, const Digest& digest) {
  TreeReader reader;
  reader.entries = [&](const Digest& d) { return read_tree(r.root, d); };
  reader.file_bytes = [&](const Digest& d) -> Result<std::uint64_t> {
    struct stat sb {};
    std::string path = store::object_path(r.root, d, store::ArtifactKind::kFile);
    if (::stat(path.c_str(), &sb) != 0) {
      return Status::not_found("object " + d.hex() + " is not in the store");
    }
    return static_cast<std::uint64_t>(sb.st_size);
  };
  std::map<Digest, TreeExpansion> memo;
  auto x = expand_tree(digest, reader, &memo);
  if (!x.is_ok()) return x.status();
  return check_expansion(digest, *x);
}

Status copy_tree(Reading& r, const Digest& digest, const std::string& dest, int depth) {
  if (depth > store::kMaxTreeDepth) return Status::invalid("tree deeper than the limit");
  auto entries = read_tree(r.root, digest);
  if (!entries.is_ok()) return entries.status();
  if (::mkdir(dest.c_str(), 0755) != 0) {
    return Status::io("mkdir " + dest + ": " + std::strerror(errno));
  }
  for (const auto& e : *entries) {
    std::string child = dest + "/" + e.name;  // names are validated by decode_tree
    Status st = e.kind == EntryKind::kTree
                    ? copy_tree(r, e.digest, child, depth + 1)
                    : copy_file(r, e.digest, child, e.kind == EntryKind::kExecutable);
    if (!st.is_ok()) return st;
  }
  return Status::ok();
}

void progress(std::uint64_t got, std::uint64_t total) {
  if (!::isatty(STDERR_FILENO) || total < (1u << 20)) return;
  int width = 30;
  int filled =
      total ? static_cast<int>(static_cast<double>(got) / static_cast<double>(total) * width) : 0;
  filled = std::min(filled, width);
  std::fprintf(stderr, "\r[%s%s] %s / %s",
               std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(width - filled), ' ').c_str(),
               human_bytes(got).c_str(), human_bytes(total).c_str());
}

// Streams what `digest` needs from a remote agent into a private object directory laid
// out as a store's: a file's object; a tree's listings level by level, checked against
// the expansion limits (files counted as empty until they arrive), then its files.
Status fetch_remote(RemoteAgent& remote, const Reading& r, const Digest& digest, bool tree,
                    int timeout_ms) {
  auto get = [&](const Digest& d, store::ArtifactKind kind) -> Status {
    std::string path = store::object_path(r.root, d, kind);
    std::error_code ec;
    if (fs::exists(path, ec)) return Status::ok();
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return Status::io("mkdir for " + path + ": " + ec.message());
    return remote.fetch(d, path, timeout_ms);
  };
  if (!tree) return get(digest, store::ArtifactKind::kFile);
  std::vector<Digest> level{digest};
  std::set<Digest> trees{digest};
  std::set<Digest> files;
  while (!level.empty()) {
    std::vector<Digest> next;
    for (const Digest& d : level) {
      VOW_RETURN_IF_ERROR(get(d, store::ArtifactKind::kTree));
      auto entries = read_tree(r.root, d);
      if (!entries.is_ok()) return entries.status();
      for (const auto& e : *entries) {
        if (e.kind != EntryKind::kTree) {
          files.insert(e.digest);
        } else if (trees.insert(e.digest).second) {
          next.push_back(e.digest);
        }
      }
    }
    level = std::move(next);
  }
  TreeReader reader;
  reader.entries = [&](const Digest& d) { return read_tree(r.root, d); };
  reader.file_bytes = [](const Digest&) -> Result<std::uint64_t> { return 0; };
  std::map<Digest, TreeExpansion> memo;
  auto x = expand_tree(digest, reader, &memo);
  if (!x.is_ok()) return x.status();
  VOW_RETURN_IF_ERROR(check_expansion(digest, *x));
  for (const Digest& f : files) VOW_RETURN_IF_ERROR(get(f, store::ArtifactKind::kFile));
  return Status::ok();
}

}  // namespace

void add_get_command(CLI::App& app) {
  struct Options {
    AgentAddress address;
    std::string ref;
    std::string out;
    std::string timeout = "10m";
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "get", "Copy an artifact out of the mesh, fetched from any holder and verified");
  cmd->add_option("artifact", o->ref, "An artifact digest, or PIPELINE/STAGE.OUTPUT")
      ->required()
      ->check(artifact_arg());
  cmd->add_option("-o,--out", o->out, "Where to write it (must not exist); - for stdout (a file)")
      ->required();
  cmd->add_option("--timeout", o->timeout, "How long to wait for a fetch (e.g. 90s, 5m)")
      ->check(duration_arg());
  add_agent_options(cmd, &o->address);
  cmd->callback([o] {
    auto timeout = promises::parse_duration_ms(o->timeout);
    const bool to_stdout = o->out == "-";
    std::unique_ptr<RemoteAgent> remote;
    if (is_remote(o->address)) {
      auto r = RemoteAgent::connect(o->address);
      if (!r.is_ok()) die("get", r.status());
      remote = std::move(r).value();
    }
    std::error_code ec;
    if (!to_stdout && fs::exists(fs::symlink_status(o->out, ec))) {
      die("get", o->out + " exists: not overwritten");
    }
    auto ask = [&](const std::string& method, const json& args) {
      auto a = remote ? remote->call(method, args, 5000) : control_call(o->address, method, args);
      if (!a.is_ok()) die("get", a.status());
      return std::move(a).value();
    };
    json info = ask("resolve", {{"ref", o->ref}});
    std::string hex = info.value("digest", "");
    std::uint64_t size = info.value("size_bytes", 0u);
    if (!info.value("held_here", false)) {
      ask("fetch", {{"digest", hex}});
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*timeout);
      for (;;) {
        info = ask("resolve", {{"ref", hex}});
        if (info.value("held_here", false)) break;
        if (!info.value("fetching", false)) {
          die("get", "the agent could not fetch " + hex + " from any holder (see its log)");
        }
        if (std::chrono::steady_clock::now() > deadline)
          die("get", "timed out fetching " + hex, kExitTimeout);
        progress(info.value("received_bytes", 0u), size);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      progress(size, size);
      if (::isatty(STDERR_FILENO) && size >= (1u << 20)) std::fprintf(stderr, "\n");
    }
    auto digest = Digest::from_hex(hex);
    if (!digest) die("get", "the agent answered a bad digest");
    Reading r{info.value("artifacts_root", ""), 0};
    std::string kind = info.value("kind", "");
    // A remote agent's store is not here: its objects are streamed to a private
    // directory, removed when the command ends.
    struct Private {
      std::string dir;
      ~Private() {
        std::error_code e;
        if (!dir.empty()) fs::remove_all(dir, e);
      }
    } scratch;
    // The agent's copy is corrupt: it drops what does not match and fetches the artifact
    // again from another holder (`repair`); this waits until it holds it again.
    auto repair = [&](const Status& found) {
      std::cerr << "vow get: " << found.message() << "\n";
      json a = ask("repair", {{"digest", hex}});
      if (a.contains("error")) die("get", a.value("error", ""));
      std::cerr << "vow get: replacing the agent's copy from another holder\n";
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*timeout);
      for (;;) {
        info = ask("resolve", {{"ref", hex}});
        const bool busy = info.value("repairing", false) || info.value("fetching", false);
        if (!busy && info.value("held_here", false)) break;
        if (!busy) {
          die("get", "the copy there was corrupt and could not be fetched again from another "
                     "holder (see the agent's log)");
        }
        if (std::chrono::steady_clock::now() > deadline)
          die("get", "timed out replacing the corrupt copy of " + hex, kExitTimeout);
        progress(info.value("received_bytes", 0u), size);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (::isatty(STDERR_FILENO) && size >= (1u << 20)) std::fprintf(stderr, "\n");
    };
    if (remote) {
      if (kind.empty()) die("get", "the agent did not say whether " + hex + " is a file or a tree");
      std::string tmpl = (fs::temp_directory_path(ec) / "vow-get-XXXXXX").string();
      if (::mkdtemp(tmpl.data()) == nullptr) die("get", "cannot make a directory under /tmp");
      scratch.dir = tmpl;
      r.root = tmpl;
      Status fetched = fetch_remote(*remote, r, *digest, kind == "tree", static_cast<int>(*timeout));
      if (fetched.code() == StatusCode::kCorrupt) {
        // Nothing that failed its digest was kept here; that agent replaces its copy,
        // then the objects are streamed again.
        repair(fetched);
        fs::remove_all(tmpl, ec);
        fs::create_directories(tmpl, ec);
        fetched = fetch_remote(*remote, r, *digest, kind == "tree", static_cast<int>(*timeout));
        if (fetched.is_ok()) std::cerr << "vow get: the agent's copy is repaired\n";
      }
      if (!fetched.is_ok()) die("get", fetched.message());
    }
    if (kind.empty()) {
      kind = fs::exists(store::object_path(r.root, *digest, store::ArtifactKind::kTree), ec)
                 ? "tree"
                 : "file";
    }
    if (to_stdout && kind == "tree") {
      die("get", o->ref + " is a tree (a directory): give -o a path to write it to");
    }
    // One reading of the objects into PATH (or stdout); nothing is left at PATH on error.
    auto copy_out = [&]() -> Status {
      r.bytes = 0;
      if (to_stdout) return copy_to_stdout(r, *digest);
      if (kind == "tree") VOW_RETURN_IF_ERROR(check_tree(r, *digest));
      Status st =
          kind == "tree" ? copy_tree(r, *digest, o->out, 0) : copy_file(r, *digest, o->out, false);
      if (!st.is_ok() && kind == "tree") {
        (void)store::make_writable_recursive(o->out);
        fs::remove_all(o->out, ec);
      }
      return st;
    };
    Status st = copy_out();
    if (st.code() == StatusCode::kCorrupt && !remote) {
      // The local agent's copy is corrupt: replaced, then read once more.
      repair(st);
      st = copy_out();
      if (st.is_ok() && !to_stdout) std::cerr << "vow get: the agent's copy is repaired\n";
    }
    if (!st.is_ok()) die("get", st.message());
    if (to_stdout) return;
    std::cout << "wrote " << o->out << " (" << kind << " " << hex << ", " << human_bytes(r.bytes)
              << ", verified)\n";
  });
}

}  // namespace vow::agent::cli
