#include "promises/ledger.h"

#include <doctest/doctest.h>

#include <cstdint>

#include "promises/planner.h"
#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

Statement claim(std::uint8_t author, std::uint64_t seq, std::uint32_t epoch) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  Claim c;
  c.job.job = blake2b("job");
  c.epoch = epoch;
  st.body = c;
  return st;
}

TEST_CASE("ledger: version vector counts only contiguous sequences; duplicates are no-ops") {
  Ledger l;
  CHECK(l.add(claim(1, 1, 1)) == Ledger::AddResult::kNew);
  CHECK(l.add(claim(1, 3, 3)) == Ledger::AddResult::kNew);
  CHECK(l.version_vector().at(key(1)) == 1);
  CHECK(l.add(claim(1, 1, 1)) == Ledger::AddResult::kDuplicate);
  CHECK(l.add(claim(1, 2, 2)) == Ledger::AddResult::kNew);
  CHECK(l.version_vector().at(key(1)) == 3);
  CHECK(l.vv_sum() == 3);
  CHECK(l.job(blake2b("job"))->claims.size() == 3);
  CHECK_FALSE(l.equivocating(key(1)));
}

TEST_CASE("ledger: a second statement with one seq is kept as proof and marks its author") {
  Ledger l;
  REQUIRE(l.add(claim(1, 1, 1)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(claim(1, 2, 2)) == Ledger::AddResult::kNew);
  auto before = l.prefix_digest(key(1), 2);
  CHECK(l.add(claim(1, 1, 5)) == Ledger::AddResult::kEquivocation);
  CHECK(l.equivocating(key(1)));
  REQUIRE(l.proof_statements(10).size() == 2);
  CHECK(std::get<Claim>(l.proof_statements(10)[1].body).epoch == 5);
  CHECK(l.add(claim(1, 2, 7)) == Ledger::AddResult::kConflict);  // proven already
  CHECK(l.conflicts_dropped() == 1);
  CHECK(l.size() == 2);  // the version vector and the index are unchanged
  CHECK(l.prefix_digest(key(1), 2) == before);
  CHECK(l.prefix_digests().count(key(1)) == 0);  // no longer compared in syncs

  // A ledger holding the other statement at seq 1 has another prefix digest there, and
  // diverging_for finds the author's statements to send.
  Ledger other;
  REQUIRE(other.add(claim(1, 1, 5)) == Ledger::AddResult::kNew);
  REQUIRE(other.add(claim(1, 2, 2)) == Ledger::AddResult::kNew);
  Ledger fresh;
  REQUIRE(fresh.add(claim(1, 1, 1)) == Ledger::AddResult::kNew);
  REQUIRE(fresh.add(claim(1, 2, 2)) == Ledger::AddResult::kNew);
  CHECK(other.prefix_digest(key(1), 2) != fresh.prefix_digest(key(1), 2));
  auto sent = other.diverging_for(fresh.version_vector(), fresh.prefix_digests(), 10, 10);
  REQUIRE(sent.size() == 2);
  CHECK(fresh.add(sent[0]) == Ledger::AddResult::kEquivocation);
  CHECK(other.diverging_for(other.version_vector(), other.prefix_digests(), 10, 10).empty());

  // Far below the mark: found window by window as the rotation advances.
  Ledger x, y;
  REQUIRE(x.add(claim(1, 1, 1)) == Ledger::AddResult::kNew);
  REQUIRE(y.add(claim(1, 1, 5)) == Ledger::AddResult::kNew);
  for (std::uint64_t s = 2; s <= 25; ++s) {
    REQUIRE(x.add(claim(1, s, 1)) == Ledger::AddResult::kNew);
    REQUIRE(y.add(claim(1, s, 1)) == Ledger::AddResult::kNew);
  }
  int rounds = 0;
  bool found = false;
  for (std::uint64_t round = 0; round < 3 && !found; ++round, ++rounds) {
    auto window = y.diverging_for(x.version_vector(), x.prefix_digests(), 10, 10, round);
    CHECK(window.size() == (round < 2 ? 10 : 5));
    for (const auto& st : window) found = found || x.add(st) == Ledger::AddResult::kEquivocation;
  }
  CHECK(found);
  CHECK(rounds == 3);  // seqs 16-25, then 6-15, then 1-5
}

Statement advert(std::uint8_t author, std::uint64_t seq, bool provides) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  Advert a;
  if (provides) a.sources = {AdvertSource{"p", "s"}};
  st.body = a;
  return st;
}

