#include "transport/validator.h"

#include <doctest/doctest.h>

#include "transport/test_util.h"

namespace vow::transport {
namespace {

struct MapSequences final : SequenceView {
  std::map<AgentKey, std::uint64_t> highest;
  std::map<std::pair<AgentKey, std::uint64_t>, std::string> held;
  std::uint64_t highest_seq(const AgentKey& a) const override {
    auto it = highest.find(a);
    return it == highest.end() ? 0 : it->second;
  }
  bool holds_identical(const AgentKey& a, std::uint64_t seq,
                       std::string_view bytes) const override {
    auto it = held.find({a, seq});
    return it != held.end() && it->second == bytes;
  }
  std::map<std::pair<AgentKey, std::uint64_t>, Digest> vouches;
  std::optional<Digest> vouched(const AgentKey& a, std::uint64_t seq) const override {
    auto it = vouches.find({a, seq});
    return it == vouches.end() ? std::nullopt : std::optional<Digest>(it->second);
  }
};

std::span<const std::uint8_t> sp(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST_CASE("validator rejects each kind of bad statement under its own reason") {
  Identity a = testing::identity_of(1), b = testing::identity_of(2),
           stranger = testing::identity_of(3);
  TrustSet trust;
  trust.add(a.key());
  trust.add(b.key());
  MapSequences seqs;
  seqs.highest[a.key()] = 5;
  std::vector<std::string> lines;
  Validator v(&trust, &seqs, kMaxFrameBytes,
              [&](LogLevel, std::string_view l) { lines.emplace_back(l); });
  auto frame_of = [](const SignedStatement& s) { return *encode_message(testing::batch_of({s})); };
  auto expect = [&](const std::string& frame, RejectReason reason) {
    auto before = v.rejects();
    CHECK(!v.validate(sp(frame), a.key(), PeerRole::kAgent));
    for (std::size_t i = 0; i < kRejectReasonCount; ++i) {
      CHECK_MESSAGE(v.rejects()[i] - before[i] == (i == static_cast<std::size_t>(reason) ? 1u : 0u),
                    reject_reason_name(static_cast<RejectReason>(i)));
    }
  };

  auto good = *sign_statement(a, testing::claim(a.key(), 6));
  auto ok = v.validate(sp(frame_of(good)), b.key(), PeerRole::kAgent);
  REQUIRE(ok);
  // The batch's statement is now the verified value, still carrying its signed form.
  auto& accepted = std::get<StatementBatch>(ok->body).statements;
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0] == testing::claim(a.key(), 6));
  CHECK(accepted[0].signed_form == good);

  SignedStatement flipped = good;
  flipped.bytes[flipped.bytes.size() - 3] ^= 0x10;
  expect(frame_of(flipped), RejectReason::kBadSignature);

  // Signed by the sending peer a, naming b as its author.
  Statement forged = testing::claim(b.key(), 9);
  auto forged_bytes = *encode_statement(forged);
  expect(frame_of(SignedStatement{forged_bytes, sign(a, forged_bytes)}),
         RejectReason::kWrongAuthor);

  expect(frame_of(*sign_statement(stranger, testing::claim(stranger.key(), 1))),
         RejectReason::kUntrustedAuthor);
  // Another statement at a held seq, signed by its author: equivocation evidence, passed
  // on to the core (not rejected) and counted.
  CHECK(v.validate(sp(frame_of(*sign_statement(a, testing::claim(a.key(), 5)))), b.key(),
                   PeerRole::kAgent));
  CHECK(v.validate(sp(frame_of(*sign_statement(a, testing::claim(a.key(), 2)))), b.key(),
                   PeerRole::kAgent));
  CHECK(v.equivocations() == 2);
  CHECK(v.rejected(RejectReason::kReplayed) == 0);
  CHECK(v.rejected(RejectReason::kStaleSequence) == 0);

