#include "promises/planner.h"

#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "promises/config.h"
#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

using testing::kTwoStagePipeline;
std::shared_ptr<const Pipeline> pipeline(const std::string& text, int retries = 0) {
  auto out = parse_pipeline(text, "p.toml");
  REQUIRE(out.value.has_value());
  Pipeline p = *out.value;
  for (auto& st : p.stages) st.retries = retries;
  return std::make_shared<const Pipeline>(std::move(p));
}

Statement advert(std::uint8_t author, std::uint64_t seq, const Pipeline& p) {
  Advert a;
  a.name = "a" + std::to_string(author);
  for (const auto& st : p.stages) a.promises.push_back({"p", st.name, st.digest, 2});
  a.sources.push_back({"p", "src"});
  return testing::statement(author, seq, a);
}

// What a user sees of a plan: its jobs (with their retries), its stages' states and
// reasons, the pipelines it planned, its conflicts.
struct Seen {
  std::vector<std::pair<Digest, int>> jobs;
  std::vector<std::pair<std::string, std::string>> stages;
  std::vector<Digest> pipelines;
  std::vector<std::pair<std::string, Digest>> conflicts;
  bool operator==(const Seen&) const = default;
};

Seen seen(const Plan& plan) {
  Seen s;
  for (const auto& [id, j] : plan.jobs) s.jobs.emplace_back(id, j.retries);
  for (const auto& sp : plan.stages) {
    s.stages.emplace_back(sp.stage + "@" + sp.stage_digest.hex(),
                          std::string(stage_state_name(sp.state)) + ": " + sp.reason);
  }
  for (const auto& p : plan.pipelines) s.pipelines.push_back(p->digest);
  for (const auto& c : plan.conflicts) s.conflicts.emplace_back(c.stage, c.planned);
  return s;
}

}  // namespace

TEST_CASE("plans made again reuse the current definitions only while they hold") {
  auto p = pipeline(kTwoStagePipeline);
  Ledger l;
  REQUIRE(l.add(advert(1, 1, *p)) == Ledger::AddResult::kNew);
  REQUIRE(l.add(testing::statement(
              1, 2, SourceVersion{"p", "src", 1, ArtifactRef{blake2b("v1"), false, 1, {}}})) ==
          Ledger::AddResult::kNew);
  JobOutcomes outcomes;
  outcomes.canonical = [](const Digest&) { return nullptr; };
  outcomes.canonical_statement = [](const Digest&) { return nullptr; };
  outcomes.failed = [](const Digest&, int) { return false; };

  DefinitionsCache cache;
  std::vector<std::shared_ptr<const Pipeline>> known{p};
  auto both = [&] {
    Plan fresh = make_plan(known, l, outcomes);
    Plan cached = make_plan(known, l, outcomes, &cache);
    CHECK(seen(cached) == seen(fresh));
    return seen(cached);
  };
  Seen first = both();
  CHECK(first.jobs.size() == 1);
  CHECK(cache.made == 1);
  CHECK(cache.reused == 0);

  // A new source version: the same definitions, another job.
  REQUIRE(l.add(testing::statement(
              1, 3, SourceVersion{"p", "src", 2, ArtifactRef{blake2b("v2"), false, 1, {}}})) ==
          Ledger::AddResult::kNew);
  Seen second = both();
  CHECK(second.jobs != first.jobs);
  CHECK(cache.made == 1);
  CHECK(cache.reused == 1);

  // Another agent promises an edited `s`: the promises changed, so the definitions are
  // made again (a conflict, one planned: the same as without the cache).
  std::string edited_text = kTwoStagePipeline;
  edited_text.replace(edited_text.find("run = \"true\""), 12, "run = \"false\"");
  auto edited = pipeline(edited_text);
  REQUIRE(l.add(advert(2, 1, *edited)) == Ledger::AddResult::kNew);
  known.push_back(edited);
  Seen third = both();
  CHECK(third.conflicts.size() == 1);
  CHECK(cache.made == 2);
  // Agent 2 promises the first definition again: no conflict, the first one planned.
  REQUIRE(l.add(advert(2, 2, *p)) == Ledger::AddResult::kNew);
  Seen fourth = both();
  CHECK(fourth.conflicts.empty());
  CHECK(fourth.jobs == second.jobs);
  CHECK(cache.made == 3);

  // The file reloaded with other retries: the same digests, a new object. Its retries
  // are planned, not the cached definition's.
  auto reloaded = pipeline(kTwoStagePipeline, 3);
  REQUIRE(reloaded->digest == p->digest);
  known = {reloaded, edited};
  Seen fifth = both();
  REQUIRE(fifth.jobs.size() == 1);
  CHECK(fifth.jobs[0].second == 3);
  CHECK(cache.made == 4);
  both();
  CHECK(cache.made == 4);
  CHECK(cache.reused == 2);
}

}  // namespace vow::promises
