// Digest: a BLAKE2b-256 content digest (libsodium crypto_generichash, 32-byte output,
// no key), the name of every artifact, stage definition, pipeline and job in vow.
//
// A file artifact's digest is the plain BLAKE2b-256 of its bytes, so
// `b2sum --length=256 FILE` reproduces it. Other digests hash a tagged canonical
// encoding (see tree.h and pipeline.h, and docs/identity.md).
//
// Value type; Hasher is not thread-safe (one per thread), not copyable.
#pragma once

#include <array>
#include <bit>
#include <compare>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <sodium.h>

namespace vow {

// Byte-wise (lexicographic) order of two 32-byte values, 8 bytes at a time: the order
// of std::array's, without a memcmp call per comparison (maps keyed by agent keys and
// digests compare them on every lookup).
inline std::strong_ordering compare_32_bytes(const std::uint8_t* a, const std::uint8_t* b) {
  for (std::size_t i = 0; i < 32; i += 8) {
    std::uint64_t x = 0, y = 0;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    if (x != y) {
      if constexpr (std::endian::native == std::endian::little) {
        x = __builtin_bswap64(x);
        y = __builtin_bswap64(y);
      }
      return x <=> y;
    }
  }
  return std::strong_ordering::equal;
}

struct Digest {
  static constexpr std::size_t kSize = 32;
  std::array<std::uint8_t, kSize> bytes{};

  bool is_zero() const;
  std::string hex() const;            // 64 lowercase hex digits
  std::string short_hex() const;      // first 12 hex digits, for humans
  static std::optional<Digest> from_hex(std::string_view hex);
  std::strong_ordering operator<=>(const Digest& o) const {
    return compare_32_bytes(bytes.data(), o.bytes.data());
  }
  bool operator==(const Digest& o) const { return bytes == o.bytes; }
};

// Incremental BLAKE2b-256.
class Hasher {
 public:
  Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void update(std::span<const std::uint8_t> data);
  void update(std::string_view data);
  // Length-prefixed (u64 little-endian) string, for unambiguous canonical encodings.
  void update_field(std::string_view data);
  void update_u64(std::uint64_t v);  // little-endian
  Digest finish();  // may be called once

 private:
  crypto_generichash_state state_;
  bool finished_ = false;
};

Digest blake2b(std::span<const std::uint8_t> data);
Digest blake2b(std::string_view data);

// Lowercase hex of arbitrary bytes, and its inverse (nullopt on a bad digit or length).
std::string to_hex(std::span<const std::uint8_t> data);
std::optional<std::string> from_hex(std::string_view hex);

}  // namespace vow

template <>
struct std::hash<vow::Digest> {
  std::size_t operator()(const vow::Digest& d) const noexcept {
    std::size_t h;
    static_assert(sizeof(h) <= vow::Digest::kSize);
    __builtin_memcpy(&h, d.bytes.data(), sizeof(h));
    return h;
  }
};
