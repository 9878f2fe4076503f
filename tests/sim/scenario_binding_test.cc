// Scenario tests of the coordination core: restarts, kills, reconfiguration and the
// rules that bind statements to promises (tests/sim/scenario_mesh.h).
#include <doctest/doctest.h>

#include <cstdint>

#include "tests/sim/scenario_mesh.h"

namespace vow::promises {
using namespace scenario;  // NOLINT: the harness is this file's vocabulary
namespace {

TEST_CASE("restart: a standing claim is resumed, a fenced one is released") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;

  SUBCASE("back before being declared dead: the same epoch runs again") {
    m.crash(first);
    m.advance(200);
    m.restart(first);
    m.advance(100);
    REQUIRE(m.node(first).procs.count(job) == 1);
    CHECK(m.node(first).procs.at(job).epoch == 1);
    CHECK(m.node(other).procs.count(job) == 0);
  }
  SUBCASE("back after a takeover: nothing runs, the old claim is released") {
    m.crash(first);
    m.advance(800);
    REQUIRE(m.node(other).procs.count(job) == 1);
    std::size_t starts = m.node(first).started.size();
    m.restart(first);
    m.advance(800);
    CHECK(m.node(first).started.size() == starts);
    auto v = m.core(0).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == m.node(first).config.key) CHECK(c.released);
    }
  }
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
using namespace scenario;  // NOLINT: the harness is this file's vocabulary
namespace {

TEST_CASE("reconfigure: a withdrawn promise hands its job over at once; an added one claims") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(200);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  // The runner's config drops the promise: its job is killed and released, and the
  // other agent takes it over well inside the detection window (nobody died).
  Node& nd = m.node(first);
  m.reconfigure(first, {});
  CHECK(m.node(first).procs.count(job) == 0);
  std::int64_t withdrawn_at = m.now();
  std::int64_t took_over = -1;
  for (int t = 0; t < 100 && took_over < 0; ++t) {
    m.advance(10);
    if (m.node(other).procs.count(job)) took_over = m.now();
  }
  REQUIRE(took_over > 0);
  Timing timing;
  CHECK(took_over - withdrawn_at < timing.dead_after_ms / 2);
  // Every agent now sees the new advert without the promise.
  const auto& adverts = m.core(0).ledger().adverts();
  const auto* adv = std::get_if<Advert>(&adverts.at(nd.config.key)->body);
  REQUIRE(adv != nullptr);
  CHECK(adv->promises.empty());
  // Agent 0 promised nothing; after adding the promise it runs a new job of the stage.
  m.finish_all(other);
  m.advance(100);
  m.reconfigure(0, {CorePromise{"one", "work", 2}});
  m.source("one", "in", file_ref(hd("input", "2")));
  m.crash(first);
  m.crash(other);
  m.advance(200);
  Digest second = m.jobs_of(0, "work").at(0);
  CHECK(second != job);
  CHECK(m.node(0).procs.count(second) == 1);
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
using namespace scenario;  // NOLINT: the harness is this file's vocabulary
namespace {

// A bound takeover of `ref` at `epoch` by an agent nobody here ever heard from: its
// advert promises the stage and its claim supersedes one at epoch - 1 that node
// `observer` holds. A higher epoch fences the runs below it, and the claim itself does
// not stand (its author is not live).
std::vector<Statement> stranger_claim(Mesh& m, int observer, const JobRef& ref,
                                      std::uint32_t epoch) {
  Statement adv;
  Digest k = hd("stranger");
  std::copy(k.bytes.begin(), k.bytes.end(), adv.author.bytes.begin());
  adv.seq = 1;
  adv.body =
      Advert{"stranger", {}, {AdvertPromise{ref.pipeline, ref.stage, ref.stage_digest, 1}}, {}};
  Statement st;
  st.author = adv.author;
  st.seq = 2;
  Claim c{ref, epoch, 0, std::nullopt};
  for (const Statement* prev : m.core(observer).ledger().job(ref.job)->claims) {
    if (std::get<Claim>(prev->body).epoch + 1 == epoch) {
      c.supersedes = StatementRef{prev->author, prev->seq};
    }
  }
  st.body = c;
  return {adv, st};
}

int starts_of_epoch(const Node& nd, const Digest& job, std::uint32_t epoch) {
  int n = 0;
  for (const auto& s : nd.started) n += s.job.job == job && s.epoch == epoch ? 1 : 0;
  return n;
}

int kills_of_epoch(const Node& nd, const Digest& job, std::uint32_t epoch) {
  int n = 0;
  for (const auto& k : nd.killed) n += k.job == job && k.epoch == epoch ? 1 : 0;
  return n;
}

TEST_CASE("a killed run holds its place until job_stopped; a later epoch starts only then") {
  int capacity = 1;
  SUBCASE("capacity 1: the stopping run keeps the only place") { capacity = 1; }
  SUBCASE("capacity 2: reclaimed at once, started once the old process is gone") { capacity = 2; }
  Mesh m(2, one_stage(), {{}, {"work"}}, /*replicas=*/2, capacity);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  REQUIRE(m.node(1).procs.at(job).epoch == 1);

  auto stranger = stranger_claim(m, 1, ref, 2);
  m.inject(1, 0, stranger[0]);             // its advert: learned, never heard from,
  m.advance(Timing{}.dead_after_ms + 50);  // so declared dead: its claims never stand
  m.node(1).hold_stops = true;             // the process ignores the kill for a while
  m.inject(1, 0, stranger[1]);
  m.advance(10);  // decided on the next tick
  REQUIRE(kills_of_epoch(m.node(1), job, 1) == 1);
  REQUIRE(m.node(1).stopping.size() == 1);
  for (int t = 0; t < 50; ++t) {
    m.advance(10);
    CHECK(m.node(1).alive() <= capacity);
  }
  // Nothing starts while epoch 1 may still be alive; the core counts it as running.
  CHECK(m.node(1).started.size() == 1);
  bool stopping_seen = false;
  for (const auto& r : m.core(1).running()) {
    if (r.job.job == job && r.epoch == 1) stopping_seen = r.stopping;
  }
  CHECK(stopping_seen);
  auto own_claim_at = [&](std::uint32_t epoch) {
    auto v = m.core(1).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == m.node(1).config.key && c.epoch == epoch) return true;
    }
    return false;
  };
  // With a free place the job is claimed again at once (epoch 3), but not started.
  CHECK(own_claim_at(3) == (capacity == 2));

