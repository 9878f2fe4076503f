#include "promises/digest.h"

#include "promises/assert.h"

namespace vow {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool Digest::is_zero() const {
  for (auto b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string Digest::hex() const { return to_hex(bytes); }

std::string Digest::short_hex() const { return hex().substr(0, 12); }

std::optional<Digest> Digest::from_hex(std::string_view hex) {
  if (hex.size() != 2 * kSize) return std::nullopt;
  auto raw = vow::from_hex(hex);
  if (!raw) return std::nullopt;
  Digest d;
  for (std::size_t i = 0; i < kSize; ++i) d.bytes[i] = static_cast<std::uint8_t>((*raw)[i]);
  return d;
}

Hasher::Hasher() {
  int rc = crypto_generichash_init(&state_, nullptr, 0, Digest::kSize);
  VOW_ASSERT(rc == 0, "crypto_generichash_init failed: %d", rc);
}

void Hasher::update(std::span<const std::uint8_t> data) {
  VOW_ASSERT(!finished_, "Hasher used after finish()");
  crypto_generichash_update(&state_, data.data(), data.size());
}

void Hasher::update(std::string_view data) {
  update(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}

void Hasher::update_u64(std::uint64_t v) {
  std::uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<std::uint8_t>(v >> (8 * i));
  update(std::span(le, 8));
}

void Hasher::update_field(std::string_view data) {
  update_u64(data.size());
  update(data);
}

Digest Hasher::finish() {
  VOW_ASSERT(!finished_, "Hasher::finish() called twice");
  finished_ = true;
  Digest d;
  crypto_generichash_final(&state_, d.bytes.data(), d.bytes.size());
  return d;
}

Digest blake2b(std::span<const std::uint8_t> data) {
  Hasher h;
  h.update(data);
  return h.finish();
}

Digest blake2b(std::string_view data) {
  Hasher h;
  h.update(data);
  return h.finish();
}

std::string to_hex(std::span<const std::uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (auto b : data) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(hex[2 * i]);
    int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

}  // namespace vow
