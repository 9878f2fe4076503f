// Identity and trust: an agent's Ed25519 key pair, its textual id, the key file on disk,
// and the explicit set of keys an agent trusts (docs/protocol.md).
//
// Agent id format (docs/protocol.md): "vow" followed by the lowercase RFC 4648 base32
// (alphabet a-z2-7, no padding) of 34 bytes: the 32-byte Ed25519 public key, then the
// first 2 bytes of BLAKE2b-256("vow-id-v1" || key) as a check against typos. 58 chars.
//
// Key file format: one text line "vow-ed25519-secret-v1 <64 hex digits of the seed>\n",
// mode 0600. A file readable or writable by group or others is refused.
//
// Identity is a value type that owns a copy of the secret (wiped on destruction);
// thread-compatible. TrustSet is a value type; thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "promises/statement.h"
#include "promises/status.h"

namespace vow::transport {

// A detached Ed25519 signature.
using Signature = std::array<std::uint8_t, 64>;

// Curve25519 keys derived from an Ed25519 key pair, as CurveZMQ wants them (raw bytes).
struct CurveKeyPair {
  std::array<std::uint8_t, 32> public_key{};
  std::array<std::uint8_t, 32> secret_key{};
};

class Identity {
 public:
  // A fresh random key pair.
  static Identity generate();
  // The key pair of a 32-byte seed (deterministic; for tests and key files).
  static Identity from_seed(std::span<const std::uint8_t, 32> seed);

  Identity(const Identity& other);
  Identity& operator=(const Identity& other);
  ~Identity();

  const AgentKey& key() const { return key_; }
  std::string id() const;
  // Detached Ed25519 signature over exactly `bytes`.
  Signature sign(std::span<const std::uint8_t> bytes) const;
  // crypto_sign_ed25519_{pk,sk}_to_curve25519 of this key pair.
  CurveKeyPair curve() const;
  // The 32-byte seed, for writing the key file.
  std::span<const std::uint8_t, 32> seed() const {
    return std::span<const std::uint8_t, 32>(secret_.data(), 32);
  }

 private:
  Identity() = default;
  AgentKey key_;
  std::array<std::uint8_t, 64> secret_{};  // libsodium layout: seed || public key
};

// The Curve25519 public key of an Ed25519 public key; nullopt for a key that is not a
// valid curve point (such a key cannot be trusted or connected to).
std::optional<std::array<std::uint8_t, 32>> curve_public_key(const AgentKey& key);

// "vow..." id of a key, and its inverse. parse_agent_key also accepts 64 hex digits.
std::string agent_id(const AgentKey& key);
Result<AgentKey> parse_agent_id(std::string_view id);
Result<AgentKey> parse_agent_key(std::string_view id_or_hex);

// Ed25519 verification of a detached signature (no allocation; constant work).
bool verify_signature(const AgentKey& author, std::span<const std::uint8_t> bytes,
                      const Signature& signature);

// Key files. save_key_file writes a temporary file in the same directory with mode
// 0600, fsyncs it, renames it over `file` and fsyncs the directory.
// load_key_file refuses (kInvalid) a file whose mode grants any access to group or
// others, naming the file and the mode; kNotFound if it does not exist.
Status save_key_file(const Identity& identity, const std::filesystem::path& file);
Result<Identity> load_key_file(const std::filesystem::path& file);

// The agent's identity in STATE_DIR/identity: loaded if present, else generated and
// saved (the directory is created with mode 0700 if missing). `created` tells which.
inline constexpr const char* kIdentityFileName = "identity";
Result<Identity> load_or_create_identity(const std::filesystem::path& state_dir,
                                         bool* created = nullptr);

// The keys an agent trusts, by role. Nothing is trusted on first use: keys come from
// config only. Agents may author statements and exchange every message; clients
// (the `vow` command line, dashboards) may only send control queries.
enum class PeerRole : std::uint8_t { kAgent = 0, kClient = 1 };

class TrustSet {
 public:
  // Adds a key by id or hex; kInvalid naming the text if it is neither.
  Status add(std::string_view id_or_hex, PeerRole role = PeerRole::kAgent);
  void add(const AgentKey& key, PeerRole role = PeerRole::kAgent);

  // The role of a trusted key; nullopt if untrusted.
  std::optional<PeerRole> role(const AgentKey& key) const;
  bool trusts_agent(const AgentKey& key) const { return role(key) == PeerRole::kAgent; }
  // Maps a CurveZMQ public key back to the trusted Ed25519 key it was derived from.
  std::optional<AgentKey> by_curve_key(std::span<const std::uint8_t, 32> curve_key) const;
  std::size_t size() const { return roles_.size(); }
  const std::map<AgentKey, PeerRole>& keys() const { return roles_; }

 private:
  std::map<AgentKey, PeerRole> roles_;
  std::map<std::array<std::uint8_t, 32>, AgentKey> by_curve_;
};

}  // namespace vow::transport
