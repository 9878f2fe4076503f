// Scenario tests of rule 6 (docs/coordination.md section 10): field limits and the
// per-author budget of statements that do not count, on cores wired by
// tests/sim/scenario_mesh.h.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "promises/limits.h"
#include "tests/sim/scenario_mesh.h"

namespace vow::promises {
using namespace scenario;  // NOLINT: the harness is this file's vocabulary
namespace {

std::uint64_t refused(Core& c, const std::string& reason) {
  auto it = c.refused().find(reason);
  return it == c.refused().end() ? 0 : it->second;
}

std::size_t held_by(Core& c, const AgentKey& author) {
  std::size_t n = 0;
  c.ledger().for_each([&](const Statement& st) { n += st.author == author ? 1 : 0; });
  return n;
}

TEST_CASE("limits: a statement with a field over its limit is refused and named") {
  Advert big{std::string(1 << 20, 'x'), {}, {}, {}};
  Statement st;
  st.seq = 1;
  st.body = big;
  auto why = check_limits(st);
  REQUIRE(why);
  CHECK(why->find("advert name") == 0);
  CHECK(why->find("(1048576 bytes) is over its limit of 128 bytes") != std::string::npos);
  CHECK(why->size() < 200);  // the name itself is quoted cut short

  st.body = Advert{"evil\nname", {}, {}, {}};
  REQUIRE(check_limits(st));
  CHECK(check_limits(st)->find("not an identifier") != std::string::npos);
  CHECK(check_limits(st)->find("\"evil\\nname\"") != std::string::npos);

  JobResult r;
  r.job = JobRef{hd("j"), "one", "work", hd("s"), ""};
  r.error = std::string(kMaxTextBytes + 1, 'e');
  st.body = r;
  REQUIRE(check_limits(st));
  CHECK(check_limits(st)->find("result error") == 0);
  r.error = std::string(kMaxTextBytes, 'e');
  r.job.shard = "a file\nwith a newline";  // shards are file names: any bytes
  st.body = r;
  CHECK_FALSE(check_limits(st));
  // A result's bindings (where its inputs came from) are bounded like its inputs.
  r.bindings.assign(kMaxNamedArtifacts + 1, InputBinding{"in", hd("i"), {}, 1});
  st.body = r;
  REQUIRE(check_limits(st));
  CHECK(check_limits(st)->find("result bindings") == 0);
  r.bindings.assign(1, InputBinding{std::string(kMaxInputNameBytes + 1, 'i'), hd("i"), {}, 1});
  st.body = r;
  REQUIRE(check_limits(st));
  CHECK(check_limits(st)->find("result binding input") == 0);
  r.bindings.assign(kMaxNamedArtifacts, InputBinding{"in", hd("i"), {}, 1});
  st.body = r;
  CHECK_FALSE(check_limits(st));
  st.body = Advert{"n0", std::vector<std::string>(kMaxEndpoints + 1, "tcp://h:1"), {}, {}};
  CHECK(check_limits(st)->find("advert endpoints: 17 items (limit 16)") == 0);
}

TEST_CASE("limits: log quoting escapes and cuts peer text") {
  CHECK(quoted("plain") == "\"plain\"");
  CHECK(quoted("a\"b\\c\n\x1b[31m") == "\"a\\\"b\\\\c\\n\\x1b[31m\"");
  CHECK(quoted(std::string(1000, 'y'), 4) == "\"yyyy\"... (1000 bytes)");
  CHECK(printable("part\naa") == "part\\naa");
  CHECK(printable(std::string(10, 'z'), 3) == "zzz... (10 bytes)");
  CHECK(truncated("h\xc3\xa9llo", 2) == "h");  // never half a character
  CHECK(truncated("short") == "short");
}

TEST_CASE("rule 6: an oversized statement is refused by every agent and changes nothing") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(50);
  Hostile h("big");
  auto fingerprint = m.core(1).ledger().fingerprint();
  for (int i = 0; i < m.size(); ++i) {
    m.inject(i, (i + 1) % m.size(), h.make(Advert{std::string(1 << 20, 'n'), {}, {}, {}}));
  }
  for (int i = 0; i < m.size(); ++i) {
    CHECK(refused(m.core(i), "over_limit") == 1);
    CHECK(held_by(m.core(i), h.key) == 0);
  }
  CHECK(m.core(1).ledger().fingerprint() == fingerprint);
  // Logged once, with the name cut short.
  bool logged = false;
  for (const auto& e : m.node(1).events) {
    if (e.kind != EventKind::kRefused) continue;
    logged = true;
    CHECK(e.text.size() < 400);
    CHECK(e.text.find("(1048576 bytes)") != std::string::npos);
  }
  CHECK(logged);
  m.run_to_completion(3'000);
  CHECK(m.starts_of("work") == 1);
}

TEST_CASE("rule 6: a flood of statements that do not count is bounded by the author's budget") {
  IdleBudgetLimits budget{100, 10};
  Mesh m(2, one_stage(), {{}, {"work"}}, 2, 2, budget);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(50);
  Digest job = m.jobs_of(1, "work").at(0);
  JobRef ref = m.core(1).plan().jobs.at(job).ref;
  Hostile h("flood");
  // Its advert counts (its first); it promises no stage, so its claims do not count.
  m.inject(1, 0, h.make(Advert{"h", {}, {}, {}}));
  for (int k = 0; k < 300; ++k) {
    JobRef fake = ref;
    fake.job = hd("fake", std::to_string(k));
    m.inject(1, 0, h.make(Claim{fake, 1, 0, std::nullopt}));
  }
  CHECK(held_by(m.core(1), h.key) == 1 + 100);
  CHECK(refused(m.core(1), "over_budget") == 200);
  // Superseding adverts do not count either: each one costs.
  m.inject(1, 0, h.make(Advert{"h2", {}, {}, {}}));
  CHECK(held_by(m.core(1), h.key) == 1 + 100);
  // The bucket refills at its rate: two seconds buy twenty more.
  m.advance(2'000);
  for (int k = 0; k < 50; ++k) {
    JobRef fake = ref;
    fake.job = hd("later", std::to_string(k));
    m.inject(1, 0, h.make(Claim{fake, 1, 0, std::nullopt}));
  }
  std::size_t held = held_by(m.core(1), h.key);
  CHECK(held >= 1 + 100 + 20);
  CHECK(held <= 1 + 100 + 22);
  // Honest work is untouched: the job runs once and is done everywhere.
  m.run_to_completion(3'000);
  CHECK(m.starts_of("work") == 1);
  CHECK(m.core(0).canonical(job) != nullptr);
  // A statement that counts is never refused, budget or not: a promising advert is
  // paid (the budget is spent), but a bound claim by a new promising peer is free.
  Hostile p("promising");
  m.inject(1, 0, p.make(Advert{"p", {}, {AdvertPromise{"one", "work", ref.stage_digest, 1}}, {}}));
  Statement claim = p.make(Claim{ref, 1, 0, std::nullopt});
  m.inject(1, 0, claim);
  CHECK(m.core(1).ledger().contains(p.key, claim.seq));
}

TEST_CASE("rule 6: an equivocation proof is taken even from an author out of budget") {
  IdleBudgetLimits budget{5, 0};
  Mesh m(2, one_stage(), {{}, {"work"}}, 2, 2, budget);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(50);
  JobRef ref = m.core(1).plan().jobs.begin()->second.ref;
  Hostile h("two-faced");
  m.inject(1, 0, h.make(Advert{"h", {}, {}, {}}));
  for (int k = 0; k < 10; ++k) m.inject(1, 0, h.make(Retry{ref, 0, "r"}));
  CHECK(refused(m.core(1), "over_budget") == 5);
  Statement a = h.make(Release{ref, 1, "a"});
  Statement b = a;
  std::get<Release>(b.body).reason = "b";
  // Alone, each costs: refused.
  m.inject(1, 0, a);
  CHECK_FALSE(m.core(1).equivocating(h.key));
  // As a proof (both in one batch): kept, and its author stops counting.
  Message proof{StatementBatch{{a, b}}};
  (void)m.core(1).on_message(m.node(0).config.key, proof);
  CHECK(m.core(1).equivocating(h.key));
  // A second pair is not free: one proof per author is all that is kept.
  Statement c = h.make(Release{ref, 1, "c"});
  Statement d = c;
  std::get<Release>(d.body).reason = "d";
  (void)m.core(1).on_message(m.node(0).config.key, Message{StatementBatch{{c, d}}});
  CHECK_FALSE(m.core(1).ledger().contains(h.key, c.seq));
}

TEST_CASE("an input refused for what it is fails the job, once per attempt, no refetch loop") {
  Mesh m(3, one_stage(/*retries=*/1), {{}, {"work"}, {"work"}});
  const ArtifactRef bomb = file_ref(hd("a tree that expands to millions of files"));
  m.refuse_fetches(bomb.digest);
  m.source("one", "in", bomb);
  m.run_to_completion(5'000);
  Digest job = m.jobs_of(0, "work").at(0);
  CHECK(m.starts_of("work") == 0);  // never executed
  auto v = m.core(0).job(job);
  REQUIRE(v);
  CHECK(v->state == JobState::kFailed);
  CHECK(v->failed_attempts == 2);  // the first run and its one retry
  CHECK(m.fetches_of(bomb.digest) <= 4);
  bool said = false;
  for (const auto& st : m.core(0).ledger().job(job)->results) {
    const auto& r = std::get<JobResult>(st->body);
    said = said || r.error.find("refused: expands past the limits") != std::string::npos;
  }
  CHECK(said);
}

}  // namespace
}  // namespace vow::promises
