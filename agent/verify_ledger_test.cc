// vow verify's lineage rule over statements built by hand (signatures are the callers'
// part: verify_statements takes statements already checked).
#include "agent/verify_ledger.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "promises/digest.h"
#include "promises/test_util.h"

namespace vow::agent {
namespace {

const Digest kStage = blake2b("stage");

JobRef job_ref(const std::string& name) { return promises::testing::job_ref(name, kStage); }

Statement make(std::uint8_t author, std::uint64_t seq, StatementBody body) {
  return promises::testing::statement(author, seq, std::move(body));
}

Statement advert(std::uint8_t author) {
  Advert a;
  a.name = "a" + std::to_string(author);
  a.promises.push_back({"p", "s", kStage, 2});
  return make(author, 1, a);
}

Statement claim(std::uint8_t author, std::uint64_t seq, const std::string& job) {
  Claim c;
  c.job = job_ref(job);
  c.epoch = 1;
  return make(author, seq, c);
}

ArtifactRef artifact(const std::string& bytes) { return ArtifactRef{blake2b(bytes), false, 1, {}}; }

Statement result(std::uint8_t author, std::uint64_t seq, const std::string& job,
                 const std::vector<ArtifactRef>& inputs, const ArtifactRef& out) {
  JobResult r;
  r.job = job_ref(job);
  r.epoch = 1;
  r.ok = true;
  for (const auto& in : inputs) r.inputs.push_back({"i" + std::to_string(r.inputs.size()), in});
  r.outputs.push_back({"o", out});
  return make(author, seq, r);
}

bool names(const VerifyReport& report, const std::string& what) {
  return std::any_of(report.problems.begin(), report.problems.end(),
                     [&](const std::string& p) { return p.find(what) != std::string::npos; });
}

}  // namespace

TEST_CASE("verify: an input made by a result that counts is lineage, canonical or not") {
  // "up" ran twice at epoch 1 (a claim race) and made two outputs: one is canonical.
  // Agents 1 and 2 each ran a downstream job over their own output before the other's
  // result reached them; one of the two jobs left the plan since (which depends on the
  // digests), but the lineage of both is whole. Agent 3's "orphan" read an
  // output nobody's counted result made (agent 4's result has no claim to bind it).
  const ArtifactRef out1 = artifact("up by 1"), out2 = artifact("up by 2");
  const ArtifactRef stray = artifact("stray");
  std::vector<Statement> st = {
      advert(1),         advert(2),         advert(3),         advert(4),
      claim(1, 2, "up"), result(1, 3, "up", {}, out1),
      claim(2, 2, "up"), result(2, 3, "up", {}, out2),
      claim(2, 4, "down"), result(2, 5, "down", {out2}, artifact("down")),
      claim(1, 4, "down'"), result(1, 5, "down'", {out1}, artifact("down'")),
      result(4, 2, "loose", {}, stray),
      claim(3, 2, "orphan"), result(3, 3, "orphan", {stray}, artifact("orphan")),
  };
  VerifyReport report = verify_statements(st, {});
  CHECK(report.links == 3);
  CHECK(report.evidence == 1);  // agent 4's unbound result
  REQUIRE(report.problems.size() == 1);
  CHECK(names(report, "input 'i0'"));
  CHECK(names(report, stray.digest.hex()));
  CHECK_FALSE(names(report, out1.digest.hex()));
  CHECK_FALSE(names(report, out2.digest.hex()));
}

TEST_CASE("verify: a result's bindings name its own inputs and producers that made them") {
  // Agent 1 made "up" (seq 3); agent 2's "good" binds its input to that result. "wrong"
  // binds a digest that is not its input; "liar" names agent 1's claim (seq 2) as the
  // producer of its input; "gone" names a producer not held (a horizon may have retired
  // it): nothing to check it against. "twin" names agent 3's result of "up", which made
  // the same bytes but does not count (no claim binds it: as a run whose claim lost a
  // same-epoch tie-break after the fact): the bytes are those of a result that counts,
  // so the binding holds. "stray" names agent 3's result of "other", which does not
  // count and made bytes no counted statement made.
  const ArtifactRef up = artifact("up");
  auto bound = [&](std::uint64_t seq, const std::string& job, std::vector<InputBinding> b) {
    Statement st = result(2, seq, job, {up}, artifact(job));
    std::get<JobResult>(st.body).bindings = std::move(b);
    return st;
  };
  const AgentKey one = promises::testing::key(1);
  std::vector<Statement> st = {
      advert(1), advert(2), claim(1, 2, "up"), result(1, 3, "up", {}, up),
      claim(2, 2, "good"), bound(3, "good", {{"i0", up.digest, one, 3}}),
      claim(2, 4, "wrong"), bound(5, "wrong", {{"i0", artifact("other").digest, one, 3}}),
      claim(2, 6, "liar"), bound(7, "liar", {{"i0", up.digest, one, 2}}),
      claim(2, 8, "gone"), bound(9, "gone", {{"i0", up.digest, promises::testing::key(9), 4}}),
      advert(3), result(3, 2, "up", {}, up), result(3, 3, "other", {}, artifact("other")),
      claim(2, 10, "twin"), bound(11, "twin", {{"i0", up.digest, promises::testing::key(3), 2}}),
  };
  Statement stray = result(2, 13, "stray", {artifact("other")}, artifact("stray"));
  std::get<JobResult>(stray.body).bindings = {
      {"i0", artifact("other").digest, promises::testing::key(3), 3}};
  st.push_back(claim(2, 12, "stray"));
  st.push_back(stray);
  VerifyReport report = verify_statements(st, {});
  CHECK(report.links == 6 + 6);  // each result's input, and each binding
  REQUIRE(report.problems.size() == 4);
  CHECK(names(report, "/13 (result): input 'i0'"));
  CHECK(names(report, "/13 (result): binding 'i0' names "));
  CHECK(names(report, "/3 (result) as its producer, which does not count"));
  CHECK_FALSE(names(report, "/11 (result)"));
  CHECK(names(report, "/5 (result): binding 'i0' (" + artifact("other").digest.hex() +
                          ") names no input of the result with that digest"));
  CHECK(names(report, "/7 (result): binding 'i0' names "));
  CHECK(names(report, "/2 (claim) as its producer, which did not make " + up.digest.hex()));
}

TEST_CASE("binding_matches_inputs: a fan-in's bindings name its entries") {
  JobResult r;
  ArtifactRef dir{blake2b("dir"), true, 2, {}};
  dir.entries = {TreeEntry{"a", EntryKind::kFile, blake2b("a")},
                 TreeEntry{"b", EntryKind::kFile, blake2b("b")}};
  r.inputs = {{"c", dir}, {"x", artifact("x")}};
  CHECK(binding_matches_inputs(r, {"c/a", blake2b("a"), {}, 1}));
  CHECK(binding_matches_inputs(r, {"c", dir.digest, {}, 1}));
  CHECK(binding_matches_inputs(r, {"x", blake2b("x"), {}, 1}));
  CHECK_FALSE(binding_matches_inputs(r, {"c/a", blake2b("b"), {}, 1}));
  CHECK_FALSE(binding_matches_inputs(r, {"c/z", blake2b("a"), {}, 1}));
  CHECK_FALSE(binding_matches_inputs(r, {"cc/a", blake2b("a"), {}, 1}));
  CHECK_FALSE(binding_matches_inputs(r, {"x/a", blake2b("x"), {}, 1}));
  CHECK_FALSE(binding_matches_inputs(r, {"y", blake2b("x"), {}, 1}));
}

}  // namespace vow::agent