  m.stopped(1, job);
  CHECK(m.node(1).started.size() == 2);
  CHECK(starts_of_epoch(m.node(1), job, 3) == 1);
  m.advance(500);
  CHECK(m.node(1).started.size() == 2);  // exactly one start after the stop
  CHECK(m.node(1).alive() <= capacity);
  m.finish_all(1);
  m.advance(100);
  REQUIRE(m.core(0).canonical(job) != nullptr);
  CHECK(std::get<JobResult>(m.core(0).canonical(job)->body).epoch == 3);
}

TEST_CASE("a job's exit after its kill counts as stopped, not as a result") {
  Mesh m(2, one_stage(), {{}, {"work"}}, /*replicas=*/2, /*capacity=*/1);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  auto stranger = stranger_claim(m, 1, ref, 2);
  m.inject(1, 0, stranger[0]);
  m.advance(Timing{}.dead_after_ms + 50);
  m.node(1).hold_stops = true;
  m.inject(1, 0, stranger[1]);
  m.advance(10);
  REQUIRE(m.node(1).stopping.size() == 1);
  JobOutcome done;
  done.ok = true;
  Output out = m.core(1).job_exited(job, 1, std::move(done));
  CHECK(out.persist.empty() == false);  // its claim at epoch 3
  bool result = false, start = false;
  for (const auto& st : out.persist) result = result || st.kind() == StatementKind::kResult;
  for (const auto& a : out.actions) start = start || std::holds_alternative<StartJob>(a);
  CHECK_FALSE(result);
  CHECK(start);
}

