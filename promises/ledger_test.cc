#include "promises/ledger.h"

#include <doctest/doctest.h>

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
  CHECK(l.add(claim(1, 1, 2)) == Ledger::AddResult::kConflict);  // equivocation dropped
  CHECK(l.add(claim(1, 2, 2)) == Ledger::AddResult::kNew);
  CHECK(l.version_vector().at(key(1)) == 3);
  CHECK(l.vv_sum() == 3);
  CHECK(l.job(blake2b("job"))->claims.size() == 3);
}

TEST_CASE("ledger: missing_for sends what the peer lacks, capped") {
  Ledger l;
  for (std::uint64_t s = 1; s <= 5; ++s) (void)l.add(claim(1, s, 1));
  (void)l.add(claim(2, 1, 1));
  VersionVector theirs{{key(1), 3}};
  auto missing = l.missing_for(theirs, 10);
  REQUIRE(missing.size() == 3);
  CHECK(missing[0].seq == 4);
  CHECK(missing[2].author == key(2));
  CHECK(l.missing_for(theirs, 2).size() == 2);
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
