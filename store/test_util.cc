#include "store/test_util.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "promises/assert.h"
#include "store/artifact_store.h"

namespace vow::store::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vow-store-XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  VOW_ASSERT(p != nullptr, "mkdtemp %s failed", tmpl.c_str());
  path_ = p;
}

TempDir::~TempDir() {
  (void)make_writable_recursive(path_);
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestKey::TestKey(std::uint64_t seed) {
  VOW_ASSERT(sodium_init() >= 0, "sodium_init");
  std::array<std::uint8_t, crypto_sign_SEEDBYTES> s{};
  for (int i = 0; i < 8; ++i) s[i] = static_cast<std::uint8_t>(seed >> (8 * i));
  crypto_sign_seed_keypair(public_key.bytes.data(), secret.data(), s.data());
}

StoredStatement make_statement(const TestKey& key, std::uint64_t seq, std::string body,
                               StatementKind kind) {
  StoredStatement s;
  s.author = key.public_key;
  s.seq = seq;
  s.kind = kind;
  s.bytes = std::move(body);
  crypto_sign_detached(s.signature.data(), nullptr,
                       reinterpret_cast<const unsigned char*>(s.bytes.data()), s.bytes.size(),
                       key.secret.data());
  return s;
}

StoredStatement make_result(const TestKey& key, std::uint64_t seq, const Digest& job,
                            std::uint32_t epoch, const Digest& outputs, bool ok) {
  StoredStatement s = make_statement(
      key, seq, "result " + job.hex() + " " + std::to_string(epoch) + " " + outputs.hex(),
      StatementKind::kResult);
  s.job = job;
  s.epoch = epoch;
  s.outputs_digest = outputs;
  s.ok = ok;
  return s;
}

void write_file(const std::string& path, const std::string& content, int mode) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    VOW_ASSERT(out.good(), "write %s", path.c_str());
  }
  VOW_ASSERT(::chmod(path.c_str(), static_cast<mode_t>(mode)) == 0, "chmod %s", path.c_str());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace vow::store::testing
