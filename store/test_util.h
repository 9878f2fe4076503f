// Helpers for store tests and the crash helper: temporary directories, signing keys and
// signed statements. Test-only; thread-compatible.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "store/ledger.h"

namespace vow::store::testing {

// A fresh directory under $TMPDIR, removed (made writable first) when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// An Ed25519 key pair derived from a seed number (deterministic).
struct TestKey {
  AgentKey public_key;
  std::array<std::uint8_t, 64> secret{};
  explicit TestKey(std::uint64_t seed);
};

// A statement signed by KEY whose bytes are BODY (the store never decodes bytes).
StoredStatement make_statement(const TestKey& key, std::uint64_t seq, std::string body,
                               StatementKind kind = StatementKind::kAdvert);
// A signed result statement for JOB.
StoredStatement make_result(const TestKey& key, std::uint64_t seq, const Digest& job,
                            std::uint32_t epoch, const Digest& outputs, bool ok);

// Writes FILE with CONTENT (creating directories), and mode.
void write_file(const std::string& path, const std::string& content, int mode = 0644);
std::string read_file(const std::string& path);

}  // namespace vow::store::testing
