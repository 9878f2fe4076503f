// Statements signed together: the Merkle tree of RFC 9162, section 2.1.
#include "promises/batch_proof.h"

#include <algorithm>
#include <cstring>

namespace vow {
namespace {

Digest node(const Digest& left, const Digest& right) {
  Hasher h;
  h.update_field("vow-batch-node-v1");
  h.update(left.bytes);
  h.update(right.bytes);
  return h.finish();
}

// The largest power of two below n (n >= 2).
std::size_t split(std::size_t n) {
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint32_t get_u32(std::string_view in, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return v;
}

// The root of leaves[lo, hi); appends each leaf's sibling at this level to its path
// (after the deeper ones: paths run from the leaf up).
Digest build(const std::vector<Digest>& leaves, std::size_t lo, std::size_t hi,
             std::vector<std::string>& paths) {
  if (hi - lo == 1) return leaves[lo];
  const std::size_t k = split(hi - lo);
  const Digest left = build(leaves, lo, lo + k, paths);
  const Digest right = build(leaves, lo + k, hi, paths);
  for (std::size_t i = lo; i < hi; ++i) {
    const Digest& sibling = i < lo + k ? right : left;
    paths[i].append(reinterpret_cast<const char*>(sibling.bytes.data()), sibling.bytes.size());
  }
  return node(left, right);
}

}  // namespace

Digest batch_leaf(std::string_view bytes) {
  Hasher h;
  h.update_field("vow-batch-leaf-v1");
  h.update_field(bytes);
  return h.finish();
}

BatchTree batch_tree(const std::vector<Digest>& leaves) {
  BatchTree t;
  if (leaves.empty()) return t;
  t.paths.resize(leaves.size());
  if (leaves.size() > 1) {
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      put_u32(t.paths[i], static_cast<std::uint32_t>(i));
      put_u32(t.paths[i], static_cast<std::uint32_t>(leaves.size()));
    }
  }
  t.root = build(leaves, 0, leaves.size(), t.paths);
  if (leaves.size() == 1) t.paths[0].clear();
  return t;
}

std::optional<Digest> batch_root(std::string_view bytes, std::string_view path) {
  if (path.size() < 8 || (path.size() - 8) % Digest::kSize != 0) return std::nullopt;
  const std::uint32_t index = get_u32(path, 0);
  const std::uint32_t count = get_u32(path, 4);
  if (count < 2 || count > kMaxBatchLeaves || index >= count) return std::nullopt;
  std::uint64_t fn = index;
  std::uint64_t sn = count - 1;
  Digest r = batch_leaf(bytes);
  for (std::size_t at = 8; at < path.size(); at += Digest::kSize) {
    if (sn == 0) return std::nullopt;  // longer than the tree is deep
    Digest p;
    std::memcpy(p.bytes.data(), path.data() + at, Digest::kSize);
    if ((fn & 1) != 0 || fn == sn) {
      r = node(p, r);
      while ((fn & 1) == 0 && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = node(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return std::nullopt;  // shorter than the tree is deep
  return r;
}

void sign_forms_together(const std::vector<SignedForm*>& forms, const MessageSigner& sign) {
  if (forms.empty()) return;
  if (forms.size() == 1) {
    forms[0]->signature = sign(forms[0]->bytes);
    forms[0]->path.clear();
    return;
  }
  if (forms.size() > kMaxBatchLeaves) {
    // More than one batch holds (no input of the core publishes so many): in parts.
    for (std::size_t at = 0; at < forms.size(); at += kMaxBatchLeaves) {
      const std::size_t end = std::min<std::size_t>(forms.size(), at + kMaxBatchLeaves);
      sign_forms_together(std::vector<SignedForm*>(forms.begin() + static_cast<long>(at),
                                                   forms.begin() + static_cast<long>(end)),
                          sign);
    }
    return;
  }
  std::vector<Digest> leaves;
  leaves.reserve(forms.size());
  for (const auto* f : forms) leaves.push_back(batch_leaf(f->bytes));
  BatchTree tree = batch_tree(leaves);
  const auto signature = sign(batch_signing_message(tree.root));
  for (std::size_t i = 0; i < forms.size(); ++i) {
    forms[i]->signature = signature;
    forms[i]->path = std::move(tree.paths[i]);
  }
}

std::optional<std::string_view> signed_message(std::string_view bytes, std::string_view path,
                                               std::string& storage) {
  if (path.empty()) return bytes;
  auto root = batch_root(bytes, path);
  if (!root) return std::nullopt;
  storage = batch_signing_message(*root);
  return std::string_view(storage);
}

bool first_of_batch(std::string_view path) {
  return path.size() < 4 || get_u32(path, 0) == 0;
}

std::string batch_signing_message(const Digest& root) {
  std::string m = "vow statement batch v1\n";
  m.append(reinterpret_cast<const char*>(root.bytes.data()), root.bytes.size());
  return m;
}

}  // namespace vow