TEST_CASE("restart: each restored running row is resumed or killed by the core") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  Node& nd = m.node(first);
  REQUIRE(nd.table.count(job) == 1);

  SUBCASE("resumable: a StartJob for the same epoch, no kill") {
    m.crash(first);
    m.advance(200);
    std::size_t starts = nd.started.size();
    m.restart(first);
    m.advance(300);
    CHECK(nd.started.size() == starts + 1);
    CHECK(starts_of_epoch(nd, job, 1) == 2);
    CHECK(kills_of_epoch(nd, job, 1) == 0);
  }
  SUBCASE("a higher epoch exists: a KillJob, no start, the claim released") {
    m.crash(first);
    m.advance(800);
    REQUIRE(m.node(other).procs.count(job) == 1);
    std::size_t starts = nd.started.size();
    m.restart(first);
    m.advance(300);
    CHECK(nd.started.size() == starts);
    REQUIRE(kills_of_epoch(nd, job, 1) == 1);
    CHECK(nd.killed.back().reason.find("not resumable") != std::string::npos);
    CHECK(nd.table.count(job) == 0);  // reported stopped
    auto v = m.core(0).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == nd.config.key) CHECK(c.released);
    }
  }
  SUBCASE("no sync: resumed when the window ends (a lone agent keeps its work)") {
    m.crash(first);
    for (int j = 0; j < m.size(); ++j) {
      if (j != first) m.cut(first, j);
    }
    m.restart(first);
    std::int64_t restarted_at = m.now();
    std::int64_t resumed_at = -1;
    for (int t = 0; t < 1000 && resumed_at < 0; ++t) {
      m.advance(10);
      if (starts_of_epoch(nd, job, 1) == 2) resumed_at = m.now();
    }
    REQUIRE(resumed_at > 0);
    CHECK(resumed_at - restarted_at >= kRestoreSyncWindowMs);
    CHECK(resumed_at - restarted_at <= kRestoreSyncWindowMs + 20);
    CHECK(kills_of_epoch(nd, job, 1) == 0);
  }
}

TEST_CASE("a peer declared dead yields one PeerDeclaredDead per death") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(200);
  const AgentKey dead = m.node(2).config.key;
  auto count = [&](int i, const AgentKey& k) {
    return std::count(m.node(i).declared_dead.begin(), m.node(i).declared_dead.end(), k);
  };
  CHECK(m.node(0).declared_dead.empty());
  m.crash(2);
  m.advance(2 * Timing{}.dead_after_ms);
  CHECK(count(0, dead) == 1);
  CHECK(count(1, dead) == 1);
  CHECK(m.node(0).declared_dead.size() == 1);  // nobody else
  m.advance(2'000);
  CHECK(count(0, dead) == 1);  // the transition, once
  m.restart(2);
  m.advance(200);
  m.crash(2);
  m.advance(2 * Timing{}.dead_after_ms);
  CHECK(count(0, dead) == 2);
  CHECK(count(1, dead) == 2);
}

// ---- Promises that bind (docs/coordination.md sections 4-6 and 8, rules 2-5) ----

// Hands a statement to every node (as relayed by another node).
void inject_all(Mesh& m, const Statement& st) {
  for (int i = 0; i < m.size(); ++i) m.inject(i, (i + 1) % m.size(), st);
}

Advert promising(const std::string& name, const Stage& stage, std::vector<AdvertSource> sources) {
  return Advert{name, {}, {AdvertPromise{"one", stage.name, stage.digest, 1}}, std::move(sources)};
}

std::pair<AgentKey, std::uint64_t> name_of(const Statement* st) {
  return st == nullptr ? std::make_pair(AgentKey{}, std::uint64_t{0})
                       : std::make_pair(st->author, st->seq);
}

