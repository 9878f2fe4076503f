#include "promises/ledger.h"

#include <doctest/doctest.h>

#include <cstdint>

#include "promises/planner.h"

namespace vow::promises {
namespace {

AgentKey key(std::uint8_t b) {
  AgentKey k;
  k.bytes.fill(b);
  return k;
}

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