  auto full = frame_of(good);
  expect(full.substr(0, full.size() / 2), RejectReason::kTruncated);
  Validator small(&trust, &seqs, 64, {});
  CHECK(!small.validate(sp(full), a.key(), PeerRole::kAgent));
  CHECK(small.rejected(RejectReason::kOversized) == 1);
  expect(std::string(64, '\xff'), RejectReason::kMalformed);
  // A probe carrying more membership updates than a probe may.
  Probe flood;
  flood.updates.resize(promises::kMaxProbeUpdates + 1);
  expect(*encode_message(Message{kProtocolVersion, flood}), RejectReason::kMalformed);
  expect(*encode_message(Message{7, Heartbeat{}}), RejectReason::kBadVersion);
  expect(*encode_message(Message{kProtocolVersion, Hello{b.key(), "b", {}, 0}}),
         RejectReason::kPeerMismatch);
  CHECK(!v.validate(sp(frame_of(good)), a.key(), PeerRole::kClient));
  CHECK(v.rejected(RejectReason::kNotAllowed) == 1);
  CHECK(
      v.validate(sp(*encode_message(Message{kProtocolVersion, ControlRequest{1, "status", "{}"}})),
                 a.key(), PeerRole::kClient));
  // A client reads artifacts (vow get from a workstation): it may ask for a stream.
  CHECK(v.validate(sp(*encode_message(Message{kProtocolVersion, FetchRequest{1, blake2b("x"), 0, 4, 65536, 0, {}}})),
                   a.key(), PeerRole::kClient));
  CHECK_FALSE(v.validate(sp(*encode_message(Message{kProtocolVersion, Heartbeat{}})), a.key(),
                         PeerRole::kClient));
  CHECK(v.rejected(RejectReason::kNotAllowed) == 2);
  CHECK(!lines.empty());
}

TEST_CASE("a statement batch keeps only the statements that pass, verified") {
  Identity a = testing::identity_of(1), stranger = testing::identity_of(3);
  TrustSet trust;
  trust.add(a.key());
  MapSequences seqs;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  auto second = *sign_statement(a, testing::claim(a.key(), 2));
  auto frame = *encode_message(
      testing::batch_of({*sign_statement(a, testing::claim(a.key(), 1)),
                         *sign_statement(stranger, testing::claim(stranger.key(), 1)), second}));
  auto m = v.validate(sp(frame), a.key(), PeerRole::kAgent);
  REQUIRE(m);
  auto& kept = std::get<StatementBatch>(m->body).statements;
  REQUIRE(kept.size() == 2);
  CHECK(kept[0] == testing::claim(a.key(), 1));
  CHECK(kept[1] == testing::claim(a.key(), 2));
  CHECK(kept[1].signed_form == second);
  CHECK(v.rejected(RejectReason::kUntrustedAuthor) == 1);

  // A batch with nothing left after validation but refused statements: dropped.
  auto strangers = *encode_message(
      testing::batch_of({*sign_statement(stranger, testing::claim(stranger.key(), 2))}));
  CHECK(!v.validate(sp(strangers), a.key(), PeerRole::kAgent));
  CHECK(v.rejected(RejectReason::kUntrustedAuthor) == 2);

  // One whose statements are all held already, or an empty one (an answer to a sync
  // request with nothing new), goes on empty: it tells the asker this peer is done.
  auto first = *sign_statement(a, testing::claim(a.key(), 1));
  seqs.held[{a.key(), 1}] = first.bytes;
  auto held = v.validate(sp(*encode_message(testing::batch_of({first}))), a.key(),
                         PeerRole::kAgent);
  REQUIRE(held);
  CHECK(std::get<StatementBatch>(held->body).statements.empty());
  auto empty = v.validate(sp(*encode_message(testing::batch_of({}))), a.key(), PeerRole::kAgent);
  REQUIRE(empty);
  CHECK(std::get<StatementBatch>(empty->body).statements.empty());
  // With a refused statement beside a held one: dropped.
  auto mixed = *encode_message(testing::batch_of(
      {first, *sign_statement(stranger, testing::claim(stranger.key(), 3))}));
  CHECK(!v.validate(sp(mixed), a.key(), PeerRole::kAgent));
  // The last batch of an answer to a sync request goes on whatever was refused in it,
  // empty, with its marks: it ends the asker's pull from that peer.
  Message answer =
      testing::batch_of({*sign_statement(stranger, testing::claim(stranger.key(), 4))});
  std::get<StatementBatch>(answer.body).answer = true;
  std::get<StatementBatch>(answer.body).cut = false;
  auto refused = v.validate(sp(*encode_message(answer)), a.key(), PeerRole::kAgent);
  REQUIRE(refused);
  CHECK(std::get<StatementBatch>(refused->body).statements.empty());
  CHECK(std::get<StatementBatch>(refused->body).answer);
  CHECK_FALSE(std::get<StatementBatch>(refused->body).cut);
  CHECK(v.rejected(RejectReason::kUntrustedAuthor) == 4);
}

// Claims seq first.. of `a`, signed together.
std::vector<SignedStatement> signed_together(const Identity& a, std::uint64_t first, std::size_t n) {
  std::vector<SignedStatement> forms(n);
  std::vector<SignedForm*> ptrs;
  for (std::size_t i = 0; i < n; ++i) {
    forms[i].bytes = *encode_statement(testing::claim(a.key(), first + i));
    ptrs.push_back(&forms[i]);
  }
  sign_together(a, ptrs);
  return forms;
}

TEST_CASE("statements signed together: one check of their signature, and each its own path") {
  Identity a = testing::identity_of(1), b = testing::identity_of(2);
  TrustSet trust;
  trust.add(a.key());
  trust.add(b.key());
  MapSequences seqs;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  auto validate = [&](const std::vector<SignedStatement>& forms) {
    auto m = v.validate(sp(*encode_message(testing::batch_of(forms))), b.key(), PeerRole::kAgent);
    std::vector<Statement> kept;
    if (m) kept = std::get<StatementBatch>(m->body).statements;
    return kept;
  };

  auto three = signed_together(a, 1, 3);
  CHECK(three[0].signature == three[2].signature);
  CHECK(!three[0].path.empty());
  auto kept = validate(three);
  REQUIRE(kept.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(kept[i] == testing::claim(a.key(), 1 + i));
    CHECK(kept[i].signed_form == three[i]);  // its path kept, to be stored and relayed
  }
  CHECK(v.shared() == 2);  // the batch's signature checked once, for the first

  // Bytes changed, or a path changed: that statement is refused, the others kept.
  auto next = signed_together(a, 4, 4);
  next[1].bytes[next[1].bytes.size() - 3] ^= 0x10;
  next[2].path[next[2].path.size() - 1] ^= 0x01;
  kept = validate(next);
  REQUIRE(kept.size() == 2);
  CHECK(kept[0].seq == 4);
  CHECK(kept[1].seq == 7);
  CHECK(v.rejected(RejectReason::kBadSignature) == 2);

  // A good path of one batch under another batch's signature: refused.
  auto other = signed_together(a, 8, 2);
  auto mixed = signed_together(a, 10, 2);
  mixed[0].signature = other[0].signature;
  kept = validate({mixed[0]});
  CHECK(kept.empty());
  CHECK(v.rejected(RejectReason::kBadSignature) == 3);
  // A path of the wrong length: refused, not read past.
  auto cut = signed_together(a, 12, 2);
  cut[0].path.resize(cut[0].path.size() - 1);
  CHECK(validate({cut[0]}).empty());
  CHECK(v.rejected(RejectReason::kBadSignature) == 4);

  // The rest of a batch checked in an earlier frame: its signature is not checked again.
  auto split = signed_together(a, 14, 2);
  const std::uint64_t shared_before = v.shared();
  CHECK(validate({split[0]}).size() == 1);
  CHECK(v.shared() == shared_before);
  CHECK(validate({split[1]}).size() == 1);
  CHECK(v.shared() == shared_before + 1);
  // The same statement and path under another signature: not the batch checked.
  auto spoiled = split[1];
  spoiled.signature[0] ^= 0x01;
  CHECK(validate({spoiled}).empty());
  CHECK(v.rejected(RejectReason::kBadSignature) == 5);

  // Signed together by the sending peer, naming another author: a forgery by that peer.
  std::vector<SignedStatement> forged(2);
  forged[0].bytes = *encode_statement(testing::claim(a.key(), 20));
  forged[1].bytes = *encode_statement(testing::claim(a.key(), 21));
  sign_together(b, {&forged[0], &forged[1]});
  CHECK(validate(forged).empty());
  CHECK(v.rejected(RejectReason::kWrongAuthor) == 2);
}

TEST_CASE("a large batch is checked on two threads with the result of one pass in order") {
  Identity a = testing::identity_of(1), b = testing::identity_of(2), stranger = testing::identity_of(3);
  TrustSet trust;
  trust.add(a.key());
  trust.add(b.key());
  MapSequences seqs;
  std::vector<SignedStatement> batch;
  std::vector<Statement> expected;
  for (std::uint64_t seq = 1; seq <= 3 * Validator::kParallelVerifyMin; ++seq) {
    SignedStatement s = *sign_statement(a, testing::claim(a.key(), seq));
    if (seq % 7 == 0) {
      s.signature[5] ^= 1;  // damaged on the way: a bad signature
    } else if (seq % 11 == 0) {
      seqs.held[{a.key(), seq}] = s.bytes;  // held already: a duplicate
    } else if (seq % 13 == 0) {
      s.signature = b.sign(sp(s.bytes));  // b signs a's statement
    } else if (seq % 17 == 0) {
      s = *sign_statement(stranger, testing::claim(stranger.key(), seq));
    } else {
      expected.push_back(testing::claim(a.key(), seq));
    }
    batch.push_back(s);
  }
  seqs.highest[a.key()] = 3 * Validator::kParallelVerifyMin;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  auto frame = *encode_message(testing::batch_of(batch));
  auto m = v.validate(sp(frame), b.key(), PeerRole::kAgent);
  REQUIRE(m);
  auto& kept = std::get<StatementBatch>(m->body).statements;
  REQUIRE(kept.size() == expected.size());
  for (std::size_t i = 0; i < kept.size(); ++i) {
    CHECK(kept[i] == expected[i]);
    CHECK(verify_signature(a.key(), sp(kept[i].signed_form.bytes),
                           kept[i].signed_form.signature));
  }
  // Seqs 7..192: multiples of 7 damaged (27), of 11 held (17, less 77 and 154, which
  // are multiples of 7: 15), of 13 signed by b (14, less 91 and 182, and 143: 11), of 17
  // by a stranger (11, less 119, 187: 9).
  CHECK(v.rejected(RejectReason::kBadSignature) == 27);
  CHECK(v.duplicates() == 15);
  CHECK(v.rejected(RejectReason::kWrongAuthor) == 11);
  CHECK(v.rejected(RejectReason::kUntrustedAuthor) == 9);
}

TEST_CASE("a statement held with the same bytes is a duplicate, dropped unverified") {
  Identity a = testing::identity_of(1), b = testing::identity_of(2);
  TrustSet trust;
  trust.add(a.key());
  MapSequences seqs;
  auto held = *sign_statement(a, testing::claim(a.key(), 4));
  seqs.highest[a.key()] = 4;
  seqs.held[{a.key(), 4}] = held.bytes;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  auto frame_of = [](const SignedStatement& s) { return *encode_message(testing::batch_of({s})); };
  // A batch of duplicates goes on empty (it ends a pull from its sender).
  auto nothing_kept = [](const std::optional<Message>& m) {
    return m && std::get<StatementBatch>(m->body).statements.empty();
  };
  CHECK(nothing_kept(v.validate(sp(frame_of(held)), b.key(), PeerRole::kAgent)));
  CHECK(v.duplicates() == 1);
  // The same bytes with a signature that does not verify: still the statement held
  // (verified when it arrived), so a duplicate, not a rejection.
  SignedStatement resigned = held;
  resigned.signature.fill(0);
  CHECK(nothing_kept(v.validate(sp(frame_of(resigned)), b.key(), PeerRole::kAgent)));
  CHECK(v.duplicates() == 2);
  CHECK(v.rejected(RejectReason::kBadSignature) == 0);
  // Other bytes at that seq are verified: a bad signature is rejected as such.
  Statement changed = testing::claim(a.key(), 4);
  changed.wall_unix_ms += 1;
  auto other = *sign_statement(a, changed);
  other.signature.fill(0);
  CHECK(!v.validate(sp(frame_of(other)), b.key(), PeerRole::kAgent));
  CHECK(v.rejected(RejectReason::kBadSignature) == 1);
  CHECK(v.duplicates() == 2);
  // Held above the highest seq (above a gap: slots a horizon retired that were never
  // held): a duplicate too, not checked again.
  auto above = *sign_statement(a, testing::claim(a.key(), 9));
  seqs.held[{a.key(), 9}] = above.bytes;
  above.signature.fill(0);
  CHECK(nothing_kept(v.validate(sp(frame_of(above)), b.key(), PeerRole::kAgent)));
  CHECK(v.duplicates() == 3);
  CHECK(v.rejected(RejectReason::kBadSignature) == 1);
}

TEST_CASE("a signed form a horizon vouches for is taken unchecked; nothing else at its slot is") {
  Identity a = testing::identity_of(1), b = testing::identity_of(2),
           stranger = testing::identity_of(3);
  TrustSet trust;
  trust.add(a.key());
  trust.add(b.key());
  MapSequences seqs;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  auto frame_of = [](const std::vector<SignedStatement>& s) {
    return *encode_message(testing::batch_of(s));
  };
  // The vouched form, its signature spoiled: taken, so its signature was not checked
  // (the horizon's members checked the form they hold; this one has its digest).
  auto spoiled = *sign_statement(a, testing::claim(a.key(), 5));
  spoiled.signature.fill(0);
  seqs.vouches[{a.key(), 5}] = signed_digest(spoiled.bytes, spoiled.signature);
  auto m = v.validate(sp(frame_of({spoiled})), b.key(), PeerRole::kAgent);
  REQUIRE(m);
  CHECK(std::get<StatementBatch>(m->body).statements.at(0) == testing::claim(a.key(), 5));
  CHECK(v.vouched() == 1);
  CHECK(v.total_rejected() == 0);
  // Other bytes at the vouched slot, or the same bytes with another signature, are
  // checked as any statement: a bad signature is rejected.
  Statement changed = testing::claim(a.key(), 5);
  changed.wall_unix_ms += 1;
  auto other = *sign_statement(a, changed);
  other.signature.fill(0);
  CHECK(!v.validate(sp(frame_of({other})), b.key(), PeerRole::kAgent));
  auto resigned = spoiled;
  resigned.signature[0] = 1;
  CHECK(!v.validate(sp(frame_of({resigned})), b.key(), PeerRole::kAgent));
  CHECK(v.rejected(RejectReason::kBadSignature) == 2);
  // A good form at the slot with another digest: verified, and taken.
  auto good = *sign_statement(a, testing::claim(a.key(), 5));
  CHECK(v.validate(sp(frame_of({good})), b.key(), PeerRole::kAgent));
  CHECK(v.vouched() == 1);
  // A vouch does not make an untrusted author trusted.
  auto foreign = *sign_statement(stranger, testing::claim(stranger.key(), 1));
  seqs.vouches[{stranger.key(), 1}] = signed_digest(foreign.bytes, foreign.signature);
  CHECK(!v.validate(sp(frame_of({foreign})), b.key(), PeerRole::kAgent));
  CHECK(v.rejected(RejectReason::kUntrustedAuthor) == 1);
  CHECK(v.vouched() == 2);  // its signature was not checked; its author was
  // A large batch (checked on two threads) takes its vouched forms unchecked and checks
  // the rest, in order.
  std::vector<SignedStatement> batch;
  std::size_t spoiled_unvouched = 0;
  for (std::uint64_t seq = 10; seq < 10 + 2 * Validator::kParallelVerifyMin; ++seq) {
    auto s = *sign_statement(a, testing::claim(a.key(), seq));
    if (seq % 2 == 0) {
      s.signature.fill(7);
      seqs.vouches[{a.key(), seq}] = signed_digest(s.bytes, s.signature);
    } else if (seq % 5 == 0) {
      s.signature.fill(7);  // not vouched: rejected
      ++spoiled_unvouched;
    }
    batch.push_back(s);
  }
  auto big = v.validate(sp(frame_of(batch)), b.key(), PeerRole::kAgent);
  REQUIRE(big);
  const auto& kept = std::get<StatementBatch>(big->body).statements;
  CHECK(spoiled_unvouched == 13);  // 15, 25, ..., 135
  CHECK(kept.size() == batch.size() - spoiled_unvouched);
  CHECK(v.rejected(RejectReason::kBadSignature) == 2 + spoiled_unvouched);
  CHECK(v.vouched() == 2 + Validator::kParallelVerifyMin);
  for (std::size_t i = 1; i < kept.size(); ++i) CHECK(kept[i - 1].seq < kept[i].seq);
}

TEST_CASE("rejection logging is rate limited") {
  TrustSet trust;
  NoSequences seqs;
  int lines = 0;
  Validator v(&trust, &seqs, kMaxFrameBytes, [&](LogLevel, std::string_view) { ++lines; });
  v.set_now(1000);
  std::string junk(64, '\xff');
  for (int i = 0; i < 100; ++i)
    (void)v.validate(sp(junk), testing::identity_of(1).key(), PeerRole::kAgent);
  CHECK(v.rejected(RejectReason::kMalformed) == 100);
  CHECK(lines == Validator::kLogLinesPerWindow);
  v.set_now(1000 + Validator::kLogWindowMs);
  (void)v.validate(sp(junk), testing::identity_of(1).key(), PeerRole::kAgent);
  CHECK(lines == Validator::kLogLinesPerWindow + 2);  // the summary, then the line
}

}  // namespace
}  // namespace vow::transport