TEST_CASE("rule 2: a source version counts only in its provider's own line") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  const ArtifactRef input = file_ref(hd("input"));
  m.source("one", "in", input);
  m.advance(50);
  Digest job = m.jobs_of(1, "work").at(0);
  Hostile h("sources");
  // Not a provider: a version at the top of the range, of a dataset it does not provide.
  inject_all(m, h.make(SourceVersion{"one", "in", UINT64_MAX, file_ref(hd("hijack"))}));
  // A provider (its advert says so) whose line jumps: version 7 without 1..6.
  inject_all(m, h.make(Advert{"h", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, h.make(SourceVersion{"one", "in", 7, file_ref(hd("jump"))}));
  m.advance(100);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(sv->author == m.node(0).config.key);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == input.digest);
    CHECK(m.jobs_of(i, "work") == std::vector<Digest>{job});  // nothing re-planned
    auto report = m.core(i).binding_report();
    CHECK(report.unbound["source version: not provided"] == 0);  // provided now (advert)
    CHECK(report.unbound["source version: out of line"] == 2);
  }
  // The provider's own next version still replaces the data.
  const ArtifactRef second = file_ref(hd("input", "2"));
  m.source("one", "in", second);
  m.advance(50);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == second.digest);
    CHECK(std::get<SourceVersion>(sv->body).version == 2);
  }
}

TEST_CASE("rule 2: providers combine by agreement; one lying provider is outvoted") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  const ArtifactRef input = file_ref(hd("input"));
  m.source("one", "in", input);
  // A second honest provider says the same.
  Hostile second("second provider");
  inject_all(m, second.make(Advert{"p2", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, second.make(SourceVersion{"one", "in", 1, input}));
  // A liar, bound (it provides the dataset, version 1 in line), gives other bytes.
  Hostile liar("liar");
  inject_all(m, liar.make(Advert{"liar", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, liar.make(SourceVersion{"one", "in", 1, file_ref(hd("lie"))}));
  m.advance(50);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == input.digest);
    CHECK(sv->author != liar.key);
  }
}

TEST_CASE("rule 3: a result without its author's claim is never canonical") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion(2'000);
  Digest job = m.jobs_of(0, "work").at(0);
  const Statement* canon = m.core(0).canonical(job);
  REQUIRE(canon != nullptr);
  auto before = name_of(canon);
  JobRef ref = std::get<JobResult>(canon->body).job;
  Hostile h("results");
  JobResult bogus;
  bogus.job = ref;
  bogus.ok = true;
  bogus.outputs = {NamedArtifact{"out", file_ref(hd("bogus"))}};
  bogus.epoch = 0;  // sorts before every honest result in the min-register
  inject_all(m, h.make(bogus));
  // Even from an agent that promises the stage, at the canonical epoch: no claim.
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  bogus.epoch = 1;
  inject_all(m, h.make(bogus));
  m.advance(200);
  for (int i = 0; i < m.size(); ++i) {
    CHECK(name_of(m.core(i).canonical(job)) == before);
    auto v = m.core(i).job(job);
    REQUIRE(v);
    CHECK(v->state == JobState::kDone);
    int unbound = 0;
    for (const auto& r : v->results) unbound += r.bound ? 0 : 1;
    CHECK(unbound == 2);
    CHECK(m.core(i).binding_report().unbound["result: no claim"] == 2);
  }
  CHECK(m.starts_of("work") == 1);  // nothing ran again
}

TEST_CASE("rule 4: a claim at the top epoch fences nothing; epochs are earned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  JobRef ref = m.node(first).procs.at(job).job;
  Hostile h("epochs");
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  inject_all(m, h.make(Claim{ref, UINT32_MAX, 0, std::nullopt}));  // chosen, not earned
  inject_all(m, h.make(Claim{ref, 0, 0, std::nullopt}));
  m.advance(500);
  // Nothing was fenced, claimed again or restarted: the run goes on and finishes.
  CHECK(m.node(first).killed.empty());
  CHECK(m.starts_of("work") == 1);
  m.finish_all(first);
  m.advance(100);
  for (int i = 0; i < m.size(); ++i) {
    REQUIRE(m.core(i).canonical(job) != nullptr);
    CHECK(std::get<JobResult>(m.core(i).canonical(job)->body).epoch == 1);
    CHECK(m.core(i).binding_report().unbound["claim: epoch not earned"] == 2);
    std::uint32_t top = 0;
    auto view = m.core(i).job(job);
    REQUIRE(view);
    for (const auto& c : view->claims) {
      if (c.bound) top = std::max(top, c.epoch);
    }
    CHECK(top == 1);
  }
}

TEST_CASE("rule 4: a job fenced again and again by claims that do not stand backs off") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  Hostile h("fencer");  // never heard from: its claims fence but never stand
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  m.advance(Timing{}.dead_after_ms + 50);  // learned from its advert, now dead
  auto own_claims = [&] {
    int n = 0;
    for (const Statement* st : m.core(1).ledger().job(job)->claims) {
      n += st->author == m.node(1).config.key ? 1 : 0;
    }
    return n;
  };
  auto top_claim = [&] {
    const Statement* top = nullptr;
    for (const Statement* st : m.core(1).ledger().job(job)->claims) {
      if (top == nullptr || std::get<Claim>(st->body).epoch > std::get<Claim>(top->body).epoch) {
        top = st;
      }
    }
    return top;
  };
  // Each time node 1 claims, a takeover earned from its claim fences it at once.
  std::vector<std::int64_t> reclaimed_after_ms;
  for (int round = 0; round < 4; ++round) {
    const Statement* mine = top_claim();
    REQUIRE(mine->author == m.node(1).config.key);
    std::uint32_t e = std::get<Claim>(mine->body).epoch;
    inject_all(m, h.make(Claim{ref, e + 1, 0, StatementRef{mine->author, mine->seq}}));
    int claims = own_claims();
    std::int64_t fenced_at = m.now();
    std::int64_t again = -1;
    for (int t = 0; t < 300 && again < 0; ++t) {
      m.advance(10);
      if (own_claims() > claims) again = m.now() - fenced_at;
    }
    REQUIRE(again >= 0);
    reclaimed_after_ms.push_back(again);
  }
  // The first takeover is taken back at once; then the waits grow.
  CHECK(reclaimed_after_ms[0] < kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[1] >= kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[2] >= 2 * kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[3] >= 4 * kFenceBackoffBaseMs);
}

