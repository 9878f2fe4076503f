// `root` in [[stage]]: the job's root file system, one of its inputs (docs/sandbox.md,
// "Environments"): parsed, checked, part of the digest, carried by the canonical form,
// and refused in promises that cannot run it.
#include <doctest/doctest.h>

#include <string>

#include "promises/config.h"

namespace vow::promises {
namespace {

constexpr std::string_view kPipeline = R"([pipeline]
name = "wc"

[[source]]
name = "corpus"

[[source]]
name = "rootfs"

[[stage]]
name = "split"
inputs = ["corpus"]
outputs = ["shards"]
run = "split $VOW_IN_corpus"

[[stage]]
name = "count"
inputs = ["split.shards", "rootfs"]
foreach = "split.shards"
outputs = ["counts"]
run = ["sh", "-c", "wc"]
)";

constexpr std::string_view kAgent = R"([agent]
name = "node-a"
listen = "tcp://127.0.0.1:7401"
state_dir = "/var/lib/vow"

[[promise]]
stage = "wc/count"
)";

// kPipeline with `lines` added to stage "count" (from line 22 on).
std::string with(std::string_view lines) {
  std::string s(kPipeline);
  return s + std::string(lines);
}

std::string all(const std::vector<Diagnostic>& errors) {
  std::string out;
  for (const auto& d : errors) out += d.to_string() + "\n";
  return out;
}

ParseOutput<Pipeline> pipeline(std::string_view text) { return parse_pipeline(text, "f.toml"); }

void check_one_error(const ParseOutput<Pipeline>& out, int line, int column,
                     std::string_view text) {
  INFO(all(out.errors));
  CHECK_FALSE(out.value.has_value());
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0].where.line == line);
  CHECK(out.errors[0].where.column == column);
  CHECK(out.errors[0].message.find(text) != std::string::npos);
}

Digest digest_of(std::string_view text, std::string_view stage) {
  auto out = pipeline(text);
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Stage* s = out.value->find_stage(stage);
  REQUIRE(s != nullptr);
  return s->digest;
}

}  // namespace

TEST_CASE("root: part of the digest; stages without it keep theirs") {
  // Without `root`, the digest vow gave before the key existed.
  CHECK(digest_of(kPipeline, "count").hex() ==
        "2b792d473c637041ab6cb4e06558f2d8cc49f453571101459068c2c2fa79fb82");
  // With it: the encoding of docs/identity.md, ending field("root") field("rootfs").
  Digest in_rootfs = digest_of(with("root = \"rootfs\"\n"), "count");
  CHECK(in_rootfs.hex() == "b58f83817688058d187d7f8682bc2e1b04328dbd92eb6218a310653a190456c9");
  // Another input as the root is another stage; the other stage is unchanged.
  std::string two = with("root = \"corpus\"\n");
  auto at = two.find("[\"split.shards\", \"rootfs\"]");
  two.replace(at, 26, "[\"split.shards\", \"rootfs\", \"corpus\"]");
  Digest in_corpus = digest_of(two, "count");
  CHECK(in_corpus != in_rootfs);
  std::string no_root = two;
  no_root.erase(no_root.find("root = "));
  CHECK(in_corpus != digest_of(no_root, "count"));
  CHECK(digest_of(with("root = \"rootfs\"\n"), "split") == digest_of(kPipeline, "split"));
}

TEST_CASE("root: carried by the canonical form, checked when decoded") {
  auto out = pipeline(with("root = \"rootfs\"\npids = 8\n"));
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Stage* s = out.value->find_stage("count");
  REQUIRE(s->root.has_value());
  CHECK(s->root->to_string() == "rootfs");
  auto back = parse_canonical_pipeline(canonical_pipeline(*out.value));
  REQUIRE_MESSAGE(back.is_ok(), back.status().to_string());
  CHECK(back->find_stage("count")->root == s->root);
  CHECK(back->find_stage("count")->pids == 8);
  CHECK(back->find_stage("count")->digest == s->digest);
  CHECK_FALSE(back->find_stage("split")->root.has_value());

  // A decoded root must name an input, as a written one must.
  Pipeline bad = *out.value;
  for (auto& st : bad.stages) {
    if (st.name == "count") st.root = InputRef{"", "nothing"};
  }
  auto refused = parse_canonical_pipeline(canonical_pipeline(bad));
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().message().find("root 'nothing' is not one of the inputs") !=
        std::string::npos);
}

TEST_CASE("root: an upstream stage's output may be the root") {
  std::string text = with("") +
                     "\n[[stage]]\nname = \"run\"\ninputs = [\"split.shards\"]\n"
                     "root = \"split.shards\"\noutputs = [\"o\"]\nrun = \"true\"\n";
  auto out = pipeline(text);
  INFO(all(out.errors));
  REQUIRE(out.ok());
  CHECK(out.value->find_stage("run")->root == InputRef{"split", "shards"});
}

TEST_CASE("root: errors say where") {
  check_one_error(pipeline(with("root = \"rootf\"\n")), 22, 8,
                  "root 'rootf' is not one of the inputs of stage 'count' (inputs: "
                  "split.shards, rootfs) (did you mean 'rootfs'?)");
  check_one_error(pipeline(with("root = \"split.shards\"\n")), 22, 8,
                  "root 'split.shards' of stage 'count' is its foreach input");
  check_one_error(
      pipeline(with("root = \"rootfs\"\nimage = \"sha256:" + std::string(64, 'a') + "\"\n")), 22, 8,
      "stage 'count' names both an image and a root ('rootfs')");
  check_one_error(pipeline(with("root = 3\n")), 22, 8, "'root' in [[stage]]");
}

TEST_CASE("root: promised only where bubblewrap can make it") {
  auto p = pipeline(with("root = \"rootfs\"\n"));
  REQUIRE(p.ok());
  auto promise = [&](std::string_view agent_text) {
    auto a = parse_agent(agent_text, "a.toml");
    INFO(all(a.errors));
    REQUIRE(a.ok());
    return validate_agent_against(*a.value, {*p.value});
  };
  // The default sandbox ("auto") is checked again at start, once it is known.
  CHECK(promise(kAgent).empty());

  std::string none(kAgent);
  none.insert(none.find("\n\n"), "\nsandbox = \"none\"");
  auto errors = promise(none);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].where.line == 8);
  CHECK(errors[0].message ==
        "promise for stage 'wc/count': the stage runs in root 'rootfs' (f.toml:16:1), which "
        "only the bubblewrap sandbox makes, and this agent's sandbox is \"none\" "
        "(docs/sandbox.md)");

  std::string slurm =
      std::string(kAgent) + "executor = \"slurm\"\n\n[slurm]\nshared_dir = \"/s\"\n";
  errors = promise(slurm);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].message.find("the Slurm executor runs jobs on the compute nodes' own file "
                               "system") != std::string::npos);
}

}  // namespace vow::promises