Statement version(std::uint8_t author, std::uint64_t seq, std::uint64_t v, std::string_view d) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  st.body = SourceVersion{"p", "s", v, ArtifactRef{blake2b(d), false, 1, {}}};
  return st;
}

TEST_CASE("ledger: source versions count in their provider's line; providers agree") {
  Ledger l;
  // Not a provider: nothing counts, however high.
  REQUIRE(l.add(version(1, 1, UINT64_MAX, "hijack")) == Ledger::AddResult::kNew);
  CHECK(l.source_version("p", "s") == nullptr);
  CHECK(l.source_binding(*l.get(key(1), 1)) == SourceBinding::kNotProvided);
  // A provider's line: 1, 2; 4 jumps, a second 2 repeats.
  REQUIRE(l.add(advert(2, 1, true)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(2, 2, 1, "a")) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(2, 3, 2, "b")) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(2, 4, 4, "jump")) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(2, 5, 2, "again")) == Ledger::AddResult::kNew);
  const Statement* cur = l.source_version("p", "s");
  REQUIRE(cur != nullptr);
  CHECK(cur->seq == 3);
  CHECK(l.source_binding(*l.get(key(2), 4)) == SourceBinding::kOutOfLine);
  CHECK(l.source_binding(*l.get(key(2), 5)) == SourceBinding::kOutOfLine);
  // Two more providers: the artifact most of them give wins, whoever published more.
  REQUIRE(l.add(advert(3, 1, true)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(advert(4, 1, true)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(3, 2, 1, "c")) == Ledger::AddResult::kNew);
  REQUIRE(l.add(version(4, 2, 1, "c")) == Ledger::AddResult::kNew);
  cur = l.source_version("p", "s");
  REQUIRE(cur != nullptr);
  CHECK(std::get<SourceVersion>(cur->body).artifact.digest == blake2b("c"));
  // A provider that stops providing no longer counts.
  REQUIRE(l.add(advert(3, 3, false)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(advert(4, 3, false)) == Ledger::AddResult::kNew);
  cur = l.source_version("p", "s");
  REQUIRE(cur != nullptr);
  CHECK(cur->author == key(2));
}

TEST_CASE("ledger: missing_for sends what the peer lacks, capped") {
  Ledger l;
  for (std::uint64_t s = 1; s <= 5; ++s) (void)l.add(claim(1, s, 1));
  (void)l.add(claim(2, 1, 1));
  VersionVector theirs{{key(1), 3}};
  auto missing = l.missing_for(theirs, 10);
  REQUIRE(missing.size() == 3);
  CHECK(missing[0].seq == 4);
  CHECK(missing[2].seq == 5);
  CHECK(missing[2].author == key(1));
  // Authors take turns: a cap of 2 gives one statement of each.
  auto two = l.missing_for(theirs, 2);
  REQUIRE(two.size() == 2);
  CHECK(two[0].author != two[1].author);
  // A long tail does not crowd another author out.
  for (std::uint64_t s = 6; s <= 600; ++s) (void)l.add(claim(1, s, 1));
  auto capped = l.missing_for(theirs, 16);
  CHECK(std::count_if(capped.begin(), capped.end(),
                      [](const Statement& st) { return st.author == key(2); }) == 1);
}

Statement named_advert(std::uint8_t author, std::uint64_t seq, const std::string& name) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  st.body = Advert{name, {"tcp://h:1"}, {}, {}};
  return st;
}

