// ArtifactStore: recovery on open and garbage collection (docs/storage.md, "GC").
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "store/artifact_store.h"

namespace vow::store {
namespace {

// Parses an object file name: 64 hex digits, then ".tree" for a tree.
bool parse_object_name(const std::string& name, Digest* digest, ArtifactKind* kind) {
  std::string_view hex = name;
  *kind = ArtifactKind::kFile;
  if (hex.size() == 64 + 5 && hex.substr(64) == ".tree") {
    *kind = ArtifactKind::kTree;
    hex = hex.substr(0, 64);
  }
  if (hex.size() != 64) return false;
  auto d = Digest::from_hex(hex);
  if (!d || d->hex() != hex) return false;  // lowercase only
  *digest = *d;
  return true;
}

}  // namespace

Status ArtifactStore::recover() {
  std::string tmp = root_ + "/tmp";
  auto leftovers = env_.list_dir(tmp);
  if (!leftovers.is_ok()) return leftovers.status();
  for (const auto& name : *leftovers) VOW_RETURN_IF_ERROR(env_.remove_file(tmp + "/" + name));

  auto rows = index_.index_digests();
  if (!rows.is_ok()) return rows.status();
  std::unordered_set<Digest> indexed(rows->begin(), rows->end());

  // TODO(perf): this lists every fan-out directory on each open; a clean-shutdown marker
  // would let a normal start skip it.
  std::string objects = root_ + "/objects";
  auto fanouts = env_.list_dir(objects);
  if (!fanouts.is_ok()) return fanouts.status();
  for (const auto& fan : *fanouts) {
    std::string dir = objects + "/" + fan;
    auto info = env_.stat(dir);
    if (!info.is_ok()) return info.status();
    if (info->type != FileType::kDirectory) continue;  // fsck reports it
    auto names = env_.list_dir(dir);
    if (!names.is_ok()) return names.status();
    for (const auto& name : *names) {
      Digest d;
      ArtifactKind kind;
      if (!parse_object_name(name, &d, &kind) || name.substr(0, 2) != fan) continue;
      if (indexed.count(d)) continue;
      // Renamed into place (so complete and synced) but not indexed: a crash came between
      // the rename and the index insert, or between a GC's index delete and unlink.
      // Index it only if it verifies; otherwise leave it for fsck to report.
      auto file = env_.open_readable(dir + "/" + name);
      if (!file.is_ok()) return file.status();
      Hasher h;
      std::string content;
      std::vector<std::uint8_t> buf(kCopyChunkBytes);
      std::uint64_t off = 0;
      for (;;) {
        auto n = (*file)->read_at(off, buf);
        if (!n.is_ok()) return n.status();
        if (*n == 0) break;
        auto chunk = std::span<const std::uint8_t>(buf).subspan(0, *n);
        h.update(chunk);
        if (kind == ArtifactKind::kTree)
          content.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
        off += *n;
      }
      if (h.finish() != d) continue;
      if (kind == ArtifactKind::kTree && !decode_tree(content).is_ok()) continue;
      pending_rows_.push_back(ArtifactRecord{d, off, kind, false, ++tick_});
      indexed.insert(d);
    }
  }
  return flush_index();
}

Result<GcReport> ArtifactStore::gc(const GcRequest& request) {
  VOW_RETURN_IF_ERROR(flush());
  auto rows = index_.index_list();
  if (!rows.is_ok()) return rows.status();
  std::unordered_map<Digest, ArtifactRecord> present;
  std::unordered_map<Digest, std::vector<Digest>> children;
  std::uint64_t total = 0;
  for (const auto& r : *rows) {
    present[r.digest] = r;
    total += r.size_bytes;
  }
  for (const auto& r : *rows) {
    if (r.kind != ArtifactKind::kTree) continue;
    // A tree we cannot read hides which children it needs: stop rather than guess.
    auto entries = read_tree(r.digest);
    if (!entries.is_ok()) return entries.status();
    auto& kids = children[r.digest];
    for (const auto& e : *entries) kids.push_back(e.digest);
  }

  // Protected: pinned, needed by running jobs, canonical outputs with no other known
  // holder, and everything a protected tree references.
  std::unordered_set<Digest> keep;
  std::vector<Digest> stack;
  auto protect = [&](const Digest& d) {
    if (present.count(d) && keep.insert(d).second) stack.push_back(d);
  };
  for (const auto& r : *rows) {
    if (r.pinned) protect(r.digest);
  }
  for (const auto& d : request.running_inputs) protect(d);
  for (const auto& d : request.canonical_outputs) {
    if (!request.held_elsewhere || !request.held_elsewhere(d)) protect(d);
  }
  while (!stack.empty()) {
    Digest d = stack.back();
    stack.pop_back();
    auto it = children.find(d);
    if (it == children.end()) continue;
    for (const auto& c : it->second) protect(c);
  }

  // A child stays while any remaining tree references it.
  std::unordered_map<Digest, std::uint64_t> refs;
  for (const auto& [tree, kids] : children) {
    for (const auto& c : kids) ++refs[c];
  }
  using Candidate = std::pair<std::uint64_t, Digest>;  // (last_used, digest): LRU first
  std::set<Candidate> eligible;
  for (const auto& r : *rows) {
    if (!keep.count(r.digest) && refs[r.digest] == 0) eligible.insert({r.last_used, r.digest});
  }

  GcReport report;
  while (total > request.budget_bytes && !eligible.empty()) {
    Digest d = eligible.begin()->second;
    eligible.erase(eligible.begin());
    const ArtifactRecord& rec = present[d];
    // Index row first: a crash before the unlink leaves an unindexed object, which open()
    // indexes again; the reverse order would leave a row without its object.
    if (!request.dry_run) {
      VOW_RETURN_IF_ERROR(index_.index_remove(d));
      forget_indexed(d);
      ++removals_;
      VOW_RETURN_IF_ERROR(env_.remove_file(object_path(d, rec.kind)));
    }
    total -= rec.size_bytes;
    report.removed_bytes += rec.size_bytes;
    report.removed.push_back(d);
    auto it = children.find(d);
    if (it != children.end()) {
      for (const auto& c : it->second) {
        if (--refs[c] == 0 && !keep.count(c) && present.count(c)) {
          eligible.insert({present[c].last_used, c});
        }
      }
    }
  }
  report.kept_bytes = total;
  return report;
}

}  // namespace vow::store
