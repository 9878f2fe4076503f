#include "promises/horizon.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <vector>

#include "promises/claim_book.h"
#include "promises/config.h"
#include "promises/planner.h"
#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

const Digest kStage = blake2b("stage");

JobRef job_ref(const std::string& name) { return testing::job_ref(name, kStage); }

Statement make(std::uint8_t author, std::uint64_t seq, StatementBody body) {
  return testing::statement(author, seq, std::move(body));
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

TEST_CASE("horizon: a later result of a settled job keeps the claim that binds it") {
  // Agent 1 ran "x" at epoch 1; a horizon settled its result. Agent 2, cut off, took the
  // job over at epoch 2 and its run made another output, which a downstream run may have
  // read before agent 1's result reached it. That result stays as evidence, and must
  // still count: the next horizon retires agent 2's claim only once it leaves nothing
  // bound to it.
  Ledger l;
  fill(l, {advert(1, 1), advert(2, 1), claim(1, 2, "x"), result(1, 3, "x", true)});
  auto h1 = compute_horizon(l, l.version_vector(), 1, Digest{});
  REQUIRE(h1.has_value());
  REQUIRE(h1->settled.size() == 1);
  l.apply_horizon(*h1);
  CHECK(l.is_retired(key(1), 2));

  Claim takeover;
  takeover.job = job_ref("x");
  takeover.epoch = 2;
  takeover.supersedes = StatementRef{key(1), 2};
  Statement other = result(2, 3, "x", true, 2);
  std::get<JobResult>(other.body).outputs[0].artifact.digest = blake2b("x-other-out");
  fill(l, {make(2, 2, takeover), other, claim(1, 4, "y")});
  ClaimBook book(l, key(1));
  l.for_each([&](const Statement& st) { book.note(st); });
  REQUIRE(book.result_binding(blake2b("x"), *l.get(key(2), 3)) == ResultBinding::kBound);

  auto h2 = compute_horizon(l, l.version_vector(), 2, l.horizon_content());
  REQUIRE(h2.has_value());
  l.apply_horizon(*h2);
  CHECK_FALSE(l.is_retired(key(2), 2));  // the claim that binds agent 2's result
  CHECK_FALSE(l.is_retired(key(2), 3));
  book.invalidate();
  CHECK(book.result_binding(blake2b("x"), *l.get(key(2), 3)) == ResultBinding::kBound);
  CHECK(book.canonical(blake2b("x"))->author == key(1));  // the settled one stays canonical
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

TEST_CASE("horizon: a settled result is vouched for by the digest of its signed form") {
  // Signed forms as the transport gives them (the core only hashes them).
  std::vector<Statement> signed_history = history();
  for (auto& st : signed_history) {
    st.signed_form.bytes = "form of " + std::to_string(st.seq) + st.author.hex();
    st.signed_form.signature.fill(static_cast<std::uint8_t>(st.seq));
  }
  Ledger full;
  fill(full, signed_history);
  auto h = compute_horizon(full, full.version_vector(), 1, Digest{});
  REQUIRE(h.has_value());
  REQUIRE(h->settled.size() == 1);
  const Statement& done = *full.get(key(1), 4);
  CHECK(h->settled[0].vouch == signed_digest(done.signed_form));
  CHECK_FALSE(h->settled[0].vouch.is_zero());
  // The digest is part of the content: another form there is another proposal.
  Horizon other = *h;
  other.settled[0].vouch = blake2b("another form");
  CHECK(horizon_content(other) != h->content);
  // Without signed forms (a ledger that never saw one) there is no digest, and the
  // content is that of a horizon made before digests existed.
  Ledger bare;
  fill(bare, history());
  auto plain = compute_horizon(bare, bare.version_vector(), 1, Digest{});
  REQUIRE(plain.has_value());
  CHECK(plain->settled[0].vouch.is_zero());
  CHECK(plain->content != h->content);

  // A joiner that holds none of it takes the horizon: the settled slot is vouched for
  // until the statement arrives there; slots held, retired or not settled are not.
  Ledger joiner;
  joiner.apply_horizon(*h);
  REQUIRE(joiner.vouched(key(1), 4) != nullptr);
  CHECK(*joiner.vouched(key(1), 4) == h->settled[0].vouch);
  CHECK(joiner.vouched(key(1), 2) == nullptr);  // retired
  CHECK(joiner.vouched(key(1), 6) == nullptr);  // not settled (a failure)
  for (const auto& st : full.missing_for(joiner.version_vector(), 100)) joiner.add(st);
  CHECK(joiner.vouched(key(1), 4) == nullptr);
  CHECK(joiner.vouched_count() == 0);
  CHECK(joiner.fingerprint() == full.fingerprint());
  // An agent that held the result when it applied the horizon keeps no vouch at all.
  full.apply_horizon(*h);
  CHECK(full.vouched_count() == 0);
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

// A pipeline whose stage `s` reads source `src` and stage `t` reads `s`'s output, provided
// and run by agent 1, with the statements of a run over each given source version.
struct Superseding {
  Pipeline p;
  std::vector<Statement> statements;
  std::uint64_t seq = 0;
  std::vector<Digest> s_jobs, t_jobs;  // per version

  Superseding() {
    auto out = parse_pipeline(testing::kTwoStagePipeline, "p.toml");
    REQUIRE(out.value.has_value());
    p = *out.value;
    Advert a;
    a.name = "a1";
    for (const auto& st : p.stages) a.promises.push_back({"p", st.name, st.digest, 2});
    a.sources.push_back({"p", "src"});
    add(a);
    add(PipelineDef{p.name, p.digest, canonical_pipeline(p)});
  }
  const Statement& add(StatementBody body) {
    statements.push_back(make(1, ++seq, std::move(body)));
    return statements.back();
  }
  JobRef ref(const Stage& st, const Digest& input) {
    JobRef r;
    r.job = job_id(st.digest, {JobInput{st.inputs[0].local_name(), input}}, "");
    r.pipeline = "p";
    r.stage = st.name;
    r.stage_digest = st.digest;
    return r;
  }
  // Source version `v`.
  void version(std::uint64_t v) {
    add(SourceVersion{"p", "src", v, ArtifactRef{blake2b("src-" + std::to_string(v)), false, 1, {}}});
  }
  // Stage s runs over version `v` (output mid-V), and with `run_t`, t over that.
  void run(std::uint64_t v, bool run_s, bool run_t) {
    Digest in = blake2b("src-" + std::to_string(v));
    Digest mid = blake2b("mid-" + std::to_string(v));
    for (int k = run_s ? 0 : 1; k < (run_t ? 2 : 1); ++k) {
      const Stage& st = p.stages[k];
      JobRef r = ref(st, k == 0 ? in : mid);
      (k == 0 ? s_jobs : t_jobs).push_back(r.job);
      add(Claim{r, 1, 0, std::nullopt});
      JobResult res;
      res.job = r;
      res.epoch = 1;
      res.ok = true;
      res.inputs.push_back({st.inputs[0].local_name(), ArtifactRef{k == 0 ? in : mid, false, 1, {}}});
      res.outputs.push_back({"o", ArtifactRef{k == 0 ? mid : blake2b("end"), false, 1, {}}});
      add(res);
    }
  }
};

TEST_CASE("horizon: superseded jobs retire whole; the current ones and their lineage stay") {
  Superseding w;
  w.version(1);
  w.run(1, true, true);
  w.version(2);
  w.run(2, true, false);  // s ran over version 2, t has not yet
  Ledger l;
  fill(l, w.statements);
  const Digest s1 = w.s_jobs[0], s2 = w.s_jobs[1], t1 = w.t_jobs[0];

  // Without the policy, every done job is settled.
  auto keep = compute_horizon(l, l.version_vector(), 1, Digest{}, false);
  REQUIRE(keep.has_value());
  CHECK(keep->settled.size() == 3);
  CHECK_FALSE(keep->superseded);

  // With it: the plan at the cut has s over version 2 (done) and t over its output (to
  // run), so s and t over version 1 are superseded. But version 2 came after the last
  // horizon's cut (there was none): a run over version 1 may yet be under way unseen, on
  // an agent cut off before version 2 reached it, and its result would name an output
  // of s over version 1. They wait; the horizon settles the three results.
  bool waiting = false;
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{}, true, &waiting);
  REQUIRE(h.has_value());
  CHECK(h->superseded);
  CHECK(waiting);
  CHECK(h->content != keep->content);
  CHECK(h->settled.size() == 3);
  CHECK(horizon_retired_statements(*h) == 3);  // the claims
  CHECK(h->bases.empty());
  l.apply_horizon(*h);
  CHECK(l.job(s1) != nullptr);
  CHECK(l.jobs_emptied() == 0);

  // The next horizon: version 2 is behind the last cut, which every member endorsed
  // holding it, and this cut holds their endorsements: s and t over version 1 go, their
  // settled results too, and version 1 with them (nothing that stays read it).
  auto hb = compute_horizon(l, l.version_vector(), 2, l.horizon_content(), true, &waiting);
  REQUIRE(hb.has_value());
  CHECK_FALSE(waiting);
  CHECK(hb->settled.empty());
  CHECK(horizon_retired_statements(*hb) == 3);  // the two results and version 1
  const Statement* v2 = l.source_version("p", "src");
  REQUIRE(v2 != nullptr);
  CHECK(std::get<SourceVersion>(v2->body).version == 2);
  REQUIRE(hb->bases.size() == 1);
  CHECK(hb->bases[0].version == 2);
  l.apply_horizon(*hb);
  CHECK(l.source_version("p", "src") == v2);
  CHECK(l.line_statements({"p", "src"}, key(1))->size() == 1);
  CHECK(l.job(s1) == nullptr);
  CHECK(l.job(t1) == nullptr);
  CHECK(l.jobs_emptied() == 2);
  REQUIRE(l.job(s2) != nullptr);
  CHECK(l.job(s2)->results.size() == 1);
  // The current plan still finds s over version 2 done, and t over it to run.
  auto current_plan = [&] {
    ClaimBook book(l, key(1));
    l.for_each([&](const Statement& st) { book.note(st); });
    JobOutcomes outcomes;
    outcomes.canonical = [&](const Digest& j) { return book.canonical_result(j); };
    outcomes.canonical_statement = [&](const Digest& j) { return book.canonical(j); };
    outcomes.failed = [](const Digest&, int) { return false; };
    Plan plan = make_plan({std::make_shared<const Pipeline>(w.p)}, l, outcomes);
    std::map<Digest, bool> done;  // planned job -> has a canonical result
    for (const auto& [job, pj] : plan.jobs) done[job] = book.canonical(job) != nullptr;
    return done;
  };
  CHECK(current_plan() == std::map<Digest, bool>{{s2, true}, {w.ref(w.p.stages[1], blake2b("mid-2")).job, false}});

  // t runs over version 2's output, then version 3 arrives and s has not run over it.
  const std::size_t before = w.statements.size();
  w.run(2, false, true);
  const JobRef t2 = w.ref(w.p.stages[1], blake2b("mid-2"));
  w.version(3);
  for (std::size_t i = before; i < w.statements.size(); ++i) {
    REQUIRE(l.add(w.statements[i]) == Ledger::AddResult::kNew);
  }
  // s over version 2 is superseded by s over version 3 (to run), but t over its output
  // stays (which job of t is current is not known until s ran over version 3), and so
  // does s over version 2, whose output it read: lineage of what stays stays whole.
  auto h2 = compute_horizon(l, l.version_vector(), 3, l.horizon_content(), true);
  REQUIRE(h2.has_value());
  l.apply_horizon(*h2);
  CHECK(l.job(s2) != nullptr);
  CHECK(l.job(t2.job) != nullptr);
  CHECK(l.jobs_emptied() == 2);
  // Version 2 stays: s over it stays, and version 3 came after the last cut.
  CHECK(h2->bases.empty());
  CHECK(l.line_statements({"p", "src"}, key(1))->size() == 2);
  const Statement* v3_now = l.source_version("p", "src");
  REQUIRE(v3_now != nullptr);
  CHECK(std::get<SourceVersion>(v3_now->body).version == 3);
  CHECK(l.source_binding(*v3_now) == SourceBinding::kCounted);
  // A horizon now (version 3 behind the last cut) still keeps version 2: s over it stays.
  auto h2b = compute_horizon(l, l.version_vector(), 4, l.horizon_content(), true);
  REQUIRE(h2b.has_value());
  CHECK(h2b->bases.empty());

  // Once s and t ran over version 3 (with another output), both version 2 jobs go: t
  // over version 2 once t over version 3's output is behind the last cut too.
  const std::size_t before3 = w.statements.size();
  w.run(3, true, true);
  for (std::size_t i = before3; i < w.statements.size(); ++i) {
    REQUIRE(l.add(w.statements[i]) == Ledger::AddResult::kNew);
  }
  auto h3 = compute_horizon(l, l.version_vector(), 4, l.horizon_content(), true, &waiting);
  REQUIRE(h3.has_value());
  CHECK(waiting);
  l.apply_horizon(*h3);
  CHECK(l.job(t2.job) != nullptr);
  CHECK(l.job(s2) != nullptr);  // t over version 2 read its output
  auto h4 = compute_horizon(l, l.version_vector(), 5, l.horizon_content(), true, &waiting);
  REQUIRE(h4.has_value());
  CHECK_FALSE(waiting);
  l.apply_horizon(*h4);
  CHECK(l.job(s2) == nullptr);
  CHECK(l.job(t2.job) == nullptr);
  CHECK(l.jobs_emptied() == 4);
  // With them, version 2: only the current version is left, and it counts.
  REQUIRE(h4->bases.size() == 1);
  CHECK(h4->bases[0].version == 3);
  REQUIRE(l.line_statements({"p", "src"}, key(1))->size() == 1);
  const Statement* v3 = l.source_version("p", "src");
  REQUIRE(v3 != nullptr);
  CHECK(std::get<SourceVersion>(v3->body).version == 3);
  CHECK(l.source_binding(*v3) == SourceBinding::kCounted);
  // Only the current generation's results are left: one per job of the plan.
  std::size_t results = 0;
  for (const auto& [job, js] : l.jobs()) results += js.results.size();
  CHECK(results == 2);
  auto plan = current_plan();
  CHECK(plan.size() == 2);
  for (const auto& [job, done] : plan) CHECK(done);
}

TEST_CASE("horizon: old source versions go; the line counts on from its base, on a joiner too") {
  // Versions are directories: "same" is in both, "x" changes. s ran over each.
  Superseding w;
  auto tree = [](std::uint64_t v) {
    ArtifactRef a{blake2b("tree-" + std::to_string(v)), true, 2, {}};
    a.entries.push_back({"same", EntryKind::kFile, blake2b("same")});
    a.entries.push_back({"x", EntryKind::kFile, blake2b("x-" + std::to_string(v))});
    return a;
  };
  auto run_s = [&](std::uint64_t v) {
    const Stage& st = w.p.stages[0];
    JobRef r = w.ref(st, tree(v).digest);
    w.add(Claim{r, 1, 0, std::nullopt});
    JobResult res;
    res.job = r;
    res.epoch = 1;
    res.ok = true;
    res.inputs.push_back({st.inputs[0].local_name(), tree(v)});
    res.outputs.push_back({"o", ArtifactRef{blake2b("mid-" + std::to_string(v)), false, 1, {}}});
    w.add(res);
  };
  for (std::uint64_t v = 1; v <= 3; ++v) {
    w.add(SourceVersion{"p", "src", v, tree(v)});
    run_s(v);
  }
  Ledger l;
  fill(l, w.statements);
  const Statement* v3 = l.source_version("p", "src");
  REQUIRE(v3 != nullptr);
  auto h1 = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
  REQUIRE(h1.has_value());
  CHECK(h1->bases.empty());  // versions 2 and 3 came after the last cut (none)
  l.apply_horizon(*h1);
  auto h = compute_horizon(l, l.version_vector(), 2, l.horizon_content(), true);
  REQUIRE(h.has_value());
  // The results that stay (s over version 3) read "same", which versions 1 and 2 hold
  // too: version 3 holds it, so they go.
  REQUIRE(h->bases.size() == 1);
  CHECK(h->bases[0].version == 3);
  CHECK(h->bases[0].seq == v3->seq);
  l.apply_horizon(*h);
  CHECK(l.line_statements({"p", "src"}, key(1))->size() == 1);
  CHECK(l.source_version("p", "src") == v3);

  // A joiner takes the horizon first, then what the others still hold: it counts version
  // 3 without versions 1 and 2, and refuses them as retired when they come late.
  Ledger j;
  j.apply_horizon(*h1);
  j.apply_horizon(*h);
  l.for_each([&](const Statement& st) { REQUIRE(j.add(st) == Ledger::AddResult::kNew); });
  const Statement* jv3 = j.source_version("p", "src");
  REQUIRE(jv3 != nullptr);
  CHECK(jv3->seq == v3->seq);
  CHECK(j.source_binding(*jv3) == SourceBinding::kCounted);
  CHECK(j.add(w.statements[2]) == Ledger::AddResult::kDuplicate);  // version 1
  CHECK(j.fingerprint() == l.fingerprint());

  // The line goes on: version 4 counts on both.
  w.add(SourceVersion{"p", "src", 4, tree(4)});
  REQUIRE(l.add(w.statements.back()) == Ledger::AddResult::kNew);
  REQUIRE(j.add(w.statements.back()) == Ledger::AddResult::kNew);
  for (Ledger* x : {&l, &j}) {
    const Statement* cur = x->source_version("p", "src");
    REQUIRE(cur != nullptr);
    CHECK(std::get<SourceVersion>(cur->body).version == 4);
  }
  // A version 2 published now (out of its line) does not count.
  w.add(SourceVersion{"p", "src", 2, tree(2)});
  REQUIRE(l.add(w.statements.back()) == Ledger::AddResult::kNew);
  CHECK(l.source_binding(*l.get(key(1), w.seq)) == SourceBinding::kOutOfLine);
  CHECK(std::get<SourceVersion>(l.source_version("p", "src")->body).version == 4);
}

TEST_CASE("horizon: a run open at the cut of a job no longer planned holds old source versions") {
  // s over version 1 is claimed and not finished when version 2 arrives (its claim does
  // not say what it reads): version 1 stays until that run ended.
  Superseding w;
  w.version(1);
  w.add(Claim{w.ref(w.p.stages[0], blake2b("src-1")), 1, 0, std::nullopt});
  w.version(2);
  w.run(2, true, false);
  Ledger l;
  fill(l, w.statements);
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
  REQUIRE(h.has_value());
  l.apply_horizon(*h);
  // Version 2 is behind the last cut now, but the run over version 1 is still open.
  auto h2 = compute_horizon(l, l.version_vector(), 2, l.horizon_content(), true);
  REQUIRE(h2.has_value());
  CHECK(h2->bases.empty());
  l.apply_horizon(*h2);
  CHECK(l.line_statements({"p", "src"}, key(1))->size() == 2);
  // It ends (a release), and the next horizon retires version 1.
  w.add(Release{w.ref(w.p.stages[0], blake2b("src-1")), 1, "stopped"});
  REQUIRE(l.add(w.statements.back()) == Ledger::AddResult::kNew);
  auto h3 = compute_horizon(l, l.version_vector(), 3, l.horizon_content(), true);
  REQUIRE(h3.has_value());
  REQUIRE(h3->bases.size() == 1);
  CHECK(h3->bases[0].version == 2);
}

TEST_CASE("horizon: without the superseded policy, every source version stays") {
  Superseding w;
  w.version(1);
  w.run(1, true, false);
  w.version(2);
  w.run(2, true, false);
  Ledger l;
  fill(l, w.statements);
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{}, false);
  REQUIRE(h.has_value());
  CHECK(h->bases.empty());
  l.apply_horizon(*h);
  CHECK(l.line_statements({"p", "src"}, key(1))->size() == 2);
}

TEST_CASE("horizon: a superseded job with a run still open at the cut stays") {
  Superseding w;
  w.version(1);
  w.run(1, true, false);
  // Agent 1 claims s over version 1 again at epoch 2 (say, a regeneration) and has not
  // finished when version 2 arrives.
  JobRef r = w.ref(w.p.stages[0], blake2b("src-1"));
  w.add(Claim{r, 2, 0, StatementRef{key(1), 4}});
  w.version(2);
  Ledger l;
  fill(l, w.statements);
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
  REQUIRE(h.has_value());
  l.apply_horizon(*h);
  REQUIRE(l.job(r.job) != nullptr);
  CHECK(l.job(r.job)->results.size() == 1);
}

}  // namespace vow::promises

