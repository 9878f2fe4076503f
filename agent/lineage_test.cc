// vow lineage's step upstream (agent/lineage.h) over a ledger built by hand.
#include "agent/lineage.h"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "promises/digest.h"
#include "promises/test_util.h"

namespace vow::agent {
namespace {

const Digest kStage = blake2b("stage");

ArtifactRef file(const std::string& bytes) { return ArtifactRef{blake2b(bytes), false, 1, {}}; }

JobResult result(const std::string& job, std::vector<NamedArtifact> inputs,
                 std::vector<NamedArtifact> outputs) {
  JobResult r;
  r.job = promises::testing::job_ref(job, kStage);
  r.epoch = 1;
  r.ok = true;
  r.inputs = std::move(inputs);
  r.outputs = std::move(outputs);
  return r;
}

// A ledger and the canonical result of each job, as an agent holds them.
struct Held {
  promises::Ledger ledger;
  std::map<Digest, const Statement*> canonical;
  const Statement* add(std::uint8_t author, std::uint64_t seq, StatementBody body,
                       bool is_canonical = true) {
    REQUIRE(ledger.add(promises::testing::statement(author, seq, std::move(body))) ==
            promises::Ledger::AddResult::kNew);
    const Statement* st = ledger.get(promises::testing::key(author), seq);
    if (const auto* r = std::get_if<JobResult>(&st->body); r && is_canonical) {
      canonical[r->job.job] = st;
    }
    return st;
  }
  Upstream upstream() {
    return Upstream(ledger, [this](const Digest& job) -> const Statement* {
      auto it = canonical.find(job);
      return it == canonical.end() ? nullptr : it->second;
    });
  }
};

}  // namespace

TEST_CASE("lineage upstream: a result's bindings name its producers, checked") {
  // Agents 1 and 2 both output "x" (the same bytes): agent 2's result is canonical, but
  // the consumer read agent 1's copy (before agent 2's result arrived) and says so.
  Held h;
  const ArtifactRef x = file("x");
  const Statement* by1 = h.add(1, 1, result("up1", {}, {{"o", x}}), /*is_canonical=*/false);
  const Statement* by2 = h.add(2, 1, result("up2", {}, {{"o", x}}));
  JobResult down = result("down", {{"in", x}, {"other", file("y")}}, {{"o", file("d")}});
  const AgentKey one = promises::testing::key(1);
  down.bindings = {{"in", x.digest, one, 1}};
  Upstream up = h.upstream();
  const Statement* d = h.add(3, 1, down);
  auto edges = up.of(*d);
  REQUIRE(edges.size() == 1);
  CHECK(edges[0].from == by1);
  CHECK(edges[0].input == "in");
  CHECK(edges[0].digest == x.digest);
  CHECK(up.made_by(x.digest) == by2);  // by digest: the canonical result
  // A binding naming a producer that did not make the digest (agent 1's seq 2 is not
  // held; its seq 1 made "x", not "y") is followed by digest; one naming no input of the
  // result is no edge.
  JobResult liar = result("liar", {{"in", x}}, {{"o", file("l")}});
  liar.bindings = {{"in", x.digest, promises::testing::key(9), 7},
                   {"ghost", x.digest, one, 1}};
  auto le = h.upstream().of(*h.add(3, 2, liar));
  REQUIRE(le.size() == 1);
  CHECK(le[0].from == by2);
  CHECK(le[0].input == "in");
}

TEST_CASE("lineage upstream: without bindings, a fan-in's producers are found by its entries") {
  Held h;
  ArtifactRef dir{blake2b("the dir"), true, 2, {}};
  dir.entries = {TreeEntry{"a", EntryKind::kFile, blake2b("A")},
                 TreeEntry{"b", EntryKind::kFile, blake2b("B")}};
  const Statement* a = h.add(1, 1, result("shard a", {}, {{"c", file("A")}}));
  const Statement* b = h.add(2, 1, result("shard b", {}, {{"c", file("B")}}));
  // A result that is not canonical made nothing as far as lineage goes.
  h.add(2, 2, result("stray", {}, {{"c", file("A")}}), /*is_canonical=*/false);
  SourceVersion v;
  v.pipeline = "p";
  v.source = "s";
  v.version = 1;
  v.artifact = file("src");
  const Statement* src = h.add(4, 1, v);
  const Statement* sum =
      h.add(3, 1, result("sum", {{"c", dir}, {"s", file("src")}}, {{"o", file("sum")}}));
  auto edges = h.upstream().of(*sum);
  REQUIRE(edges.size() == 3);
  std::map<std::string, const Statement*> by_input;
  for (const auto& e : edges) by_input[e.input] = e.from;
  CHECK(by_input.at("c/a") == a);
  CHECK(by_input.at("c/b") == b);
  CHECK(by_input.at("s") == src);
}

TEST_CASE("lineage upstream: an older agent's accept names the producers of its run") {
  Held h;
  const ArtifactRef x = file("x");
  const Statement* by1 = h.add(1, 1, result("up1", {}, {{"o", x}}), /*is_canonical=*/false);
  h.add(2, 1, result("up2", {}, {{"o", x}}));
  // Agent 3's accept of its epoch-1 run, then its result without bindings.
  JobResult down = result("down", {{"in", x}}, {{"o", file("d")}});
  h.add(3, 1, Accept{down.job, 1, {{"in", x.digest, promises::testing::key(1), 1}}});
  auto edges = h.upstream().of(*h.add(3, 2, down));
  REQUIRE(edges.size() == 1);
  CHECK(edges[0].from == by1);
}

}  // namespace vow::agent
