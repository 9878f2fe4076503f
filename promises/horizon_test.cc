#include "promises/horizon.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "promises/claim_book.h"
#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

const Digest kStage = blake2b("stage");

JobRef job_ref(const std::string& name) {
  JobRef j;
  j.job = blake2b(name);
  j.pipeline = "p";
  j.stage = "s";
  j.stage_digest = kStage;
  return j;
}

Statement make(std::uint8_t author, std::uint64_t seq, StatementBody body) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  st.body = std::move(body);
  return st;
}

Statement advert(std::uint8_t author, std::uint64_t seq) {
  Advert a;
  a.name = "a" + std::to_string(author);
  a.promises.push_back({"p", "s", kStage, 2});
  return make(author, seq, a);
}

Statement claim(std::uint8_t author, std::uint64_t seq, const std::string& job,
                std::uint32_t epoch = 1) {
  Claim c;
  c.job = job_ref(job);
  c.epoch = epoch;
  return make(author, seq, c);
}

Statement result(std::uint8_t author, std::uint64_t seq, const std::string& job, bool ok,
                 std::uint32_t epoch = 1) {
  JobResult r;
  r.job = job_ref(job);
  r.epoch = epoch;
  r.ok = ok;
  if (ok) r.outputs.push_back({"o", ArtifactRef{blake2b(job + "-out"), false, 1, {}}});
  return make(author, seq, r);
}

Statement release(std::uint8_t author, std::uint64_t seq, const std::string& job,
                  std::uint32_t epoch = 1) {
  return make(author, seq, Release{job_ref(job), epoch, "lost the tie-break"});
}

Statement accept(std::uint8_t author, std::uint64_t seq, const std::string& job) {
  return make(author, seq, Accept{job_ref(job), 1, {}});
}

// Two agents' statements: job "done" was claimed by both, agent 2 released, agent 1 ran
// it and accepted its inputs and published its result; job "open" is claimed by agent 2
// and not finished; job "failed" failed once at epoch 1 on agent 1, nothing since.
std::vector<Statement> history() {
  return {advert(1, 1),           advert(2, 1),         claim(1, 2, "done"),
          claim(2, 2, "done"),    release(2, 3, "done"), accept(1, 3, "done"),
          result(1, 4, "done", true), claim(2, 4, "open"), claim(1, 5, "failed"),
          result(1, 6, "failed", false)};
}

void fill(Ledger& l, const std::vector<Statement>& statements) {
  for (const auto& st : statements) REQUIRE(l.add(st) == Ledger::AddResult::kNew);
}

}  // namespace

TEST_CASE("horizon: a settled job keeps its result; its claims, release and accept retire") {
  Ledger l;
  fill(l, history());
  ClaimBook book(l, key(1));
  for (const auto& st : history()) book.note(*l.get(st.author, st.seq));
  const Statement* canonical = book.canonical(blake2b("done"));
  REQUIRE(canonical != nullptr);

  auto h = compute_horizon(l, l.version_vector(), 1, Digest{});
  REQUIRE(h.has_value());
  CHECK(h->content == horizon_content(*h));
  // Agent 1: claim 2 and accept 3 of "done"; agent 2: claim 2 and release 3 of "done".
  CHECK(horizon_retired_statements(*h) == 4);
  REQUIRE(h->settled.size() == 1);
  CHECK(h->cuts[h->settled[0].cut].author == key(1));
  CHECK(h->settled[0].seq == 4);
  for (const auto& c : h->cuts) CHECK(c.member);

  // The same statements give the same proposal on any ledger that holds them.
  Ledger other;
  fill(other, history());
  auto again = compute_horizon(other, other.version_vector(), 1, Digest{});
  REQUIRE(again.has_value());
  CHECK(again->content == h->content);

  const VersionVector vv = l.version_vector();
  auto changed = l.apply_horizon(*h);
  CHECK(changed.count(blake2b("done")) == 1);
  CHECK(l.take_retired().size() == 4);
  CHECK(l.size() == history().size() - 4);
  CHECK(l.version_vector() == vv);  // retired slots still count as held
  CHECK(l.horizon_number() == 1);
  CHECK(l.is_retired(key(1), 2));
  CHECK(l.known(key(2), 3));
  CHECK_FALSE(l.is_retired(key(2), 4));  // the open claim stays

  // The job is still done, by the same result, with no claim left to bind it.
  book.invalidate();
  REQUIRE(book.canonical(blake2b("done")) != nullptr);
  CHECK(book.canonical(blake2b("done"))->seq == 4);
  CHECK(l.job(blake2b("done"))->claims.empty());
  // The unfinished jobs are as they were.
  CHECK(l.job(blake2b("open"))->claims.size() == 1);
  CHECK(book.failed_attempts(blake2b("failed")) == 1);

  // A retired statement sent again by a peer that still holds it is a duplicate.
  CHECK(l.add(claim(1, 2, "done")) == Ledger::AddResult::kDuplicate);
  CHECK(l.add(release(2, 3, "done")) == Ledger::AddResult::kDuplicate);
  CHECK(l.size() == history().size() - 4);

  // Prefix digests from the cut up stay equal to those of a ledger that kept everything.
  CHECK(l.prefix_digest(key(1), 6) == other.prefix_digest(key(1), 6));
  CHECK_FALSE(l.prefix_digest(key(1), 5).has_value());  // behind the cut: not kept
  REQUIRE(l.add(result(1, 7, "open", true)) == Ledger::AddResult::kNew);
  REQUIRE(other.add(result(1, 7, "open", true)) == Ledger::AddResult::kNew);
  CHECK(l.prefix_digest(key(1), 7) == other.prefix_digest(key(1), 7));
}

TEST_CASE("horizon: an agent that lacks statements behind the cut takes it, then catches up") {
  Ledger full;
  fill(full, history());
  auto h = compute_horizon(full, full.version_vector(), 1, Digest{});
  REQUIRE(h.has_value());
  full.apply_horizon(*h);

  // A laggard that holds only agent 2's first two statements and agent 1's advert.
  Ledger lag;
  fill(lag, {advert(1, 1), advert(2, 1), claim(2, 2, "done")});
  lag.apply_horizon(*h);
  CHECK(lag.take_retired().size() == 1);  // its copy of agent 2's claim
  // What the horizon kept reaches it from a peer (missing_for sends only what is held).
  auto missing = full.missing_for(lag.version_vector(), 100);
  for (const auto& st : missing) lag.add(st);
  CHECK(lag.version_vector() == full.version_vector());
  CHECK(lag.size() == full.size());
  CHECK(lag.fingerprint() == full.fingerprint());
  for (std::uint8_t a : {1, 2}) {
    auto mark = full.version_vector().at(key(a));
    CHECK(lag.prefix_digest(key(a), mark) == full.prefix_digest(key(a), mark));
  }
  // Statements it never held behind the cut are known as retired, not asked for.
  CHECK(lag.is_retired(key(1), 3));
  CHECK(lag.add(accept(1, 3, "done")) == Ledger::AddResult::kDuplicate);
}

TEST_CASE("horizon: a cut above the marks held, or below a floor, gives no proposal") {
  Ledger l;
  fill(l, history());
  VersionVector too_far = l.version_vector();
  too_far[key(1)] += 1;
  CHECK_FALSE(compute_horizon(l, too_far, 1, Digest{}).has_value());
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{});
  REQUIRE(h.has_value());
  l.apply_horizon(*h);
  VersionVector behind = l.version_vector();
  behind[key(1)] = 2;
  CHECK_FALSE(compute_horizon(l, behind, 2, l.horizon_content()).has_value());
}

}  // namespace vow::promises
