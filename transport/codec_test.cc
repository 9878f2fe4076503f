#include "transport/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <random>

#include "promises/batch_proof.h"
#include "transport/protocol.capnp.h"
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
  r.bindings = {InputBinding{"in/a", digest_of("a"), testing::identity_of(5).key(), 12},
                InputBinding{"in/b", digest_of("b"), testing::identity_of(6).key(), 3}};
  JobResult failed = r;
  failed.ok = false;
  failed.exit_status = 137;
  failed.error = "killed";
  failed.outputs.clear();
  failed.stdout_digest.reset();
  failed.stderr_digest = digest_of("stderr");
  Accept acc{
      job_ref(), 4, {Accept::Binding{"in", digest_of("x"), testing::identity_of(5).key(), 17}}};
  Horizon horizon;
  horizon.number = 3;
  horizon.previous = digest_of("h2");
  horizon.cuts = {HorizonCut{testing::identity_of(5).key(), 41, digest_of("prefix"), true},
                  HorizonCut{testing::identity_of(6).key(), 7, digest_of("prefix6"), false}};
  horizon.retired = {HorizonRange{0, 2, 5}, HorizonRange{1, 3, 3}};
  horizon.settled = {HorizonRef{0, 6, digest_of("form")}, HorizonRef{1, 2, {}}};
  horizon.superseded = true;
  horizon.bases = {HorizonLineBase{1, "wc", "corpus", 4, 3}};
  horizon.checkpoint = true;
  horizon.content = horizon_content(horizon);
  return {
      Advert{"node-a",
             {"tcp://a:7400", "tcp://[::1]:7400"},
             {AdvertPromise{"wc", "count", digest_of("s"), 2}},
             {AdvertSource{"wc", "corpus"}}},
      PipelineDef{"wc", digest_of("p"), "[pipeline]\nname = \"wc\"\n"},
      SourceVersion{"wc", "corpus", 3, tree_ref()},
      Claim{job_ref(), 1, 250, std::nullopt},
      Claim{job_ref(), 2, 250, StatementRef{testing::identity_of(5).key(), 41}},
      Release{job_ref(), 1, "lost tie-break"},
      r,
      failed,
      acc,
      Checkpoint{job_ref(), 6, ArtifactRef{digest_of("ck"), false, 100, {}}},
      Retry{job_ref(), 7, "vow retry"},
      horizon,
      Horizon{4,
              digest_of("prev"),
              {},
              {},
              {},
              StatementRef{testing::identity_of(5).key(), 9},
              digest_of("content"),
              false,
              {}},
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
      Hello{id.key(), "node-a", {"tcp://a:1"}, 12},
      Heartbeat{1, 4, 0, 0, 0},
      Heartbeat{1, 4, 12, 5, 6},
      HaveRequest{},
      HaveRequest{5, 6},
      Have{5, 6, {digest_of("a"), digest_of("b")}, false, 0, {}},
      // A delta: added in `digests`, what went in `removed`, from base version 4.
      Have{5, 6, {digest_of("c")}, true, 4, {digest_of("a")}},
      SyncRequest{vv, {}},
      SyncRequest{vv, {{id.key(), digest_of("prefix")}}},
      SyncRequest{vv, {}, 7},
      SyncRequest{{}, {}, 3, digest_of("summary")},
      // Decoded batches hold signed forms only (the validator verifies them).
      StatementBatch{{testing::signed_only(*st), testing::signed_only(*st)}},
      // Void slots ride along (a hint the core checks).
      StatementBatch{{testing::signed_only(*st)}, {VoidRange{id.key(), 2, 7}}},
      // The last batch of an answer to a sync request, cut or not.
      StatementBatch{{testing::signed_only(*st)}, {}, true, true},
      StatementBatch{{}, {}, true, false},
      // Small outputs with the results that name them.
      StatementBatch{{testing::signed_only(*st)},
                     {},
                     false,
                     false,
                     {promises::Attached{digest_of("o"), std::string("\0out\n", 5)},
                      promises::Attached{digest_of("e"), ""}}},
      FetchRequest{7, digest_of("f"), 1024, 16, 262144, 0, {}},
      FetchRequest{8, digest_of("g"), 0, 16, 262144, 41234, std::string(kBulkTokenBytes, 't')},
      Chunk{7, 1024, 4096, std::string("\0\1\2", 3), false},
      Credit{7, 8, false},
      FetchError{7, 2, "not found"},
      ControlRequest{1, "status", "{}"},
      ControlResponse{1, true, "{\"agents\":[]}", ""},
      Probe{},
      Probe{Probe::Kind::kPingReq,
            9,
            testing::identity_of(2).key(),
            3,
            {MemberUpdate{id.key(), 4, MemberState::kSuspect, testing::identity_of(2).key()},
             MemberUpdate{testing::identity_of(2).key(), 1, MemberState::kDead, std::nullopt}},
            Heartbeat{1, 4, 12, 5, 6}},
      Probe{Probe::Kind::kAck, 9, std::nullopt, 0, {}, Heartbeat{}},
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

TEST_CASE("a statement batch travels as its statements' signed forms") {
  Identity id = testing::identity_of(1);
  Statement first = testing::claim(id.key(), 1), second = testing::claim(id.key(), 2);
  first.signed_form = *sign_statement(id, first);
  second.signed_form = *sign_statement(id, second);
  auto frame = encode_message(Message{kProtocolVersion, StatementBatch{{first, second}}});
  REQUIRE(frame);
  auto back = decode_message(*frame);
  REQUIRE_MESSAGE(back, back.status().to_string());
  // Only the signed forms travel: the values come back when the validator verifies them.
  CHECK(std::get<StatementBatch>(back->body) ==
        StatementBatch{
            {testing::signed_only(first.signed_form), testing::signed_only(second.signed_form)}});
  CHECK(*decode_and_verify(std::get<StatementBatch>(back->body).statements[1].signed_form) ==
        second);

  // A statement that was never signed (nor verified) cannot travel: a bug in the caller.
  Statement unsigned_st = testing::claim(id.key(), 3);
  auto refused = encode_message(Message{kProtocolVersion, StatementBatch{{first, unsigned_st}}});
  CHECK(refused.status().code() == StatusCode::kInvalid);
}

// An envelope as an older sender wrote it, built field by field.
std::string legacy_frame(const std::function<void(wire::Envelope::Body::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto root = mb.initRoot<wire::Envelope>();
  root.setProtocolVersion(kProtocolVersion);
  fill(root.initBody());
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

TEST_CASE("what older senders set in the unused fields decodes and is ignored") {
  Identity id = testing::identity_of(1);
  auto st = *sign_statement(id, testing::claim(id.key(), 1));
  // A single-statement envelope is taken as a batch of one.
  auto single = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto s = b.initStatement();
    s.setBytes(
        capnp::Data::Reader(reinterpret_cast<const kj::byte*>(st.bytes.data()), st.bytes.size()));
    s.setSignature(capnp::Data::Reader(st.signature.data(), st.signature.size()));
  }));
  REQUIRE_MESSAGE(single, single.status().to_string());
  CHECK(single->body == MessageBody(StatementBatch{{testing::signed_only(st)}}));

  // A heartbeat's claim counts and list (even one no longer checked), a batch's `more`.
  auto heartbeat = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto h = b.initHeartbeat();
    h.setRunning(1);
    h.setCapacity(2);
    h.setActiveClaims(1);
    h.setHighestSeq(40);
    h.initClaims(1)[0].setEpoch(3);  // a job id of 0 bytes
    h.setVvSum(7);
  }));
  REQUIRE_MESSAGE(heartbeat, heartbeat.status().to_string());
  CHECK(heartbeat->body == MessageBody(Heartbeat{1, 2, 7, 0, 0}));
  auto more = decode_message(
      legacy_frame([&](wire::Envelope::Body::Builder b) { b.initLedgerBatch().setMore(true); }));
  REQUIRE_MESSAGE(more, more.status().to_string());
  CHECK(more->body == MessageBody(StatementBatch{}));

  // A statement of no bytes is no signed form at all: the frame is malformed.
  auto no_bytes = legacy_frame([&](wire::Envelope::Body::Builder b) {
    b.initStatement().setSignature(capnp::Data::Reader(st.signature.data(), 64));
  });
  DecodeError err;
  CHECK(!decode_message(no_bytes, kMaxFrameBytes, &err));
  CHECK(err == DecodeError::kMalformed);
}