TEST_CASE("rule 5: equivocation is found, proven everywhere, and its author stops counting") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  Digest job = m.jobs_of(0, "work").at(0);
  JobRef ref = m.core(0).plan().jobs.at(job).ref;
  // Before anyone claims: a bound claim and result of a trusted key; its result is
  // canonical everywhere.
  Hostile h("equivocator");
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  inject_all(m, h.make(Claim{ref, 1, 0, std::nullopt}));
  JobResult r;
  r.job = ref;
  r.epoch = 1;
  r.ok = true;
  r.outputs = {NamedArtifact{"out", file_ref(hd("equivocator's"))}};
  inject_all(m, h.make(r));
  for (int i = 0; i < m.size(); ++i) {
    REQUIRE(m.core(i).canonical(job) != nullptr);
    REQUIRE(m.core(i).canonical(job)->author == h.key);
  }
  // Two different statements with one seq, one to node 1, the other to node 2: equal
  // version vectors, different ledgers. Nobody is told of the other.
  Statement a = h.make(Release{ref, 1, "a"}, 1);
  Statement b = a;
  b.wall_unix_ms = 2;
  std::get<Release>(b.body).reason = "b";
  m.inject(1, 0, a);
  m.inject(2, 0, b);
  m.advance(3'000);  // periodic anti-entropy compares what each holds
  m.run_to_completion(3'000);
  for (int i = 0; i < m.size(); ++i) {
    INFO("node " << i);
    CHECK(m.core(i).equivocating(h.key));
    CHECK(m.core(i).binding_report().equivocators == std::vector<AgentKey>{h.key});
    const Statement* canon = m.core(i).canonical(job);
    REQUIRE(canon != nullptr);
    CHECK(canon->author != h.key);
    CHECK(name_of(canon) == name_of(m.core(0).canonical(job)));
    CHECK(m.core(i).ledger().fingerprint() == m.core(0).ledger().fingerprint());
  }
  CHECK(m.starts_of("work") == 1);  // re-run once, by an honest agent
  // The proof is persisted: a restarted agent knows the equivocator before any sync.
  m.hold(true);
  m.crash(2);
  m.restart(2);
  CHECK(m.core(2).equivocating(h.key));
  REQUIRE(m.core(2).canonical(job) != nullptr);
  CHECK(m.core(2).canonical(job)->author != h.key);
  m.hold(false);
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
using namespace scenario;  // NOLINT: the harness is this file's vocabulary
namespace {

// one_stage() with the stage's command edited: a new stage digest.
Pipeline one_stage_edited() {
  Pipeline p = one_stage();
  p.stages[0].argv = {"true", "--edited"};
  p.stages[0].digest = stage_digest(p.stages[0]);
  p.digest = pipeline_digest(p);
  return p;
}

int events_of(const Node& nd, EventKind kind) {
  return static_cast<int>(std::count_if(nd.events.begin(), nd.events.end(),
                                        [&](const Event& e) { return e.kind == kind; }));
}

TEST_CASE("an edited stage: only the definition current adverts promise is planned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion();
  Digest old_job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.core(0).canonical(old_job) != nullptr);
  // Every agent reloads the edited file: the old definition stays in the ledger, but no
  // current advert promises it any more.
  Pipeline edited = one_stage_edited();
  for (int i = 0; i < 3; ++i) m.reload_pipelines(i, {edited});
  m.run_to_completion();
  for (int i = 0; i < 3; ++i) {
    auto jobs = m.jobs_of(i, "work");
    REQUIRE(jobs.size() == 1);  // not the old job, ready for ever
    CHECK(jobs[0] != old_job);
    auto plans = m.stage_plans(i, "work");
    REQUIRE(plans.size() == 1);
    CHECK(plans[0].stage_digest == edited.stages[0].digest);
    CHECK(plans[0].state == StageState::kDone);
    CHECK(m.core(i).job(jobs[0])->state == JobState::kDone);
    // The old result stays in the ledger, as capital and for lineage.
    CHECK(m.core(i).job(old_job)->state == JobState::kSuperseded);
    CHECK(m.core(i).canonical(old_job) != nullptr);
  }
  // And after a restart, from what the ledger holds.
  m.crash(0);
  m.restart(0);
  m.advance(100);
  CHECK(m.jobs_of(0, "work").size() == 1);
  CHECK(m.stage_plans(0, "work").at(0).state == StageState::kDone);
}

TEST_CASE("two current definitions of one stage: a conflict, logged once, one planned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  Pipeline edited = one_stage_edited();
  m.reload_pipelines(2, {edited});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(500);
  const Digest old_digest = one_stage().stages[0].digest;
  const Digest new_digest = edited.stages[0].digest;
  for (int i = 0; i < 3; ++i) {
    const Plan& plan = m.core(i).plan();
    REQUIRE(plan.conflicts.size() == 1);
    const StageConflict& c = plan.conflicts[0];
    CHECK(c.stage == "work");
    REQUIRE(c.promised_by.size() == 2);
    CHECK(c.promised_by.at(old_digest) == std::vector<AgentKey>{m.node(1).config.key});
    CHECK(c.promised_by.at(new_digest) == std::vector<AgentKey>{m.node(2).config.key});
    // One promiser each: the least digest is planned, on every agent.
    CHECK(c.planned == std::min(old_digest, new_digest));
    auto plans = m.stage_plans(i, "work");
    REQUIRE(plans.size() == 1);
    CHECK(plans[0].stage_digest == c.planned);
    CHECK(events_of(m.node(i), EventKind::kDefinitionConflict) == 1);
  }
  m.run_to_completion();
  m.advance(500);
  for (int i = 0; i < 3; ++i) {
    CHECK(m.stage_plans(i, "work").at(0).state == StageState::kDone);
    CHECK(events_of(m.node(i), EventKind::kDefinitionConflict) == 1);  // once, not per plan
  }
  // The agent of the other definition ran nothing.
  int other = old_digest < new_digest ? 2 : 1;
  CHECK(m.node(other).started.empty());
  // Agreement ends the conflict.
  m.reload_pipelines(other, {old_digest < new_digest ? one_stage() : edited});
  CHECK(m.core(0).plan().conflicts.empty());
}

TEST_CASE("a stage nobody promises plans no job; promising it plans it") {
  Pipeline p = make_pipeline(
      "two", {"in"}, {make_stage("a", {{"", "in"}}, {"o"}), make_stage("b", {{"a", "o"}}, {"o2"})});
  Mesh m(2, p, {{}, {"a"}});
  m.source("two", "in", file_ref(hd("input")));
  m.run_to_completion();
  auto b = m.stage_plans(0, "b").at(0);
  CHECK(b.state == StageState::kPending);
  CHECK(b.reason == "no agent promises it");
  CHECK(b.jobs.empty());
  CHECK(m.jobs_of(0, "b").empty());
  CHECK(m.stage_plans(0, "a").at(0).state == StageState::kDone);
  m.reconfigure(1, {CorePromise{"two", "a", 2}, CorePromise{"two", "b", 2}});
  m.run_to_completion();
  CHECK(m.stage_plans(0, "b").at(0).state == StageState::kDone);
}

TEST_CASE("retry: a job failed past its retries runs again, another candidate first") {
  Pipeline p = make_pipeline(
      "f", {"in"},
      {make_stage("bad", {{"", "in"}}, {"b"}), make_stage("after", {{"bad", "b"}}, {"a"})});
  Mesh m(3, p, {{}, {"bad", "after"}, {"bad", "after"}});
  m.source("f", "in", file_ref(hd("in")));
  int first = -1;
  for (int t = 0; t < 100 && first < 0; ++t) {
    m.advance(10);
    for (int i = 1; i < 3; ++i) {
      if (!m.node(i).procs.empty()) first = i;
    }
  }
  REQUIRE(first > 0);
  m.finish_all(first, /*ok=*/false);
  m.advance(1000);
  Digest job = m.jobs_of(0, "bad").at(0);
  REQUIRE(m.core(0).job(job)->state == JobState::kFailed);
  CHECK(m.stage_plans(0, "after").at(0).state == StageState::kBlocked);
  CHECK(m.starts_of("bad") == 1);  // no retries: nobody runs it again by itself
  // Asked on an agent that runs nothing: it signs the request, the candidates act on it.
  std::size_t before = m.node(0).persisted.size();
  m.retry(0, {job});
  CHECK(std::any_of(m.node(0).persisted.begin() + static_cast<std::ptrdiff_t>(before),
                    m.node(0).persisted.end(),
                    [](const Statement& st) { return st.kind() == StatementKind::kRetry; }));
  int second = -1;
  for (int t = 0; t < 100 && second < 0; ++t) {
    m.advance(10);
    second = runner(m, job);
  }
  CHECK(second == 3 - first);  // the candidate that has not failed it
  m.run_to_completion();
  for (int i = 0; i < 3; ++i) {
    CHECK(m.core(i).job(job)->state == JobState::kDone);
    CHECK(m.stage_plans(i, "after").at(0).state == StageState::kDone);
  }
  // A job that is not failed is not retried.
  std::size_t persisted = m.node(0).persisted.size();
  m.retry(0, {job});
  CHECK(m.node(0).persisted.size() == persisted);
}

}  // namespace
}  // namespace vow::promises
