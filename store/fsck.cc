#include "store/fsck.h"

#include <sodium.h>

#include <unordered_map>

#include "promises/batch_proof.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"

namespace vow::store {

const char* fsck_kind_name(FsckProblem::Kind kind) {
  switch (kind) {
    case FsckProblem::Kind::kCorrupt:
      return "corrupt";
    case FsckProblem::Kind::kMissing:
      return "missing";
    case FsckProblem::Kind::kUnreferenced:
      return "unreferenced";
    case FsckProblem::Kind::kBadSignature:
      return "bad-signature";
    case FsckProblem::Kind::kError:
      return "error";
  }
  return "?";
}

std::string FsckProblem::to_string() const {
  return std::string(fsck_kind_name(kind)) + ": " + subject + ": " + detail;
}

namespace {

using Kind = FsckProblem::Kind;

// Whether a row's signature is its author's: over its bytes, or over the root of the
// batch its path leads to (promises/batch_proof.h).
bool signature_holds(const StoredStatement& s) {
  std::string storage;
  auto message = signed_message(s.bytes, s.path, storage);
  return message && crypto_sign_verify_detached(
                        s.signature.data(), reinterpret_cast<const unsigned char*>(message->data()),
                        message->size(), s.author.bytes.data()) == 0;
}

class Checker {
 public:
  Checker(LedgerStore& ledger, std::string root, Env& env, const FsckOptions& options)
      : ledger_(ledger), root_(std::move(root)), env_(env), options_(options) {}

  Result<FsckReport> run() {
    if (sodium_init() < 0) return Status::io("libsodium failed to initialize");
    VOW_RETURN_IF_ERROR(check_statements());
    VOW_RETURN_IF_ERROR(check_index());
    VOW_RETURN_IF_ERROR(check_files());
    if (dropped_ > 0) {
      report_.problems.push_back(
          {Kind::kError, "fsck", std::to_string(dropped_) + " more problems not listed"});
    }
    return std::move(report_);
  }

 private:
  void problem(Kind kind, std::string subject, std::string detail) {
    if (report_.problems.size() >= options_.max_problems) {
      ++dropped_;
      return;
    }
    report_.problems.push_back({kind, std::move(subject), std::move(detail)});
  }

  Status check_statements() {
    return ledger_.scan_statements([&](const StoredStatement& s, const Status& row) {
      ++report_.statements_checked;
      std::string subject = "statement " + s.author.hex() + "/" + std::to_string(s.seq);
      if (!row.is_ok()) {
        problem(Kind::kCorrupt, subject, row.message());
        return Status::ok();
      }
      if (!signature_holds(s)) {
        problem(Kind::kBadSignature, subject,
                s.path.empty() ? "Ed25519 signature does not verify over its bytes"
                               : "Ed25519 signature does not verify over its batch's root");
        return Status::ok();
      }
      if (options_.check_statement) {
        Status st = options_.check_statement(s);
        if (!st.is_ok()) problem(Kind::kCorrupt, subject, st.message());
      }
      return Status::ok();
    });
  }

  // Hashes the object at PATH; nullopt with a reported problem if unreadable.
  std::optional<Digest> hash_file(const std::string& path, const std::string& subject,
                                  std::string* content) {
    auto file = env_.open_readable(path);
    if (!file.is_ok()) {
      if (file.status().code() == StatusCode::kNotFound) {
        problem(Kind::kMissing, subject, "object " + path + " does not exist");
      } else {
        problem(Kind::kError, subject, file.status().message());
      }
      return std::nullopt;
    }
    Hasher h;
    std::vector<std::uint8_t> buf(kCopyChunkBytes);
    std::uint64_t off = 0;
    for (;;) {
      auto n = (*file)->read_at(off, buf);
      if (!n.is_ok()) {
        problem(Kind::kError, subject, n.status().message());
        return std::nullopt;
      }
      if (*n == 0) break;
      auto chunk = std::span<const std::uint8_t>(buf).subspan(0, *n);
      h.update(chunk);
      if (content) content->append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
      off += *n;
    }
    size_ = off;
    return h.finish();
  }

