#include "promises/tree.h"

#include <algorithm>
#include <cstdint>
#include <map>

namespace vow {
namespace {

constexpr std::string_view kTreeTag = "vow-tree-v1\n";

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

bool valid_kind(std::uint8_t k) {
  return k == static_cast<std::uint8_t>(EntryKind::kFile) ||
         k == static_cast<std::uint8_t>(EntryKind::kExecutable) ||
         k == static_cast<std::uint8_t>(EntryKind::kTree);
}

}  // namespace

Status validate_entry_name(std::string_view name) {
  if (name.empty()) return Status::invalid("empty entry name");
  if (name.size() > kMaxEntryNameBytes) {
    return Status::invalid("entry name longer than " + std::to_string(kMaxEntryNameBytes) +
                           " bytes");
  }
  if (name == "." || name == "..") return Status::invalid("entry name '" + std::string(name) + "'");
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return Status::invalid("entry name with '/' or NUL: '" + std::string(name) + "'");
  }
  return Status::ok();
}

Result<std::string> encode_tree(std::vector<TreeEntry> entries) {
  if (entries.size() > kMaxTreeEntries) return Status::overloaded("tree has too many entries");
  std::sort(entries.begin(), entries.end(),
            [](const TreeEntry& a, const TreeEntry& b) { return a.name < b.name; });
  std::string out(kTreeTag);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    VOW_RETURN_IF_ERROR(validate_entry_name(e.name));
    if (i > 0 && entries[i - 1].name == e.name) {
      return Status::invalid("duplicate entry name '" + e.name + "'");
    }
    if (!valid_kind(static_cast<std::uint8_t>(e.kind))) {
      return Status::invalid("bad kind for entry '" + e.name + "'");
    }
    out.push_back(static_cast<char>(e.kind));
    put_u64(out, e.name.size());
    out.append(e.name);
    out.append(reinterpret_cast<const char*>(e.digest.bytes.data()), Digest::kSize);
  }
  return out;
}

Result<std::vector<TreeEntry>> decode_tree(std::string_view in) {
  if (in.substr(0, kTreeTag.size()) != kTreeTag) return Status::corrupt("not a tree encoding");
  std::size_t pos = kTreeTag.size();
  std::vector<TreeEntry> entries;
  while (pos < in.size()) {
    if (entries.size() >= kMaxTreeEntries) return Status::corrupt("tree has too many entries");
    if (in.size() - pos < 1 + 8) return Status::corrupt("truncated tree entry");
    auto kind = static_cast<std::uint8_t>(in[pos]);
    if (!valid_kind(kind)) return Status::corrupt("bad tree entry kind");
    pos += 1;
    std::uint64_t len = 0;
    for (int i = 0; i < 8; ++i)
      len |= std::uint64_t(static_cast<std::uint8_t>(in[pos + i])) << (8 * i);
    pos += 8;
    if (len > kMaxEntryNameBytes || in.size() - pos < len + Digest::kSize) {
      return Status::corrupt("truncated tree entry");
    }
    TreeEntry e;
    e.kind = static_cast<EntryKind>(kind);
    e.name = std::string(in.substr(pos, len));
    pos += len;
    std::copy_n(reinterpret_cast<const std::uint8_t*>(in.data() + pos), Digest::kSize,
                e.digest.bytes.begin());
    pos += Digest::kSize;
    if (!validate_entry_name(e.name).is_ok()) return Status::corrupt("bad tree entry name");
    if (!entries.empty() && !(entries.back().name < e.name)) {
      return Status::corrupt("tree entries not sorted or duplicated");
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

Result<Digest> tree_digest(std::vector<TreeEntry> entries) {
  auto enc = encode_tree(std::move(entries));
  if (!enc) return enc.status();
  return blake2b(*enc);
}

namespace {

std::uint64_t add_saturating(std::uint64_t a, std::uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

Result<TreeExpansion> expand(const Digest& d, const TreeReader& reader,
                             std::map<Digest, TreeExpansion>* memo, int depth) {
  if (auto it = memo->find(d); it != memo->end()) return it->second;
  if (depth > kMaxExpansionDepth) {
    return Status::invalid("tree " + d.hex() + " is nested deeper than " +
                           std::to_string(kMaxExpansionDepth) + " levels");
  }
  auto entries = reader.entries(d);
  if (!entries.is_ok()) return entries.status();
  TreeExpansion total;
  for (const auto& e : *entries) {
    total.entries = add_saturating(total.entries, 1);
    if (e.kind == EntryKind::kTree) {
      auto sub = expand(e.digest, reader, memo, depth + 1);
      if (!sub.is_ok()) return sub;
      total.entries = add_saturating(total.entries, sub->entries);
      total.bytes = add_saturating(total.bytes, sub->bytes);
    } else {
      auto n = reader.file_bytes(e.digest);
      if (!n.is_ok()) return n.status();
      total.bytes = add_saturating(total.bytes, *n);
    }
  }
  memo->emplace(d, total);
  return total;
}

}  // namespace

Result<TreeExpansion> expand_tree(const Digest& root, const TreeReader& reader,
                                  std::map<Digest, TreeExpansion>* memo) {
  return expand(root, reader, memo, 0);
}

Status check_expansion(const Digest& root, const TreeExpansion& x) {
  if (x.entries > kMaxExpandedEntries) {
    return Status::invalid("tree " + root.hex() + " expands to " + std::to_string(x.entries) +
                           " entries, over the limit of " + std::to_string(kMaxExpandedEntries) +
                           ": refused");
  }
  if (x.bytes > kMaxExpandedBytes) {
    return Status::invalid("tree " + root.hex() + " expands to " + std::to_string(x.bytes) +
                           " bytes, over the limit of " + std::to_string(kMaxExpandedBytes) +
                           ": refused");
  }
  return Status::ok();
}

}  // namespace vow