TEST_CASE("ledger: an advert superseded at once by the next one is void, its slot kept") {
  Ledger l;
  CHECK(l.add(named_advert(1, 1, "first")) == Ledger::AddResult::kNew);
  CHECK(l.add(named_advert(1, 2, "second")) == Ledger::AddResult::kNew);
  CHECK(l.add(named_advert(1, 3, "third")) == Ledger::AddResult::kNew);
  // The first two were never in force for anything: forgotten, and named to the shell.
  CHECK(l.size() == 1);
  CHECK(l.void_count() == 2);
  CHECK(l.get(key(1), 1) == nullptr);
  CHECK(l.is_proven_void(key(1), 2));
  CHECK(l.version_vector().at(key(1)) == 3);
  auto voided = l.take_voided();
  REQUIRE(voided.size() == 2);
  CHECK(l.take_voided().empty());
  CHECK(std::get<Advert>(l.adverts().at(key(1))->body).name == "third");
  // An advert in force for a claim stays.
  CHECK(l.add(claim(1, 4, 1)) == Ledger::AddResult::kNew);
  CHECK(l.add(named_advert(1, 5, "fifth")) == Ledger::AddResult::kNew);
  CHECK(l.get(key(1), 3) != nullptr);
  CHECK(l.advert_at(key(1), 4) == l.get(key(1), 3));
  // An old advert arriving late, below a held one, is not kept; one again is a no-op.
  Ledger m;
  CHECK(m.add(named_advert(1, 3, "third")) == Ledger::AddResult::kNew);
  CHECK(m.add(named_advert(1, 2, "second")) == Ledger::AddResult::kVoid);
  CHECK(m.add(named_advert(1, 2, "second")) == Ledger::AddResult::kDuplicate);
  CHECK(m.size() == 1);
  CHECK(m.version_vector().count(key(1)) == 0);  // seq 1 is still missing
}

TEST_CASE("ledger: void ranges pass to a peer, which then agrees on digests") {
  Ledger a;
  for (std::uint64_t s = 1; s <= 5; ++s) a.add(named_advert(1, s, "a" + std::to_string(s)));
  a.add(claim(1, 6, 1));
  Ledger b;
  b.add(named_advert(1, 5, "a5"));
  b.add(claim(1, 6, 1));
  VersionVector none;
  auto voids = a.voids_for(b.version_vector(), 10);
  REQUIRE(voids.size() == 1);
  CHECK(voids[0].first == 1);
  CHECK(voids[0].last == 4);
  // Not taken without the advert above it, nor when longer than the limit.
  Ledger c;
  CHECK_FALSE(c.void_acceptable(voids[0]));
  CHECK_FALSE(b.void_acceptable(VoidRange{key(1), 1, Ledger::kMaxVoidRun + 1}));
  CHECK(b.add_void(voids[0]) == 4);
  CHECK(b.version_vector().at(key(1)) == 6);
  CHECK(b.prefix_digest(key(1), 6) == a.prefix_digest(key(1), 6));
  CHECK(b.fingerprint() == a.fingerprint());
  // A hint is not passed on.
  CHECK(b.voids_for(none, 10).empty());
  CHECK(a.voids_for(none, 10).size() == 1);
  // Long runs go in chunks, highest first, each taken after the one above it.
  Ledger big;
  const std::uint64_t n = Ledger::kMaxVoidRun + 10;
  for (std::uint64_t s = 1; s <= n; ++s) big.add(named_advert(2, s, "x"));
  Ledger late;
  late.add(named_advert(2, n, "x"));
  auto chunks = big.voids_for(none, 10);
  REQUIRE(chunks.size() == 2);
  CHECK(chunks[0].last == n - 1);
  CHECK(chunks[1].first == 1);
  for (const auto& r : chunks) late.add_void(r);
  CHECK(late.version_vector().at(key(2)) == n);
  CHECK(late.fingerprint() == big.fingerprint());
}

TEST_CASE("ledger: a wrong void hint heals when the real statement arrives") {
  // The author's truth: advert 1, claim 2, advert 3. A peer says 1..2 are void.
  Ledger honest;
  honest.add(named_advert(1, 1, "one"));
  honest.add(claim(1, 2, 1));
  honest.add(named_advert(1, 3, "three"));
  Ledger victim;
  victim.add(named_advert(1, 3, "three"));
  CHECK(victim.add_void(VoidRange{key(1), 1, 2}) == 2);
  CHECK(victim.version_vector().at(key(1)) == 3);
  CHECK(victim.prefix_digest(key(1), 3) != honest.prefix_digest(key(1), 3));
  // The claim is signed; the hint was not: the claim wins, and then the advert below it
  // (which a peer sends when the digests differ) is kept, not void.
  CHECK(victim.add(claim(1, 2, 1)) == Ledger::AddResult::kNew);
  CHECK(victim.add(named_advert(1, 1, "one")) == Ledger::AddResult::kNew);
  CHECK(victim.prefix_digest(key(1), 3) == honest.prefix_digest(key(1), 3));
  CHECK(victim.fingerprint() == honest.fingerprint());
  CHECK(victim.void_count() == 0);
}