  Status check_index() {
    auto rows = ledger_.index_list();
    if (!rows.is_ok()) return rows.status();
    for (const auto& r : *rows) kinds_[r.digest] = r.kind;
    for (const auto& r : *rows) {
      ++report_.artifacts_checked;
      std::string subject = std::string("artifact ") + r.digest.hex();
      std::string path = object_path(root_, r.digest, r.kind);
      std::string content;
      auto d = hash_file(path, subject, r.kind == ArtifactKind::kTree ? &content : nullptr);
      if (!d) continue;
      if (*d != r.digest) {
        problem(Kind::kCorrupt, subject,
                "content of " + path + " hashes to " + d->hex() + " (" + std::to_string(size_) +
                    " bytes; index says " + std::to_string(r.size_bytes) + ")");
        continue;
      }
      if (size_ != r.size_bytes) {
        problem(Kind::kCorrupt, subject,
                "index says " + std::to_string(r.size_bytes) + " bytes, object has " +
                    std::to_string(size_));
      }
      if (r.kind != ArtifactKind::kTree) continue;
      auto entries = decode_tree(content);
      if (!entries.is_ok()) {
        problem(Kind::kCorrupt, subject, "tree encoding: " + entries.status().message());
        continue;
      }
      for (const auto& e : *entries) {
        auto it = kinds_.find(e.digest);
        if (it == kinds_.end()) {
          problem(Kind::kMissing, subject,
                  "child '" + e.name + "' (" + e.digest.hex() + ") is not held");
        } else if ((it->second == ArtifactKind::kTree) != (e.kind == EntryKind::kTree)) {
          problem(Kind::kCorrupt, subject,
                  "child '" + e.name + "' is held as a " + artifact_kind_name(it->second));
        }
      }
    }
    return Status::ok();
  }

  Status check_files() {
    auto tmp = env_.list_dir(root_ + "/tmp");
    if (tmp.is_ok()) {
      for (const auto& name : *tmp) {
        problem(Kind::kUnreferenced, root_ + "/tmp/" + name,
                "leftover temporary file (removed when the agent next starts)");
      }
    }
    std::string objects = root_ + "/objects";
    auto fanouts = env_.list_dir(objects);
    if (!fanouts.is_ok()) {
      if (fanouts.status().code() == StatusCode::kNotFound) return Status::ok();
      return fanouts.status();
    }
    for (const auto& fan : *fanouts) {
      std::string dir = objects + "/" + fan;
      auto names = env_.list_dir(dir);
      if (!names.is_ok()) {
        problem(Kind::kUnreferenced, dir, "unknown file in objects/");
        continue;
      }
      for (const auto& name : *names) {
        std::string path = dir + "/" + name;
        std::string_view hex = name;
        ArtifactKind kind = ArtifactKind::kFile;
        if (hex.size() == 69 && hex.substr(64) == ".tree") {
          kind = ArtifactKind::kTree;
          hex = hex.substr(0, 64);
        }
        auto d = Digest::from_hex(hex);
        if (hex.size() != 64 || !d || d->hex() != hex || hex.substr(0, 2) != fan) {
          problem(Kind::kUnreferenced, path, "unknown file in objects/");
          continue;
        }
        auto it = kinds_.find(*d);
        if (it == kinds_.end() || it->second != kind) {
          problem(Kind::kUnreferenced, path,
                  "object not in the artifact index (indexed when the agent next starts, if it "
                  "verifies)");
        }
      }
    }
    return Status::ok();
  }

  LedgerStore& ledger_;
  std::string root_;
  Env& env_;
  const FsckOptions& options_;
  FsckReport report_;
  std::size_t dropped_ = 0;
  std::uint64_t size_ = 0;  // size of the last file hashed
  std::unordered_map<Digest, ArtifactKind> kinds_;
};

}  // namespace

Result<FsckReport> fsck(LedgerStore& ledger, const std::string& artifacts_root, Env& env,
                        const FsckOptions& options) {
  return Checker(ledger, artifacts_root, env, options).run();
}

Result<FsckReport> fsck_state_dir(const std::string& state_dir, const FsckOptions& options) {
  std::string db = ledger_path(state_dir);
  auto info = posix_env().stat(db);
  if (!info.is_ok()) return info.status();
  if (info->type != FileType::kRegular) {
    return Status::not_found(db + ": no ledger here (is " + state_dir + " a vow state directory?)");
  }
  auto ledger = open_sqlite_ledger(db);
  if (!ledger.is_ok()) return ledger.status();
  return fsck(**ledger, artifacts_root(state_dir), posix_env(), options);
}

}  // namespace vow::store
