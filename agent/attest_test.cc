#include "agent/attest.h"

#include <doctest/doctest.h>

#include <random>

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

// The payload the agent signs is written directly (result_attestation_payload); the
// JSON tree is its definition. Every shape of result, and names with what JSON must
// escape or cannot hold (quotes, control characters, non-ASCII, invalid UTF-8), come
// out byte for byte the same both ways.
TEST_CASE("a result's payload written directly is the tree's, byte for byte") {
  auto id = key(5);
  std::mt19937_64 rng(20261205);
  const std::vector<std::string> odd = {"plain", "q\"uote", "back\\slash", "tab\tnl\n",
                                        std::string("nul\0x", 5), "\x01\x1f\x7f",
                                        "caf\xc3\xa9 \xe2\x82\xac", "bad\xff\xfeutf8",
                                        "trunc\xe2\x82", "", "a/b[c]"};
  auto pick = [&] { return odd[rng() % odd.size()]; };
  auto ref = [&](std::size_t entries) {
    ArtifactRef a{blake2b(pick()), entries > 0, rng() % 1'000'000'000'000ULL, {}};
    for (std::size_t k = 0; k < entries; ++k) {
      EntryKind kind = k % 3 == 0 ? EntryKind::kFile
                                  : (k % 3 == 1 ? EntryKind::kExecutable : EntryKind::kTree);
      a.entries.push_back({pick() + std::to_string(k), kind, blake2b(std::to_string(k))});
    }
    return a;
  };
  int compared = 0;
  for (int round = 0; round < 200; ++round) {
    promises::Stage stage = count_stage(pick());
    stage.name = pick();
    stage.env = {{pick(), pick()}, {"LC_ALL", "C"}, {pick() + "2", ""}};
    stage.outputs = {pick(), "n"};
    if (round % 4 == 1) stage.image = "sha256:" + std::string(64, 'a');
    if (round % 4 == 2) stage.root = promises::InputRef{"", "stopwords"};
    if (round % 5 == 0) stage.foreach.reset();
    stage.run_is_shell = round % 2 == 0;
    stage.digest = promises::stage_digest(stage);
    JobResult r;
    r.job = {blake2b(std::to_string(round)), pick(), pick(), stage.digest,
             round % 3 == 0 ? std::string() : pick()};
    r.epoch = static_cast<std::uint32_t>(rng());
    for (std::size_t k = 0; k < rng() % 4; ++k) r.inputs.push_back({pick(), ref(rng() % 4)});
    for (std::size_t k = 0; k < rng() % 4; ++k) r.outputs.push_back({pick(), ref(rng() % 3)});
    r.ok = true;
    r.started_unix_ms = static_cast<std::int64_t>(rng() % 4'000'000'000'000ULL);
    r.ended_unix_ms = r.started_unix_ms + static_cast<std::int64_t>(rng() % 100'000);
    if (rng() % 2) r.stdout_digest = blake2b(pick());
    if (rng() % 2) r.stderr_digest = blake2b(std::string_view());
    Statement st;
    st.author = id.key();
    st.seq = rng();
    st.wall_unix_ms = r.ended_unix_ms;
    st.body = r;
    auto tree = attestation_statement(st, &stage);
    REQUIRE(tree.is_ok());
    auto direct = result_attestation_payload(st, &stage);
    REQUIRE(direct.is_ok());
    CHECK(*direct == attestation_payload(*tree));
    ++compared;
  }
  CHECK(compared == 200);
  // What has no attestation is refused as the tree refuses it.
  auto stage = count_stage();
  Statement st = result_statement(id, stage);
  std::get<JobResult>(st.body).ok = false;
  CHECK(!result_attestation_payload(st, &stage).is_ok());
  CHECK(!result_attestation_payload(result_statement(id, stage), nullptr).is_ok());
}

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