TEST_CASE("a probe with a short key, an unknown state or too many updates is malformed") {
  auto short_target = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto p = b.initProbe();
    p.setTarget(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("abc"), 3));
  }));
  CHECK(!short_target);
  auto unknown_state = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto u = b.initProbe().initUpdates(1)[0];
    Identity id = testing::identity_of(1);
    u.setAgent(capnp::Data::Reader(id.key().bytes.data(), id.key().bytes.size()));
    u.setState(static_cast<wire::Probe::MemberUpdate::State>(7));
  }));
  CHECK(!unknown_state);
  auto too_many = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto l = b.initProbe().initUpdates(static_cast<unsigned>(promises::kMaxProbeUpdates + 1));
    Identity id = testing::identity_of(1);
    for (auto u : l) u.setAgent(capnp::Data::Reader(id.key().bytes.data(), id.key().bytes.size()));
  }));
  CHECK(!too_many);
}

TEST_CASE("a batch with attached bytes over the limits or a short digest is malformed") {
  Digest d = testing::digest_of("o");
  auto attach = [&](std::size_t items, std::size_t bytes, std::size_t digest_bytes) {
    return decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
      auto l = b.initLedgerBatch().initAttached(static_cast<unsigned>(items));
      std::string payload(bytes, 'x');
      for (auto a : l) {
        a.setDigest(capnp::Data::Reader(d.bytes.data(), digest_bytes));
        a.setBytes(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(payload.data()),
                                       payload.size()));
      }
    }));
  };
  auto largest = attach(1, promises::kMaxAttachedBytes, 32);
  REQUIRE(largest);
  CHECK(std::get<StatementBatch>(largest->body).attached.size() == 1);
  auto too_large = attach(1, promises::kMaxAttachedBytes + 1, 32);
  REQUIRE(!too_large);
  CHECK(too_large.status().message().find("attached artifact of 4097 bytes") != std::string::npos);
  const std::size_t fit = promises::kMaxAttachedBatchBytes / promises::kMaxAttachedBytes;
  CHECK(attach(fit, promises::kMaxAttachedBytes, 32));
  auto too_many = attach(fit + 1, promises::kMaxAttachedBytes, 32);
  REQUIRE(!too_many);
  CHECK(too_many.status().message().find("in one batch") != std::string::npos);
  CHECK(!attach(1, 10, 31));
}