TEST_CASE("ledger: the fingerprint of statements held above a gap follows each change") {
  // The digests of statements above the gap-free mark are kept between fingerprints;
  // each step's fingerprint must still be that of a ledger built afresh with the same
  // statements.
  auto fresh = [](const std::vector<Statement>& sts) {
    Ledger l;
    for (const auto& st : sts) l.add(st);
    return l.fingerprint();
  };
  std::vector<Statement> held = {named_advert(1, 3, "three"), claim(1, 4, 1), claim(1, 5, 2)};
  Ledger a;
  for (const auto& st : held) a.add(st);
  const Digest gap = a.fingerprint();
  CHECK(gap == fresh(held));
  // An advert above the others supersedes none of them; one right above an advert
  // voids it (its slot leaves the statements held).
  held.push_back(named_advert(1, 6, "six"));
  a.add(held.back());
  CHECK(a.fingerprint() == fresh(held));
  held.push_back(named_advert(1, 7, "seven"));
  a.add(held.back());
  CHECK(a.get(key(1), 6) == nullptr);
  CHECK(a.fingerprint() == fresh(held));
  // The gap fills: the mark passes every statement, and the digests kept go with it.
  held.push_back(named_advert(1, 1, "one"));
  a.add(held.back());
  held.push_back(claim(1, 2, 1));
  a.add(held.back());
  CHECK(a.version_vector().at(key(1)) == 7);
  CHECK(a.fingerprint() == fresh(held));
  CHECK(a.fingerprint() != gap);
}

TEST_CASE("ledger: two adverts with one void seq are a proof, the slot still void") {
  Ledger l;
  l.add(named_advert(1, 1, "one"));
  l.add(named_advert(1, 2, "two"));
  REQUIRE(l.is_void(key(1), 1));
  CHECK(l.add_proof(named_advert(1, 1, "one"), named_advert(1, 1, "other")) ==
        Ledger::AddResult::kEquivocation);
  CHECK(l.equivocating(key(1)));
  CHECK(l.proof_statements(10).size() == 2);
  CHECK(l.add_proof(named_advert(1, 1, "one"), named_advert(1, 1, "third")) == Ledger::AddResult::kConflict);
}

TEST_CASE("parse_canonical_pipeline reverses canonical_pipeline") {
  Pipeline p;
  p.name = "wc";
  p.sources = {Source{"corpus", {}}};
  Stage split;
  split.name = "split";
  split.inputs = {InputRef{"", "corpus"}};
  split.outputs = {"shards"};
  split.argv = {"/bin/sh", "-c", "split $VOW_IN_corpus"};
  split.run_is_shell = true;
  split.env = {{"A", "1"}};
  split.digest = stage_digest(split);
  Stage count;
  count.name = "count";
  count.inputs = {InputRef{"split", "shards"}};
  count.foreach = InputRef{"split", "shards"};
  count.outputs = {"counts"};
  count.argv = {"wc"};
  count.digest = stage_digest(count);
  p.stages = {split, count};
  p.digest = pipeline_digest(p);
  auto d = parse_canonical_pipeline(canonical_pipeline(p));
  REQUIRE(d.is_ok());
  CHECK(d->digest == p.digest);
  REQUIRE(d->find_stage("count") != nullptr);
  CHECK(d->find_stage("count")->digest == count.digest);
  CHECK(d->find_stage("count")->foreach == count.foreach);
  CHECK(d->find_stage("split")->env == split.env);
  std::string bad = canonical_pipeline(p);
  bad.resize(bad.size() - 3);
  CHECK_FALSE(parse_canonical_pipeline(bad).is_ok());
  CHECK_FALSE(parse_canonical_pipeline("garbage").is_ok());
}

}  // namespace
}  // namespace vow::promises
