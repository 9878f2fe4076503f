#include "transport/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "promises/assert.h"
#include "promises/digest.h"

namespace vow::transport {
namespace {

constexpr std::string_view kIdPrefix = "vow";
constexpr std::string_view kKeyFileTag = "vow-ed25519-secret-v1";
constexpr char kBase32[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr std::size_t kIdPayloadBytes = AgentKey::kSize + 2;

void ensure_sodium() {
  // sodium_init is idempotent and thread-safe; returns 1 when already initialized.
  int rc = sodium_init();
  VOW_ASSERT(rc >= 0, "sodium_init failed: %d", rc);
}

std::array<std::uint8_t, 2> id_check(const AgentKey& key) {
  Hasher h;
  h.update("vow-id-v1");
  h.update(key.bytes);
  Digest d = h.finish();
  return {d.bytes[0], d.bytes[1]};
}

std::string base32(std::span<const std::uint8_t> data) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::uint8_t b : data) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += kBase32[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += kBase32[(buffer << (5 - bits)) & 31];
  return out;
}

std::optional<std::vector<std::uint8_t>> unbase32(std::string_view text) {
  std::vector<std::uint8_t> out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'a' && c <= 'z') {
      v = c - 'a';
    } else if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= '2' && c <= '7') {
      v = c - '2' + 26;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<std::uint8_t>(buffer >> (bits - 8)));
      bits -= 8;
    }
  }
  // Leftover bits are padding and must be zero, so each key has exactly one id.
  if (bits >= 5 || (buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string errno_text() { return std::strerror(errno); }

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

Identity Identity::generate() {
  ensure_sodium();
  std::array<std::uint8_t, 32> seed;
  randombytes_buf(seed.data(), seed.size());
  Identity id = from_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  return id;
}

Identity Identity::from_seed(std::span<const std::uint8_t, 32> seed) {
  ensure_sodium();
  Identity id;
  int rc = crypto_sign_seed_keypair(id.key_.bytes.data(), id.secret_.data(), seed.data());
  VOW_ASSERT(rc == 0, "crypto_sign_seed_keypair failed: %d", rc);
  return id;
}

Identity::Identity(const Identity& other) : key_(other.key_), secret_(other.secret_) {}

Identity& Identity::operator=(const Identity& other) {
  key_ = other.key_;
  secret_ = other.secret_;
  return *this;
}

Identity::~Identity() { sodium_memzero(secret_.data(), secret_.size()); }

std::string Identity::id() const { return agent_id(key_); }

Signature Identity::sign(std::span<const std::uint8_t> bytes) const {
  Signature sig;
  int rc = crypto_sign_detached(sig.data(), nullptr, bytes.data(), bytes.size(), secret_.data());
  VOW_ASSERT(rc == 0, "crypto_sign_detached failed: %d", rc);
  return sig;
}

CurveKeyPair Identity::curve() const {
  CurveKeyPair kp;
  int rc = crypto_sign_ed25519_pk_to_curve25519(kp.public_key.data(), key_.bytes.data());
  VOW_ASSERT(rc == 0, "own public key has no curve form: %d", rc);
  rc = crypto_sign_ed25519_sk_to_curve25519(kp.secret_key.data(), secret_.data());
  VOW_ASSERT(rc == 0, "own secret key has no curve form: %d", rc);
  return kp;
}

std::optional<std::array<std::uint8_t, 32>> curve_public_key(const AgentKey& key) {
  ensure_sodium();
  std::array<std::uint8_t, 32> out;
  if (crypto_sign_ed25519_pk_to_curve25519(out.data(), key.bytes.data()) != 0) {
    return std::nullopt;
  }
  return out;
}

std::string agent_id(const AgentKey& key) {
  std::array<std::uint8_t, kIdPayloadBytes> payload;
  std::memcpy(payload.data(), key.bytes.data(), AgentKey::kSize);
  auto check = id_check(key);
  payload[AgentKey::kSize] = check[0];
  payload[AgentKey::kSize + 1] = check[1];
  return std::string(kIdPrefix) + base32(payload);
}

Result<AgentKey> parse_agent_id(std::string_view id) {
  std::string shown(id.substr(0, 80));
  if (id.size() < kIdPrefix.size() || id.substr(0, kIdPrefix.size()) != kIdPrefix) {
    return Status::invalid("agent id '" + shown + "' does not start with 'vow'");
  }
  auto raw = unbase32(id.substr(kIdPrefix.size()));
  if (!raw || raw->size() != kIdPayloadBytes) {
    return Status::invalid("agent id '" + shown + "' is not 'vow' + 55 base32 characters");
  }
  AgentKey key;
  std::memcpy(key.bytes.data(), raw->data(), AgentKey::kSize);
  auto check = id_check(key);
  if ((*raw)[AgentKey::kSize] != check[0] || (*raw)[AgentKey::kSize + 1] != check[1]) {
    return Status::invalid("agent id '" + shown + "' has a bad check sum (mistyped?)");
  }
  return key;
}

Result<AgentKey> parse_agent_key(std::string_view id_or_hex) {
  if (id_or_hex.size() == 2 * AgentKey::kSize && !id_or_hex.starts_with(kIdPrefix)) {
    auto raw = from_hex(id_or_hex);
    if (!raw) {
      return Status::invalid("key '" + std::string(id_or_hex) + "' is not 64 hex digits");
    }
    AgentKey key;
    std::memcpy(key.bytes.data(), raw->data(), AgentKey::kSize);
    return key;
  }
  return parse_agent_id(id_or_hex);
}

bool verify_signature(const AgentKey& author, std::span<const std::uint8_t> bytes,
                      const Signature& signature) {
  // libsodium wants sodium_init() before any use; once per process, then free.
  static const bool initialized = (ensure_sodium(), true);
  (void)initialized;
  return crypto_sign_verify_detached(signature.data(), bytes.data(), bytes.size(),
                                     author.bytes.data()) == 0;
}

Status save_key_file(const Identity& identity, const std::filesystem::path& file) {
  std::string text = std::string(kKeyFileTag) + " " + to_hex(identity.seed()) + "\n";
  std::filesystem::path dir = file.parent_path().empty() ? "." : file.parent_path();
  std::string tmp = (dir / ("." + file.filename().string() + ".tmp")).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::io("create " + tmp + ": " + errno_text());
  // The mode passed to open is filtered by the umask; make sure it is exactly 0600.
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t done = 0;
  while (ok && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  std::string err = ok ? "" : errno_text();
  ::close(fd);
  sodium_memzero(text.data(), text.size());
  if (!ok) {
    ::unlink(tmp.c_str());
    return Status::io("write " + tmp + ": " + err);
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    err = errno_text();
    ::unlink(tmp.c_str());
    return Status::io("rename " + tmp + " to " + file.string() + ": " + err);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

Result<Identity> load_key_file(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return Status::not_found("key file " + file.string() + " does not exist");
    return Status::io("open key file " + file.string() + ": " + errno_text());
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string err = errno_text();
    ::close(fd);
    return Status::io("stat key file " + file.string() + ": " + err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::invalid("key file " + file.string() + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return Status::invalid("key file " + file.string() + " has mode " + mode_text(st.st_mode) +
                           ": it must not be accessible by group or others (chmod 600 " +
                           file.string() + ")");
  }
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  if (n < 0) return Status::io("read key file " + file.string() + ": " + errno_text());
  std::string_view text(buf, static_cast<std::size_t>(n));
  std::string prefix = std::string(kKeyFileTag) + " ";
  Result<Identity> out = Status::corrupt("key file " + file.string() + " is not a '" +
                                         std::string(kKeyFileTag) + "' key file");
  if (text.starts_with(prefix)) {
    std::string_view hex = text.substr(prefix.size());
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) hex.remove_suffix(1);
    auto seed = hex.size() == 64 ? from_hex(hex) : std::nullopt;
    if (seed) {
      std::array<std::uint8_t, 32> s;
      std::memcpy(s.data(), seed->data(), 32);
      out = Identity::from_seed(s);
      sodium_memzero(s.data(), s.size());
      sodium_memzero(seed->data(), seed->size());
    }
  }
  sodium_memzero(buf, sizeof(buf));
  return out;
}

Result<Identity> load_or_create_identity(const std::filesystem::path& state_dir, bool* created) {
  if (created) *created = false;
  std::error_code ec;
  if (!std::filesystem::exists(state_dir, ec)) {
    std::filesystem::create_directories(state_dir, ec);
    if (ec) return Status::io("create state directory " + state_dir.string() + ": " + ec.message());
    std::filesystem::permissions(state_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }
  std::filesystem::path file = state_dir / kIdentityFileName;
  auto loaded = load_key_file(file);
  if (loaded || loaded.status().code() != StatusCode::kNotFound) return loaded;
  Identity id = Identity::generate();
  VOW_RETURN_IF_ERROR(save_key_file(id, file));
  if (created) *created = true;
  return id;
}

Status TrustSet::add(std::string_view id_or_hex, PeerRole role) {
  auto key = parse_agent_key(id_or_hex);
  if (!key) return Status::invalid("trusted key: " + key.status().message());
  if (!curve_public_key(*key)) {
    return Status::invalid("trusted key '" + std::string(id_or_hex) +
                           "' is not a valid Ed25519 public key");
  }
  add(*key, role);
  return Status::ok();
}

void TrustSet::add(const AgentKey& key, PeerRole role) {
  auto curve = curve_public_key(key);
  if (!curve) return;  // not a curve point: nothing could ever authenticate as it
  // An agent key also admitted as a client stays an agent (the stronger role).
  auto [it, inserted] = roles_.emplace(key, role);
  if (!inserted && role == PeerRole::kAgent) it->second = PeerRole::kAgent;
  by_curve_[*curve] = key;
}

std::optional<PeerRole> TrustSet::role(const AgentKey& key) const {
  auto it = roles_.find(key);
  if (it == roles_.end()) return std::nullopt;
  return it->second;
}

std::optional<AgentKey> TrustSet::by_curve_key(std::span<const std::uint8_t, 32> curve_key) const {
  std::array<std::uint8_t, 32> k;
  std::memcpy(k.data(), curve_key.data(), 32);
  auto it = by_curve_.find(k);
  if (it == by_curve_.end()) return std::nullopt;
  return it->second;
}

}  // namespace vow::transport