namespace vow::promises {

TEST_CASE("horizon: superseded jobs are the same whatever order the statements arrived in") {
  Superseding w;
  w.version(1);
  w.run(1, true, true);
  // Agent 2 ran s over version 1 too (a race), with an advert promising it.
  Advert a2;
  a2.name = "a2";
  a2.promises.push_back({"p", "s", w.p.stages[0].digest, 2});
  JobRef s1 = w.ref(w.p.stages[0], blake2b("src-1"));
  std::vector<Statement> more = {make(2, 1, a2), make(2, 2, Claim{s1, 1, 0, std::nullopt})};
  JobResult r;
  r.job = s1;
  r.epoch = 1;
  r.ok = true;
  r.inputs.push_back({"src", ArtifactRef{blake2b("src-1"), false, 1, {}}});
  r.outputs.push_back({"o", ArtifactRef{blake2b("mid-1"), false, 1, {}}});
  more.push_back(make(2, 3, r));
  w.version(2);
  w.run(2, true, true);
  std::vector<Statement> all = w.statements;
  all.insert(all.end(), more.begin(), more.end());
  Ledger forward, backward;
  for (const auto& st : all) REQUIRE(forward.add(st) == Ledger::AddResult::kNew);
  for (auto it = all.rbegin(); it != all.rend(); ++it) backward.add(*it);
  REQUIRE(forward.version_vector() == backward.version_vector());
  auto f = compute_horizon(forward, forward.version_vector(), 1, Digest{}, true);
  auto b = compute_horizon(backward, backward.version_vector(), 1, Digest{}, true);
  REQUIRE(f.has_value());
  REQUIRE(b.has_value());
  CHECK(f->content == b->content);
  forward.apply_horizon(*f);
  backward.apply_horizon(*b);
  // The next one retires them (version 2 is behind the last cut now), the same on both.
  auto f2 = compute_horizon(forward, forward.version_vector(), 2, forward.horizon_content(), true);
  auto b2 =
      compute_horizon(backward, backward.version_vector(), 2, backward.horizon_content(), true);
  REQUIRE(f2.has_value());
  REQUIRE(b2.has_value());
  CHECK(f2->content == b2->content);
  forward.apply_horizon(*f2);
  CHECK(forward.job(s1.job) == nullptr);  // both runs over version 1 went
  CHECK(forward.jobs_emptied() == 2);     // s and t over version 1
}

}  // namespace vow::promises

