#include "transport/identity.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "transport/test_util.h"

namespace vow::transport {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/vow-identity-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST_CASE("agent id round trips and rejects typos") {
  for (std::uint8_t n : {1, 2, 77, 255}) {
    Identity id = testing::identity_of(n);
    std::string text = id.id();
    CHECK(text.size() == 58);
    CHECK(text.starts_with("vow"));
    auto back = parse_agent_id(text);
    REQUIRE(back);
    CHECK(*back == id.key());
    auto upper = text;
    for (auto& c : upper) c = static_cast<char>(std::toupper(c));
    upper.replace(0, 3, "vow");
    CHECK(parse_agent_id(upper).is_ok());
    auto hex = parse_agent_key(id.key().hex());
    REQUIRE(hex);
    CHECK(*hex == id.key());
    // One mistyped character is caught by the check bytes.
    auto typo = text;
    typo[10] = typo[10] == 'a' ? 'b' : 'a';
    CHECK(!parse_agent_id(typo));
  }
  CHECK(!parse_agent_id("vow"));
  CHECK(!parse_agent_id("xyz" + testing::identity_of(1).id().substr(3)));
  CHECK(!parse_agent_key("zz" + std::string(62, '0')));
}

TEST_CASE("identity is created once with mode 0600 and reloaded") {
  TempDir dir;
  bool created = false;
  auto a = load_or_create_identity(dir.path / "state", &created);
  REQUIRE(a);
  CHECK(created);
  struct stat st;
  REQUIRE(::stat((dir.path / "state" / "identity").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto b = load_or_create_identity(dir.path / "state", &created);
  REQUIRE(b);
  CHECK(!created);
  CHECK(b->key() == a->key());
  auto sig = a->sign(std::span<const std::uint8_t>());
  CHECK(verify_signature(b->key(), {}, sig));
}

TEST_CASE("key file readable by group or others is refused, naming file and mode") {
  TempDir dir;
  fs::path file = dir.path / "client.key";
  REQUIRE(save_key_file(testing::identity_of(3), file).is_ok());
  CHECK(load_key_file(file).is_ok());
  for (mode_t mode : {0640, 0604, 0660, 0644}) {
    REQUIRE(::chmod(file.c_str(), mode) == 0);
    auto r = load_key_file(file);
    REQUIRE(!r);
    CHECK(r.status().code() == StatusCode::kInvalid);
    CHECK(r.status().message().find(file.string()) != std::string::npos);
    char m[8];
    std::snprintf(m, sizeof(m), "%04o", static_cast<unsigned>(mode));
    CHECK(r.status().message().find(m) != std::string::npos);
  }
  REQUIRE(::chmod(file.c_str(), 0600) == 0);
  auto ok = load_key_file(file);
  REQUIRE(ok);
  CHECK(ok->key() == testing::identity_of(3).key());
  CHECK(load_key_file(dir.path / "missing").status().code() == StatusCode::kNotFound);
  {
    std::ofstream f(dir.path / "junk");
    f << "not a key\n";
  }
  ::chmod((dir.path / "junk").c_str(), 0600);
  CHECK(load_key_file(dir.path / "junk").status().code() == StatusCode::kCorrupt);
}

TEST_CASE("trust set maps curve keys back and trusts nothing by default") {
  TrustSet trust;
  Identity a = testing::identity_of(1), b = testing::identity_of(2);
  CHECK(!trust.role(a.key()));
  REQUIRE(trust.add(a.id()).is_ok());
  REQUIRE(trust.add(b.key().hex(), PeerRole::kClient).is_ok());
  CHECK(trust.trusts_agent(a.key()));
  CHECK(!trust.trusts_agent(b.key()));
  CHECK(trust.role(b.key()) == PeerRole::kClient);
  auto curve = a.curve();
  auto back = trust.by_curve_key(curve.public_key);
  REQUIRE(back);
  CHECK(*back == a.key());
  CHECK(!trust.by_curve_key(testing::identity_of(9).curve().public_key));
  CHECK(!trust.add("nonsense").is_ok());
}

}  // namespace
}  // namespace vow::transport
