#include "agent/attest.h"

#include <doctest/doctest.h>

#include "transport/codec.h"

namespace vow::agent {
namespace {

using nlohmann::json;

transport::Identity key(std::uint8_t n) {
  std::array<std::uint8_t, 32> seed{};
  seed.fill(n);
  return transport::Identity::from_seed(seed);
}

promises::Stage count_stage(std::string script = "wc -w < \"$VOW_IN_shards\" > \"$VOW_OUT_n\"") {
  promises::Stage s;
  s.name = "count";
  s.inputs = {{"split", "shards"}, {"", "stopwords"}};  // not in sorted order
  s.outputs = {"n", "log"};
  s.argv = {"/bin/sh", "-c", std::move(script)};
  s.run_is_shell = true;
  s.foreach = promises::InputRef{"split", "shards"};
  s.env = {{"LC_ALL", "C"}};
  s.digest = promises::stage_digest(s);
  return s;
}

Statement result_statement(const transport::Identity& id, const promises::Stage& stage) {
  JobResult r;
  r.job = {blake2b("job"), "wc", "count", stage.digest, "part-aa"};
  r.epoch = 2;
  ArtifactRef tree{blake2b("tree"), true, 7, {{"a", EntryKind::kFile, blake2b("a")},
                                               {"sub", EntryKind::kTree, blake2b("sub")}}};
  r.inputs = {{"shards", ArtifactRef{blake2b("shard"), false, 5, {}}}, {"stopwords", tree}};
  r.outputs = {{"n", ArtifactRef{blake2b("42"), false, 3, {}}}};
  r.ok = true;
  r.started_unix_ms = 1'700'000'000'123;
  r.ended_unix_ms = 1'700'000'001'000;
  r.stdout_digest = blake2b("");
  Statement st;
  st.author = id.key();
  st.seq = 17;
  st.wall_unix_ms = 1'700'000'001'001;
  st.body = r;
  return st;
}

}  // namespace

TEST_CASE("DSSE pre-authentication encoding and base64 follow the DSSE protocol") {
  CHECK(dsse_pae("http://example.com/HelloWorld", "hello world") ==
        "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  CHECK(dsse_pae("", "") == "DSSEv1 0  0 ");
  CHECK(base64(std::string_view("hello world")) == "aGVsbG8gd29ybGQ=");
  CHECK(base64(std::string_view("")) == "");
}

TEST_CASE("a result's attestation is an in-toto Statement with SLSA provenance") {
  auto id = key(1);
  auto stage = count_stage();
  Statement st = result_statement(id, stage);
  auto j = attestation_statement(st, &stage);
  REQUIRE(j.is_ok());
  CHECK((*j)["_type"] == "https://in-toto.io/Statement/v1");
  CHECK((*j)["predicateType"] == "https://slsa.dev/provenance/v1");
  REQUIRE((*j)["subject"].size() == 1);
  CHECK((*j)["subject"][0]["name"] == "wc/count[part-aa].n");
  CHECK((*j)["subject"][0]["digest"]["blake2b256"] == blake2b("42").hex());
  const json& bd = (*j)["predicate"]["buildDefinition"];
  CHECK(bd["buildType"] == "urn:vow:job:v1");
  CHECK(bd["externalParameters"]["stageDigest"] == stage.digest.hex());
  CHECK(bd["externalParameters"]["definition"]["inputs"] == json({"split.shards", "stopwords"}));
  CHECK(bd["externalParameters"]["definition"]["outputs"] == json({"log", "n"}));
  CHECK(bd["internalParameters"]["job"] == blake2b("job").hex());
  // Dependencies: each input, and each entry of a tree input (a fan-in's parts).
  REQUIRE(bd["resolvedDependencies"].size() == 4);
  CHECK(bd["resolvedDependencies"][1]["name"] == "stopwords");
  CHECK(bd["resolvedDependencies"][1]["digest"]["vowTree1"] == blake2b("tree").hex());
  CHECK(bd["resolvedDependencies"][2]["name"] == "stopwords/a");
  CHECK(bd["resolvedDependencies"][2]["digest"]["blake2b256"] == blake2b("a").hex());
  CHECK(bd["resolvedDependencies"][3]["digest"]["vowTree1"] == blake2b("sub").hex());
  const json& rd = (*j)["predicate"]["runDetails"];
  CHECK(rd["builder"]["id"] == "urn:vow:agent:" + id.id());
  CHECK(rd["metadata"]["invocationId"] == id.id() + "/17");
  CHECK(rd["metadata"]["startedOn"] == "2023-11-14T22:13:20.123Z");
  CHECK(rd["metadata"]["finishedOn"] == "2023-11-14T22:13:21.000Z");
  CHECK(rd["byproducts"][0]["name"] == "stdout");

  // Another stage definition is refused rather than attested wrongly.
  auto other = count_stage("true");
  auto bad = attestation_statement(st, &other);
  CHECK(!bad.is_ok());
  CHECK(bad.status().message().find("needs the definition of stage wc/count") !=
        std::string::npos);
  auto failed = st;
  std::get<JobResult>(failed.body).ok = false;
  CHECK(!attestation_statement(failed, &stage).is_ok());
  Statement claim = st;
  claim.body = Claim{};
  CHECK(attestation_statement(claim, nullptr).status().message().find("is a claim") !=
        std::string::npos);
}

TEST_CASE("the author signs the attestation and any holder of the statement rebuilds it") {
  auto id = key(2);
  auto stage = count_stage();
  Statement st = result_statement(id, stage);
  auto find = [&](const Digest& d) { return d == stage.digest ? &stage : nullptr; };
  REQUIRE(attest_own(id, st, find));
  REQUIRE(std::get<JobResult>(st.body).attestation.has_value());

  // The signature travels in the signed statement and survives decoding.
  auto signed_st = transport::sign_statement(id, st);
  REQUIRE(signed_st.is_ok());
  auto decoded = transport::decode_and_verify(*signed_st);
  REQUIRE(decoded.is_ok());
  CHECK(std::get<JobResult>(decoded->body).attestation == std::get<JobResult>(st.body).attestation);

  auto a = attestation_of(*decoded, &stage);
  REQUIRE(a.is_ok());
  CHECK(a->envelope["payloadType"] == "application/vnd.in-toto+json");
  CHECK(a->envelope["signatures"][0]["keyid"] == id.key().hex());
  CHECK(public_key_json(id.key())["id"] == id.id());
  CHECK(a->envelope["payload"] == base64(attestation_payload(a->statement)));
  CHECK(a->digest == blake2b(a->line));
  CHECK(a->line.find('\n') == std::string::npos);
  // Deterministic: the same envelope from the same statement.
  CHECK(attestation_of(*decoded, &stage)->line == a->line);

  // A stage definition the author did not sign does not verify.
  auto other = count_stage("true");
  other.digest = stage.digest;  // a lie about which definition this is
  auto wrong = attestation_of(*decoded, &other);
  CHECK(wrong.status().code() == StatusCode::kCorrupt);
  CHECK(wrong.status().message().find("does not verify") != std::string::npos);

  // A result from an agent older than attestations has none.
  auto old = result_statement(id, stage);
  auto none = attestation_of(old, &stage);
  CHECK(none.status().code() == StatusCode::kNotFound);
  CHECK(none.status().message().find("carries no attestation") != std::string::npos);

  // A stage the executor does not know: no attestation, and it says so.
  auto unknown = result_statement(id, stage);
  CHECK(!attest_own(id, unknown, [](const Digest&) { return nullptr; }));
  CHECK(!std::get<JobResult>(unknown.body).attestation.has_value());
}

TEST_CASE("a source version's attestation names its artifact and provider") {
  auto id = key(3);
  Statement st;
  st.author = id.key();
  st.seq = 4;
  st.wall_unix_ms = 0;
  st.body = SourceVersion{"wc", "corpus", 3, ArtifactRef{blake2b("c"), false, 1, {}}};
  REQUIRE(attest_own(id, st, [](const Digest&) { return nullptr; }));
  auto a = attestation_of(st, nullptr);
  REQUIRE(a.is_ok());
  CHECK(a->statement["subject"][0]["name"] == "wc/corpus");
  CHECK(a->statement["subject"][0]["digest"]["blake2b256"] == blake2b("c").hex());
  CHECK(a->statement["predicate"]["buildDefinition"]["externalParameters"]["version"] == 3);
  CHECK(a->statement["predicate"]["runDetails"]["metadata"]["finishedOn"] ==
        "1970-01-01T00:00:00.000Z");
}

}  // namespace vow::agent

namespace vow::agent {

// The payload is what the author signed: it must come out byte for byte the same from
// the same statement in every later version, or every stored attestation stops
// verifying. The digests are those of the payloads built at 6f9ba54.
TEST_CASE("attestation payloads are byte for byte what earlier versions signed") {
  auto id = key(2);
  auto stage = count_stage();
  Statement st = result_statement(id, stage);
  auto result = attestation_statement(st, &stage);
  REQUIRE(result.is_ok());
  CHECK(blake2b(attestation_payload(*result)).hex() ==
        "92bfe0670e0bdd80a9eefc625d85e2bfd45cf81d54cd99414b76ffdcce3d465e");
  Statement sv;
  sv.author = id.key();
  sv.seq = 4;
  sv.wall_unix_ms = 1234;
  sv.body = SourceVersion{"wc", "corpus", 3, ArtifactRef{blake2b("c"), false, 1, {}}};
  auto source = attestation_statement(sv, nullptr);
  REQUIRE(source.is_ok());
  CHECK(blake2b(attestation_payload(*source)).hex() ==
        "0bb6aa7f386259599c09ed22191a5d79898761dfcd780683b4428bbc8de0872a");
}

}  // namespace vow::agent