namespace vow::promises {

TEST_CASE("horizon: a peer gets the horizons it lacks first, those it applied last") {
  Superseding w;
  w.version(1);
  w.run(1, true, true);
  Ledger l;
  fill(l, w.statements);
  auto h = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
  REQUIRE(h.has_value());
  const std::uint64_t horizon_seq = w.seq + 1;
  REQUIRE(l.add(make(1, horizon_seq, *h)) == Ledger::AddResult::kNew);
  l.apply_horizon(*h);
  // A joiner with nothing: the horizon first, then the statements it kept, in order.
  auto first = l.missing_for({}, 1, 0, 0);
  REQUIRE(first.size() == 1);
  CHECK(first[0].seq == horizon_seq);
  // One that applied it already (it holds it above its mark): what it kept first.
  auto again = l.missing_for({}, 100, 0, 1);
  REQUIRE(!again.empty());
  CHECK(again.front().seq == 1);
  CHECK(again.back().seq == horizon_seq);  // still sent, last
}

TEST_CASE("horizon: a checkpoint states what the chain leaves; a joiner starts from it alone") {
  // Author 1 runs the pipeline over three source versions; author 2 ran one job and has
  // said nothing since the first horizon (it is cut at its floor, as no member).
  Superseding w;
  w.version(1);
  w.run(1, true, true);
  std::vector<Statement> all = w.statements;
  for (const Statement& st : {advert(2, 1), claim(2, 2, "x"), result(2, 3, "x", true)}) {
    all.push_back(st);
  }
  // Signed forms as the transport gives them (the core only hashes them).
  auto sign = [](std::vector<Statement>& v) {
    for (auto& st : v) {
      st.signed_form.bytes = "form of " + std::to_string(st.seq) + st.author.hex();
      st.signed_form.signature.fill(static_cast<std::uint8_t>(st.seq));
    }
  };
  sign(all);
  Ledger l, d;  // l takes the checkpoint, d the horizon it stands for
  fill(l, all);
  fill(d, all);
  auto h1 = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
  REQUIRE(h1.has_value());
  const Statement h1_statement = w.add(*h1);
  std::vector<Statement> later = {h1_statement};
  l.apply_horizon(*h1);
  d.apply_horizon(*h1);
  for (std::uint64_t v = 2; v <= 3; ++v) {
    const std::size_t from = w.statements.size();
    w.version(v);
    w.run(v, true, true);
    later.insert(later.end(), w.statements.begin() + static_cast<std::ptrdiff_t>(from),
                 w.statements.end());
  }
  sign(later);
  fill(l, later);
  fill(d, later);
  REQUIRE(l.floor(key(2)) == 3);
  auto h2 = compute_horizon(l, l.version_vector(), 2, l.horizon_content(), true);
  REQUIRE(h2.has_value());
  REQUIRE(h2->cuts.size() == 2);
  CHECK_FALSE(h2->cuts[1].member);  // author 2, cut at its floor
  auto cp = checkpoint_of(l, *h2);
  REQUIRE(cp.has_value());
  CHECK(cp->checkpoint);
  CHECK(cp->content == horizon_content(*cp));
  CHECK(cp->content != h2->content);
  CHECK(cp->number == 2);
  // Every result kept is named as settled, with the digest of its signed form: s and t
  // over each of the three versions (those over versions 1 and 2 were superseded only
  // since the last horizon's cut: they wait for the next one).
  CHECK(cp->settled.size() == 6);
  for (const auto& r : cp->settled) CHECK_FALSE(r.vouch.is_zero());
  // A cut that leaves out an author with a floor gives no checkpoint.
  auto partial = compute_horizon(l, {{key(1), w.seq}}, 2, l.horizon_content(), true);
  REQUIRE(partial.has_value());
  CHECK_FALSE(checkpoint_of(l, *partial).has_value());

  auto held = [](const Ledger& x) {
    std::set<std::pair<AgentKey, std::uint64_t>> out;
    x.for_each([&](const Statement& st) { out.insert({st.author, st.seq}); });
    return out;
  };
  l.apply_horizon(*cp);
  d.apply_horizon(*h2);
  // The same as the horizon it stands for, less the horizon statement behind its cut.
  auto expected = held(d);
  expected.erase({key(1), h1_statement.seq});
  CHECK(held(l) == expected);
  CHECK(l.is_retired(key(1), h1_statement.seq));
  CHECK(l.version_vector() == d.version_vector());
  CHECK(l.floor(key(1)) == d.floor(key(1)));
  CHECK(l.source_version("p", "src") == l.get(key(1), d.source_version("p", "src")->seq));
  for (const auto& [author, seq] : held(l)) {
    CHECK(l.settled(author, seq) == d.settled(author, seq));
  }

  // A joiner holding nothing applies the checkpoint alone, then takes what l holds: it
  // ends where l is, and refuses what the chain retired, the earlier horizon too.
  Ledger j;
  j.apply_horizon(*cp);
  CHECK(j.horizon_number() == 2);
  CHECK(j.vouched_count() == cp->settled.size());
  l.for_each([&](const Statement& st) { REQUIRE(j.add(st) == Ledger::AddResult::kNew); });
  CHECK(j.vouched_count() == 0);
  CHECK(j.version_vector() == l.version_vector());
  CHECK(j.fingerprint() == l.fingerprint());
  for (const auto& [author, seq] : held(l)) CHECK(j.settled(author, seq) == l.settled(author, seq));
  const Statement* jv = j.source_version("p", "src");
  REQUIRE(jv != nullptr);
  CHECK(std::get<SourceVersion>(jv->body).version == 3);
  CHECK(j.add(later[0]) == Ledger::AddResult::kDuplicate);  // horizon 1
  CHECK(j.add(claim(2, 2, "x")) == Ledger::AddResult::kDuplicate);
  CHECK(j.add(w.statements[2]) == Ledger::AddResult::kDuplicate);  // source version 1
  // Applying it again, or on a ledger at it already, changes nothing.
  const Digest before = l.fingerprint();
  l.apply_horizon(*cp);
  CHECK(l.fingerprint() == before);
}

}  // namespace vow::promises