TEST_CASE("a fetch request asking a plain link with a token not of 16 bytes is malformed") {
  Digest d = testing::digest_of("f");
  auto short_token = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto r = b.initFetchRequest();
    r.setArtifact(capnp::Data::Reader(d.bytes.data(), d.bytes.size()));
    r.setBulkPort(41234);
    r.setBulkToken(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("abc"), 3));
  }));
  REQUIRE(!short_token);
  CHECK(short_token.status().message().find("bulk token of 3 bytes") != std::string::npos);
  // Without a port the token leads nothing: dropped, so the frame's round trip holds.
  auto no_port = decode_message(legacy_frame([&](wire::Envelope::Body::Builder b) {
    auto r = b.initFetchRequest();
    r.setArtifact(capnp::Data::Reader(d.bytes.data(), d.bytes.size()));
    r.setBulkToken(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("abc"), 3));
  }));
  REQUIRE(no_port);
  CHECK(std::get<FetchRequest>(no_port->body).bulk_token.empty());
}

TEST_CASE("statements signed together travel with their paths and verify one by one") {
  Identity id = testing::identity_of(1);
  std::vector<Statement> sts;
  for (std::uint64_t seq = 1; seq <= 5; ++seq) {
    sts.push_back(testing::claim(id.key(), seq));
    sts.back().signed_form.bytes = *encode_statement(sts.back());
  }
  std::vector<SignedForm*> forms;
  for (auto& st : sts) forms.push_back(&st.signed_form);
  sign_together(id, forms);
  auto frame = encode_message(Message{kProtocolVersion, StatementBatch{sts}});
  REQUIRE(frame);
  auto back = decode_message(*frame);
  REQUIRE(back);
  const auto& got = std::get<StatementBatch>(back->body).statements;
  REQUIRE(got.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(got[i].signed_form.path == sts[i].signed_form.path);
    auto st = decode_and_verify(got[i].signed_form);
    REQUIRE_MESSAGE(st, st.status().to_string());
    CHECK(*st == sts[i]);
    CHECK(st->signed_form == sts[i].signed_form);
    // Without its path the batch's signature is not a signature over its bytes.
    DecodeError err;
    CHECK(!decode_and_verify(got[i].signed_form.bytes, got[i].signed_form.signature, "", &err));
    CHECK(err == DecodeError::kBadSignature);
  }
  // One statement alone: signed over its bytes, as before batches.
  Statement alone = testing::claim(id.key(), 9);
  alone.signed_form.bytes = *encode_statement(alone);
  sign_together(id, {&alone.signed_form});
  CHECK(alone.signed_form.path.empty());
  CHECK(alone.signed_form == *sign_statement(id, alone));
  // More statements than a batch holds: signed in batches of kMaxBatchLeaves.
  std::vector<SignedForm> many(kMaxBatchLeaves + 1);
  std::vector<SignedForm*> many_ptrs;
  for (auto& f : many) {
    f.bytes = sts[0].signed_form.bytes;
    many_ptrs.push_back(&f);
  }
  sign_together(id, many_ptrs);
  CHECK(many[0].signature == many[kMaxBatchLeaves - 1].signature);
  CHECK(many[kMaxBatchLeaves].path.empty());  // the last alone
  CHECK(decode_and_verify(many[kMaxBatchLeaves - 1]).is_ok());
  CHECK(decode_and_verify(many[kMaxBatchLeaves]).is_ok());
  // A path longer than a batch of kMaxBatchLeaves can have: refused unread.
  Statement long_path = sts[0];
  long_path.signed_form.path.append(17 * 32, 'x');
  auto long_frame = encode_message(Message{kProtocolVersion, StatementBatch{{long_path}}});
  REQUIRE(long_frame);
  DecodeError err;
  CHECK(!decode_message(*long_frame, kMaxFrameBytes, &err));
  CHECK(err == DecodeError::kOversized);
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
  auto frame = encode_message(Message{kProtocolVersion, Heartbeat{1, 2, 3, 4, 5}});
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
    auto s = decode_and_verify(junk, Signature{}, "", &err);
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
