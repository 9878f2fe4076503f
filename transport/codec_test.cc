#include "transport/codec.h"

#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "transport/test_util.h"

namespace vow::transport {
namespace {

using testing::digest_of;
using testing::job_ref;

ArtifactRef tree_ref() {
  ArtifactRef a;
  a.digest = digest_of("tree");
  a.is_tree = true;
  a.size_bytes = 42;
  a.entries = {TreeEntry{"a", EntryKind::kFile, digest_of("a")},
               TreeEntry{"b", EntryKind::kTree, digest_of("b")}};
  return a;
}

std::vector<StatementBody> every_body() {
  JobResult r;
  r.job = job_ref();
  r.epoch = 2;
  r.inputs = {NamedArtifact{"in", tree_ref()}};
  r.outputs = {NamedArtifact{"out", ArtifactRef{digest_of("o"), false, 7, {}}}};
  r.ok = true;
  r.exit_status = 0;
  r.started_unix_ms = 5;
  r.ended_unix_ms = 9;
  r.stdout_digest = digest_of("stdout");
  JobResult failed = r;
  failed.ok = false;
  failed.exit_status = 137;
  failed.error = "killed";
  failed.outputs.clear();
  failed.stdout_digest.reset();
  failed.stderr_digest = digest_of("stderr");
  Accept acc{
      job_ref(), 4, {Accept::Binding{"in", digest_of("x"), testing::identity_of(5).key(), 17}}};
  return {
      Advert{"node-a",
             {"tcp://a:7400", "tcp://[::1]:7400"},
             {AdvertPromise{"wc", "count", digest_of("s"), 2}},
             {AdvertSource{"wc", "corpus"}}},
      PipelineDef{"wc", digest_of("p"), "[pipeline]\nname = \"wc\"\n"},
      SourceVersion{"wc", "corpus", 3, tree_ref()},
      Claim{job_ref(), 1, 250},
      Release{job_ref(), 1, "lost tie-break"},
      r,
      failed,
      acc,
      Checkpoint{job_ref(), 6, ArtifactRef{digest_of("ck"), false, 100, {}}},
  };
}

TEST_CASE("every statement kind round trips through sign and verify") {
  Identity id = testing::identity_of(1);
  std::uint64_t seq = 1;
  for (auto& body : every_body()) {
    Statement s;
    s.author = id.key();
    s.seq = seq++;
    s.wall_unix_ms = -12;
    s.body = body;
    auto signed_st = sign_statement(id, s);
    REQUIRE(signed_st);
    auto back = decode_and_verify(*signed_st);
    REQUIRE_MESSAGE(back, back.status().to_string());
    CHECK(*back == s);
    // Encoding is deterministic, so re-encoding the decoded value gives the same bytes.
    CHECK(*encode_statement(*back) == signed_st->bytes);
  }
}

TEST_CASE("every message kind round trips") {
  Identity id = testing::identity_of(1);
  auto st = sign_statement(id, testing::claim(id.key(), 1));
  REQUIRE(st);
  VersionVector vv{{id.key(), 9}, {testing::identity_of(2).key(), 3}};
  std::vector<MessageBody> bodies = {
      Hello{id.key(), "node-a", {"tcp://a:1"}, 1, vv},
      Heartbeat{1, 4, 2, 99, {}, 0, 0, 0},
      Heartbeat{1, 4, 1, 99, {{digest_of("job"), 3}}, 12, 5, 6},
      HaveRequest{},
      Have{5, 6, {digest_of("a"), digest_of("b")}},
      StatementMsg{*st, {}},
      LedgerRequest{vv},
      LedgerBatch{{*st, *st}, {}, true},
      FetchRequest{7, digest_of("f"), 1024, 16, 262144},
      Chunk{7, 1024, 4096, std::string("\0\1\2", 3), false},
      Credit{7, 8, false},
      FetchError{7, 2, "not found"},
      ControlRequest{1, "status", "{}"},
      ControlResponse{1, true, "{\"agents\":[]}", ""},
  };
  for (auto& b : bodies) {
    Message m{kProtocolVersion, b};
    auto frame = encode_message(m);
    REQUIRE(frame);
    auto back = decode_message(*frame);
    REQUIRE_MESSAGE(back, back.status().to_string());
    CHECK(*back == m);
  }
}

TEST_CASE("a flipped bit anywhere in a statement is caught") {
  Identity id = testing::identity_of(1);
  auto st = sign_statement(id, testing::claim(id.key(), 1));
  REQUIRE(st);
  for (std::size_t bit = 0; bit < st->bytes.size() * 8; ++bit) {
    SignedStatement bad = *st;
    bad.bytes[bit / 8] = static_cast<char>(bad.bytes[bit / 8] ^ (1 << (bit % 8)));
    DecodeError err;
    CHECK(!decode_and_verify(bad, &err));
    CHECK(err != DecodeError::kNone);
  }
  for (std::size_t bit = 0; bit < 512; bit += 7) {
    SignedStatement bad = *st;
    bad.signature[bit / 8] ^= static_cast<std::uint8_t>(1 << (bit % 8));
    DecodeError err;
    CHECK(!decode_and_verify(bad, &err));
    CHECK(err == DecodeError::kBadSignature);
  }
}

TEST_CASE("frames: truncated, oversized, wrong version and garbage are classified") {
  Identity id = testing::identity_of(1);
  auto frame = encode_message(Message{kProtocolVersion, Heartbeat{1, 2, 3, 4, {}, 0, 0, 0}});
  REQUIRE(frame);
  DecodeError err;
  for (std::size_t n = 0; n < frame->size(); ++n) {
    CHECK(!decode_message(std::string_view(*frame).substr(0, n), kMaxFrameBytes, &err));
    CHECK((err == DecodeError::kTruncated || err == DecodeError::kMalformed));
  }
  CHECK(!decode_message(*frame + std::string(8, '\0'), kMaxFrameBytes, &err));
  CHECK(err == DecodeError::kMalformed);
  CHECK(!decode_message(*frame, frame->size() - 1, &err));
  CHECK(err == DecodeError::kOversized);
  auto v2 = encode_message(Message{2, Heartbeat{}});
  REQUIRE(v2);
  CHECK(!decode_message(*v2, kMaxFrameBytes, &err));
  CHECK(err == DecodeError::kBadVersion);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 200, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    // Sometimes a plausible segment table, so decoding goes deeper.
    if (junk.size() >= 8 && i % 2) {
      std::uint32_t words = static_cast<std::uint32_t>((junk.size() - 8) / 8);
      std::memset(junk.data(), 0, 4);
      std::memcpy(junk.data() + 4, &words, 4);
      junk.resize(8 + words * 8);
    }
    auto m = decode_message(junk, kMaxFrameBytes, &err);
    if (m) CHECK(err == DecodeError::kNone);
    auto s = decode_and_verify(junk, Signature{}, &err);
    CHECK(!s);
  }
}

TEST_CASE("statement limits") {
  Identity id = testing::identity_of(1);
  Statement s = testing::claim(id.key(), 0);
  CHECK(!encode_statement(s));
  s.seq = 1;
  PipelineDef big{"p", digest_of("p"), std::string(kMaxStatementBytes, 'x')};
  s.body = big;
  CHECK(encode_statement(s).status().code() == StatusCode::kInvalid);
}

}  // namespace
}  // namespace vow::transport
