#include "promises/config.h"

#include <doctest/doctest.h>

#include <string>

namespace vow::promises {
namespace {

// A small valid pipeline; tests below break one thing at a time.
constexpr std::string_view kPipeline = R"(# comment
[pipeline]
name = "wc"

[[source]]
name = "corpus"

[[stage]]
name = "split"
inputs = ["corpus"]
outputs = ["shards"]
run = "split $VOW_IN_corpus"

[[stage]]
name = "count"
inputs = ["split.shards"]
foreach = "split.shards"
outputs = ["counts"]
run = ["sh", "-c", "wc"]
timeout = "60s"
retries = 2
env = { LC_ALL = "C" }
)";

constexpr std::string_view kAgent = R"([agent]
name = "node-a"
listen = "tcp://127.0.0.1:7401"
peers = ["tcp://127.0.0.1:7402", "ipc:///tmp/x"]
state_dir = "/var/lib/vow"
pipelines = ["wc.toml"]

[trust]
keys = ["abc"]
key_files = ["keys/*.pub"]

[[promise]]
stage = "wc/count"
capacity = 2

[[source]]
dataset = "wc/corpus"
path = "/data"
watch = true

[timing]
heartbeat = "50ms"
)";

std::string replace(std::string_view text, std::string_view from, std::string_view to) {
  std::string s(text);
  auto pos = s.find(from);
  REQUIRE_MESSAGE(pos != std::string::npos, "test text lacks: " << from);
  s.replace(pos, from.size(), to);
  return s;
}

std::string all(const std::vector<Diagnostic>& errors) {
  std::string out;
  for (const auto& d : errors) out += d.to_string() + "\n";
  return out;
}

// Checks that exactly one error was reported, at line:column, containing `text`.
template <typename T>
void check_one_error(const ParseOutput<T>& out, int line, int column, std::string_view text) {
  INFO(all(out.errors));
  CHECK_FALSE(out.value.has_value());
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0].where.file == "f.toml");
  CHECK(out.errors[0].where.line == line);
  CHECK(out.errors[0].where.column == column);
  CHECK(out.errors[0].message.find(text) != std::string::npos);
}

// Checks that one of the errors is at line:column and contains `text`.
template <typename T>
void check_has_error(const ParseOutput<T>& out, int line, int column, std::string_view text) {
  INFO(all(out.errors));
  CHECK_FALSE(out.value.has_value());
  bool found = false;
  for (const auto& d : out.errors) {
    found |= d.where.line == line && d.where.column == column &&
             d.message.find(text) != std::string::npos;
  }
  CHECK(found);
}

ParseOutput<Pipeline> pipeline(std::string_view text) { return parse_pipeline(text, "f.toml"); }
ParseOutput<AgentConfig> agent(std::string_view text) { return parse_agent(text, "f.toml"); }

Digest stage_digest_of(std::string_view text, std::string_view stage) {
  auto out = pipeline(text);
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Stage* s = out.value->find_stage(stage);
  REQUIRE(s != nullptr);
  return s->digest;
}

}  // namespace

TEST_CASE("a valid pipeline parses into values") {
  auto out = pipeline(kPipeline);
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Pipeline& p = *out.value;
  CHECK(p.name == "wc");
  CHECK(p.file == "f.toml");
  REQUIRE(p.sources.size() == 1);
  CHECK(p.sources[0].name == "corpus");
  REQUIRE(p.stages.size() == 2);
  const Stage& split = p.stages[0];
  CHECK(split.name == "split");
  CHECK(split.where.line == 8);
  CHECK(split.run_is_shell);
  CHECK(split.argv == std::vector<std::string>{"/bin/sh", "-c", "split $VOW_IN_corpus"});
  const Stage& count = p.stages[1];
  CHECK_FALSE(count.run_is_shell);
  CHECK(count.argv == std::vector<std::string>{"sh", "-c", "wc"});
  REQUIRE(count.inputs.size() == 1);
  CHECK(count.inputs[0] == InputRef{"split", "shards"});
  REQUIRE(count.foreach.has_value());
  CHECK(*count.foreach == InputRef{"split", "shards"});
  CHECK(count.timeout_ms == 60'000);
  CHECK(count.retries == 2);
  CHECK(count.env.at("LC_ALL") == "C");
  CHECK(count.digest == stage_digest(count));
  CHECK(p.digest == pipeline_digest(p));
  CHECK_FALSE(p.digest.is_zero());
}

TEST_CASE("stages come out in topological order, file order among independent ones") {
  auto out = pipeline(R"([pipeline]
name = "p"
[[source]]
name = "s"
[[stage]]
name = "c"
inputs = ["b.ob", "a.oa"]
outputs = ["oc"]
run = "x"
[[stage]]
name = "b"
inputs = ["a.oa"]
outputs = ["ob"]
run = "x"
[[stage]]
name = "d"
inputs = ["s"]
outputs = ["o"]
run = "x"
[[stage]]
name = "a"
inputs = ["s"]
outputs = ["oa"]
run = "x"
)");
  INFO(all(out.errors));
  REQUIRE(out.ok());
  std::vector<std::string> names;
  for (const auto& s : out.value->stages) names.push_back(s.name);
  CHECK(names == std::vector<std::string>{"d", "a", "b", "c"});
}

// ---- one test per validation error ----

TEST_CASE("TOML syntax error is located") {
  check_one_error(pipeline(replace(kPipeline, "name = \"wc\"", "name = \"wc")), 3, 11,
                  "TOML syntax error");
}

TEST_CASE("a NUL byte is a located syntax error") {
  std::string text = "[pipeline]\nname = \"p\"\n[[";
  text += std::string(3, '\0') + "stage]]\n";
  check_one_error(pipeline(text), 3, 3, "TOML syntax error: NUL byte");
  CHECK(detect_config_kind(text) == ConfigKind::kUnknown);
}

TEST_CASE("unknown key suggests the near one") {
  check_one_error(pipeline(replace(kPipeline, "retries = 2", "retires = 2")), 21, 1,
                  "unknown key 'retires' in [[stage]] (did you mean 'retries'?)");
  check_one_error(pipeline(replace(kPipeline, "retries = 2", "colour = 2")), 21, 1,
                  "unknown key 'colour' in [[stage]]");
  CHECK(pipeline(replace(kPipeline, "retries = 2", "colour = 2")).errors[0].message.find("mean") ==
        std::string::npos);
  check_one_error(agent(replace(kAgent, "peers", "peer")), 4, 1,
                  "unknown key 'peer' in [agent] (did you mean 'peers'?)");
}

TEST_CASE("missing required keys are reported at their table") {
  check_one_error(pipeline(replace(kPipeline, "run = \"split $VOW_IN_corpus\"", "")), 8, 1,
                  "missing required key 'run' in [[stage]]");
  check_one_error(pipeline(replace(kPipeline, "[pipeline]\nname = \"wc\"", "")), 1, 1,
                  "missing [pipeline] table");
  check_one_error(agent(replace(kAgent, "listen = \"tcp://127.0.0.1:7401\"", "")), 1, 1,
                  "missing required key 'listen' in [agent]");
  check_one_error(agent(replace(kAgent, "dataset = \"wc/corpus\"", "")), 16, 1,
                  "missing required key 'dataset' in [[source]]");
}

TEST_CASE("a pipeline needs a stage") {
  check_one_error(pipeline("[pipeline]\nname = \"p\"\n"), 2, 8, "pipeline has no [[stage]]");
  check_one_error(pipeline("stage = []\n[pipeline]\nname = \"p\"\n"), 3, 8,
                  "pipeline has no [[stage]]");
}

TEST_CASE("wrong types name what was expected and what was found") {
  check_one_error(pipeline(replace(kPipeline, "retries = 2", "retries = \"2\"")), 21, 11,
                  "'retries' in [[stage]] must be an integer, not a string");
  check_one_error(pipeline(replace(kPipeline, "outputs = [\"counts\"]", "outputs = \"counts\"")),
                  18, 11, "'outputs' in [[stage]] must be an array of strings, not a string");
  check_one_error(pipeline(replace(kPipeline, "[\"sh\", \"-c\", \"wc\"]", "[\"sh\", 3]")), 19, 14,
                  "'run' in [[stage]] must hold strings only, not an integer");
  check_one_error(agent(replace(kAgent, "watch = true", "watch = \"yes\"")), 19, 9,
                  "'watch' in [[source]] must be a boolean");
  check_one_error(pipeline(replace(kPipeline, "LC_ALL = \"C\"", "LC_ALL = 1")), 22, 18,
                  "env 'LC_ALL' in [[stage]] must be a string, not an integer");
  check_has_error(
      pipeline(replace(kPipeline, "[[source]]\nname = \"corpus\"", "[source]\nname = \"corpus\"")),
      5, 1, "'source' must be an array of tables ([[source]]), not a table");
}

TEST_CASE("duplicate stage, source and output names") {
  check_one_error(pipeline(replace(kPipeline, "name = \"count\"", "name = \"split\"")), 15, 8,
                  "duplicate stage name 'split' (first at f.toml:9:8)");
  check_one_error(pipeline(std::string(kPipeline) + "[[source]]\nname = \"corpus\"\n"), 24, 8,
                  "duplicate source name 'corpus' (first at f.toml:6:8)");
  check_one_error(
      pipeline(replace(kPipeline, "outputs = [\"shards\"]", "outputs = [\"shards\", \"shards\"]")),
      11, 22, "duplicate output 'shards' in stage 'split'");
}

TEST_CASE("inputs must name a source or a stage output") {
  check_one_error(pipeline(replace(kPipeline, "inputs = [\"corpus\"]", "inputs = [\"corpsu\"]")),
                  10, 11,
                  "input 'corpsu' names no source of pipeline 'wc' (did you mean 'corpus'?)");
  check_has_error(
      pipeline(replace(kPipeline, "inputs = [\"split.shards\"]", "inputs = [\"splat.shards\"]")),
      16, 11, "input 'splat.shards' names no stage 'splat' (did you mean 'split.shards'?)");
  auto out =
      pipeline(replace(kPipeline, "inputs = [\"split.shards\"]", "inputs = [\"split.shard\"]"));
  INFO(all(out.errors));
  // foreach still names "split.shards", which is now not an input: two errors.
  REQUIRE(out.errors.size() == 2);
  CHECK(out.errors[0].to_string() ==
        "f.toml:16:11: input 'split.shard': stage 'split' has no output 'shard' (did you mean "
        "'split.shards'?)");
  CHECK(out.errors[1].where.line == 17);
}

TEST_CASE("two inputs with one local name are rejected") {
  auto text = replace(kPipeline, "outputs = [\"counts\"]", "outputs = [\"corpus\"]");
  text +=
      "[[stage]]\nname = \"m\"\ninputs = [\"corpus\", \"count.corpus\"]\noutputs = []\nrun = "
      "\"x\"\n";
  check_one_error(pipeline(text), 25, 21,
                  "inputs 'corpus' and 'count.corpus' would both be VOW_IN_corpus");
}

TEST_CASE("foreach must be one of the stage's inputs") {
  check_one_error(
      pipeline(replace(kPipeline, "foreach = \"split.shards\"", "foreach = \"corpus\"")), 17, 11,
      "foreach 'corpus' is not one of the inputs of stage 'count' (inputs: split.shards)");
}

TEST_CASE("a cycle is reported stage by stage") {
  auto out = pipeline(R"([pipeline]
name = "p"
[[stage]]
name = "a"
inputs = ["c.o"]
outputs = ["o"]
run = "x"
[[stage]]
name = "b"
inputs = ["a.o"]
outputs = ["o"]
run = "x"
[[stage]]
name = "c"
inputs = ["b.o"]
outputs = ["o"]
run = "x"
[[stage]]
name = "self"
inputs = ["self.o"]
outputs = ["o"]
run = "x"
)");
  INFO(all(out.errors));
  CHECK_FALSE(out.value.has_value());
  REQUIRE(out.errors.size() == 2);
  CHECK(out.errors[0].to_string() == "f.toml:3:1: cycle: a -> b -> c -> a");
  CHECK(out.errors[1].to_string() == "f.toml:18:1: cycle: self -> self");
}

TEST_CASE("bad durations are rejected with the reason") {
  check_one_error(pipeline(replace(kPipeline, "\"60s\"", "\"60\"")), 20, 11,
                  "'timeout' in [[stage]]: bad duration '60': missing unit");
  check_one_error(pipeline(replace(kPipeline, "\"60s\"", "\"5x\"")), 20, 11, "unknown unit 'x'");
  check_one_error(pipeline(replace(kPipeline, "\"60s\"", "\"0s\"")), 20, 11,
                  "'timeout' in [[stage]] must be longer than 0");
  check_one_error(agent(replace(kAgent, "\"50ms\"", "\"fast\"")), 22, 13, "bad duration 'fast'");
}

TEST_CASE("timing must order heartbeat < suspect_after < dead_after") {
  check_one_error(agent(replace(kAgent, "heartbeat = \"50ms\"", "heartbeat = \"1s\"")), 22, 13,
                  "heartbeat (1s) must be shorter than suspect_after (300ms)");
  check_one_error(agent(std::string(kAgent) + "dead_after = \"200ms\"\n"), 23, 14,
                  "suspect_after (300ms) must be shorter than dead_after (200ms)");
}

TEST_CASE("membership: a profile, then the keys that override it, each checked where written") {
  auto lan = agent(kAgent);
  REQUIRE(lan.ok());
  CHECK(lan.value->timing.membership == MembershipProfile::kLan);
  CHECK(lan.value->timing.swim == swim_profile(MembershipProfile::kLan));
  auto wan = agent(std::string(kAgent) + "membership = \"wan\"\nindirect_probes = 5\n");
  INFO(all(wan.errors));
  REQUIRE(wan.ok());
  CHECK(wan.value->timing.membership == MembershipProfile::kWan);
  CHECK(wan.value->timing.swim.probe_interval_ms == 1000);
  CHECK(wan.value->timing.swim.indirect_probes == 5);
  auto old = agent(std::string(kAgent) + "membership = \"all-to-all\"\n");
  REQUIRE(old.ok());
  CHECK(old.value->timing.membership == MembershipProfile::kAllToAll);
  check_one_error(agent(std::string(kAgent) + "membership = \"gossip\"\n"), 23, 14,
                  "'membership' in [timing] must be \"lan\", \"wan\" or \"all-to-all\", not "
                  "'gossip'");
  check_one_error(agent(std::string(kAgent) + "probe_timeout = \"200ms\"\n"), 23, 17,
                  "in [timing], probe_timeout (200ms) must be shorter than probe_interval (100ms)");
  check_one_error(agent(std::string(kAgent) + "indirect_probes = 40\n"), 23, 19,
                  "'indirect_probes' in [timing] must be at most 16");
  check_one_error(agent(std::string(kAgent) + "suspicion_mult = 0\n"), 23, 18,
                  "'suspicion_mult' in [timing] must be at least 1");
}

TEST_CASE("bad endpoints are rejected") {
  check_one_error(agent(replace(kAgent, "7401", "0")), 3, 10,
                  "bad endpoint 'tcp://127.0.0.1:0' for 'listen': bad port '0': port must be "
                  "1-65535");
  check_one_error(agent(replace(kAgent, "7402", "70000")), 4, 10, "port must be 1-65535");
  check_one_error(agent(replace(kAgent, "ipc:///tmp/x", "udp://h:1")), 4, 34,
                  "unknown endpoint form");
  check_one_error(agent(replace(kAgent, "tcp://127.0.0.1:7401", "tcp://127.0.0.1")), 3, 10,
                  "missing port");
  check_one_error(agent(replace(kAgent, "[trust]", "http = \"localhost\"\n[trust]")), 8, 8,
                  "bad address 'localhost' for 'http': missing port");
  CHECK(validate_endpoint("tcp://*:7400"));
  CHECK(validate_endpoint("tcp://[::1]:7400"));
  CHECK(validate_endpoint("inproc://a"));
  CHECK_FALSE(validate_endpoint("inproc://"));
  CHECK_FALSE(validate_endpoint("tcp://h:+80"));
  CHECK_FALSE(validate_endpoint("tcp://h:65536"));
}

TEST_CASE("http_token_file: a string, not empty, kept with its location") {
  check_one_error(agent(replace(kAgent, "[trust]", "http_token_file = \"\"\n[trust]")), 8, 19,
                  "'http_token_file' in [agent] is empty");
  check_one_error(agent(replace(kAgent, "[trust]", "http_token_file = 3\n[trust]")), 8, 19,
                  "must be a string");
  auto ok = agent(replace(kAgent, "[trust]", "http_token_file = \"web.token\"\n[trust]"));
  REQUIRE(ok.ok());
  CHECK(ok.value->http_token_file == "web.token");
  CHECK(ok.value->http_token_file_where.line == 8);
  CHECK(ok.value->http_token_file_where.column == 19);
}

TEST_CASE("checkpoint_percent: 0-1000, 100 unless set") {
  auto plain = agent(kAgent);
  REQUIRE(plain.ok());
  CHECK(plain.value->checkpoint_percent == 100);
  auto set = agent(replace(kAgent, "[trust]", "checkpoint_percent = 0\n[trust]"));
  REQUIRE(set.ok());
  CHECK(set.value->checkpoint_percent == 0);
  check_one_error(agent(replace(kAgent, "[trust]", "checkpoint_percent = 1001\n[trust]")), 8, 22,
                  "checkpoint_percent");
}

TEST_CASE("gc_interval: a duration of 1s to 168h, 5m unless set") {
  auto plain = agent(kAgent);
  REQUIRE(plain.ok());
  CHECK(plain.value->gc_interval_ms == 300'000);
  auto set = agent(replace(kAgent, "[trust]", "gc_interval = \"90s\"\n[trust]"));
  REQUIRE(set.ok());
  CHECK(set.value->gc_interval_ms == 90'000);
  check_one_error(agent(replace(kAgent, "[trust]", "gc_interval = \"500ms\"\n[trust]")), 8, 15,
                  "'gc_interval' in [agent] must be between 1s and 168h, not 500ms");
  check_one_error(agent(replace(kAgent, "[trust]", "gc_interval = 60\n[trust]")), 8, 15,
                  "a duration string");
}

TEST_CASE("a seed peer may name its key as ID@ENDPOINT") {
  auto ok =
      agent(replace(kAgent, "\"tcp://127.0.0.1:7402\"", "\"vowabc234@tcp://127.0.0.1:7402\""));
  REQUIRE(ok.ok());
  CHECK(ok.value->peers.front() == "vowabc234@tcp://127.0.0.1:7402");
  check_one_error(agent(replace(kAgent, "\"tcp://127.0.0.1:7402\"", "\"@tcp://127.0.0.1:7402\"")),
                  4, 10, "the part before '@' must be an agent id");
  check_one_error(
      agent(replace(kAgent, "\"tcp://127.0.0.1:7402\"", "\"vow!x@tcp://127.0.0.1:7402\"")), 4, 10,
      "the part before '@' must be an agent id");
  check_one_error(agent(replace(kAgent, "\"tcp://127.0.0.1:7402\"", "\"vowx@tcp://h:0\"")), 4, 10,
                  "bad endpoint 'tcp://h:0' for 'peers'");
}

TEST_CASE("promises and sources must name a loaded pipeline's stage or source") {
  auto p = pipeline(kPipeline);
  REQUIRE(p.ok());
  auto a = agent(replace(kAgent, "wc/count", "wc/cuont"));
  REQUIRE(a.ok());
  auto errors = validate_agent_against(*a.value, {*p.value});
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].to_string() ==
        "f.toml:13:9: promise for stage 'wc/cuont': pipeline 'wc' (f.toml) has no stage "
        "'cuont' (did you mean 'wc/count'?)");
  auto b = agent(replace(kAgent, "wc/corpus", "wx/corpus"));
  REQUIRE(b.ok());
  errors = validate_agent_against(*b.value, {*p.value});
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].to_string() ==
        "f.toml:17:11: source 'wx/corpus': no loaded pipeline is named 'wx' (did you mean "
        "'wc'?)");
  auto ok = agent(kAgent);
  REQUIRE(ok.ok());
  CHECK(validate_agent_against(*ok.value, {*p.value}).empty());
  CHECK(validate_agent_against(*ok.value, {}).size() == 2);
}

TEST_CASE("capacity must be at least 1") {
  check_one_error(agent(replace(kAgent, "capacity = 2", "capacity = 0")), 14, 12,
                  "'capacity' in [[promise]] must be at least 1, not 0");
}

TEST_CASE("names must be identifiers") {
  check_has_error(pipeline(replace(kPipeline, "name = \"corpus\"", "name = \"cor pus\"")), 6, 8,
                  "source name 'cor pus' is not an identifier");
  check_one_error(pipeline(replace(kPipeline, "\"counts\"", "\"$x\"")), 18, 12,
                  "output name '$x' is not an identifier");
  check_one_error(pipeline(replace(kPipeline, "name = \"wc\"", "name = \"\"")), 3, 8,
                  "pipeline name '' is not an identifier");
  check_one_error(agent(replace(kAgent, "node-a", "node a")), 2, 8,
                  "agent name 'node a' is not an identifier");
  check_one_error(agent(replace(kAgent, "wc/count", "wc.count")), 13, 9,
                  "'stage' must be PIPELINE/NAME (identifiers), like \"wordcount/count\"");
  check_one_error(pipeline(replace(kPipeline, "LC_ALL", "VOW_X")), 22, 9,
                  "env name 'VOW_X' is reserved");
  CHECK(is_identifier("a-b_9"));
  CHECK_FALSE(is_identifier("a.b"));
  CHECK_FALSE(is_identifier(std::string(kMaxNameBytes + 1, 'a')));
}

TEST_CASE("every error is reported, in file order") {
  auto out = pipeline(R"([pipeline]
name = "p"
nmae = "q"
[[stage]]
name = "a"
inputs = ["nope"]
outputs = ["o", "o"]
run = "x"
timeout = "1y"
)");
  REQUIRE(out.errors.size() == 4);
  CHECK(out.errors[0].where.line == 3);
  CHECK(out.errors[1].where.line == 6);
  CHECK(out.errors[2].where.line == 7);
  CHECK(out.errors[3].where.line == 9);
}

TEST_CASE("agent file values") {
  auto out = agent(kAgent);
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const AgentConfig& a = *out.value;
  CHECK(a.name == "node-a");
  CHECK(a.peers.size() == 2);
  CHECK(a.pipelines == std::vector<std::string>{"wc.toml"});
  REQUIRE(a.pipelines_where.size() == 1);
  CHECK(a.pipelines_where[0].line == 6);
  CHECK(a.trust_keys == std::vector<std::string>{"abc"});
  CHECK(a.trust_key_files == std::vector<std::string>{"keys/*.pub"});
  REQUIRE(a.promises.size() == 1);
  CHECK(a.promises[0].pipeline == "wc");
  CHECK(a.promises[0].stage == "count");
  CHECK(a.promises[0].capacity == 2);
  REQUIRE(a.sources.size() == 1);
  CHECK(a.sources[0].path == "/data");
  CHECK(a.sources[0].watch);
  CHECK(a.timing.heartbeat_ms == 50);
  CHECK(a.timing.dead_after_ms == Timing{}.dead_after_ms);
  CHECK(a.replicas == 2);
}

TEST_CASE("config kind is told by the [pipeline] or [agent] table") {
  CHECK(detect_config_kind(kPipeline) == ConfigKind::kPipeline);
  CHECK(detect_config_kind(kAgent) == ConfigKind::kAgent);
  CHECK(detect_config_kind("x = 1") == ConfigKind::kUnknown);
  CHECK(detect_config_kind("[[[") == ConfigKind::kUnknown);
}

// ---- identity ----

TEST_CASE("stage digest ignores layout, comments, key order, timeout and retries") {
  Digest base = stage_digest_of(kPipeline, "count");
  std::string reordered = R"([[stage]]
# the same stage, written differently
env   = {LC_ALL="C"}
retries = 5
run=[ "sh","-c" , "wc" ]
outputs = ["counts"]
timeout = "1h"
foreach = "split.shards"
inputs = ["split.shards"]
name = "count"

[[stage]]
outputs = ["shards"]
name = "split"
run = "split $VOW_IN_corpus"
inputs = ["corpus"]

[[source]]
name = "corpus"
[pipeline]
name = "wc"
)";
  CHECK(stage_digest_of(reordered, "count") == base);
  CHECK(stage_digest_of(replace(kPipeline, "retries = 2\n", ""), "count") == base);
}

TEST_CASE("stage digest changes with command, inputs, outputs, env and foreach") {
  Digest base = stage_digest_of(kPipeline, "count");
  CHECK(stage_digest_of(replace(kPipeline, "\"wc\"]", "\"wc -l\"]"), "count") != base);
  CHECK(stage_digest_of(replace(kPipeline, "[\"sh\", \"-c\", \"wc\"]", "\"wc\""), "count") != base);
  CHECK(stage_digest_of(replace(kPipeline, "inputs = [\"split.shards\"]",
                                "inputs = [\"split.shards\", \"corpus\"]"),
                        "count") != base);
  CHECK(stage_digest_of(replace(kPipeline, "[\"counts\"]", "[\"counts\", \"log\"]"), "count") !=
        base);
  CHECK(stage_digest_of(replace(kPipeline, "LC_ALL = \"C\"", "LC_ALL = \"en_US\""), "count") !=
        base);
  CHECK(stage_digest_of(replace(kPipeline, "foreach = \"split.shards\"\n", ""), "count") != base);
  // Renaming an upstream stage changes this stage's input names, hence its digest.
  CHECK(stage_digest_of(replace(replace(replace(kPipeline, "name = \"split\"", "name = \"cut\""),
                                        "[\"split.shards\"]", "[\"cut.shards\"]"),
                                "= \"split.shards\"", "= \"cut.shards\""),
                        "count") != stage_digest_of(kPipeline, "count"));
}

TEST_CASE("canonical pipeline round-trips") {
  auto out = pipeline(kPipeline);
  REQUIRE(out.ok());
  std::string canonical = canonical_pipeline(*out.value);
  auto back = parse_canonical_pipeline(canonical);
  REQUIRE_MESSAGE(back.is_ok(), back.status().to_string());
  CHECK(back->name == "wc");
  CHECK(back->digest == out.value->digest);
  REQUIRE(back->stages.size() == 2);
  CHECK(back->stages[0].name == "split");  // topological order again
  CHECK(back->stages[1].digest == out.value->stages[1].digest);
  CHECK(back->stages[1].foreach == out.value->stages[1].foreach);
  CHECK(back->stages[1].timeout_ms == 0);  // not part of the definition
  CHECK(canonical_pipeline(*back) == canonical);
}

TEST_CASE("canonical decoding rejects damaged bytes") {
  auto out = pipeline(kPipeline);
  REQUIRE(out.ok());
  std::string canonical = canonical_pipeline(*out.value);
  CHECK(parse_canonical_pipeline("").status().code() == StatusCode::kCorrupt);
  for (std::size_t cut = 0; cut < canonical.size(); cut += 7) {
    CHECK_FALSE(parse_canonical_pipeline(canonical.substr(0, cut)).is_ok());
  }
  CHECK_FALSE(parse_canonical_pipeline(canonical + "x").is_ok());
  // A well-formed encoding of a pipeline with a dangling input is still refused.
  Pipeline bad = *out.value;
  bad.stages[1].inputs[0].name = "nothing";
  bad.stages[1].foreach.reset();
  auto r = parse_canonical_pipeline(canonical_pipeline(bad));
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().message().find("no output 'nothing'") != std::string::npos);
}

TEST_CASE("durations parse and format") {
  CHECK(*parse_duration_ms("500ms") == 500);
  CHECK(*parse_duration_ms("90s") == 90'000);
  CHECK(*parse_duration_ms("5m") == 300'000);
  CHECK(*parse_duration_ms("1h") == 3'600'000);
  CHECK(*parse_duration_ms("1m30s") == 90'000);
  CHECK(*parse_duration_ms("0s") == 0);
  for (auto bad : {"", "s", "10", "1.5s", "-1s", "10 s", "1d", "99999999999999h", "9000h"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_duration_ms(bad).is_ok());
  }
  CHECK(format_duration_ms(90'000) == "1m30s");
  CHECK(format_duration_ms(1'500) == "1s500ms");
  CHECK(format_duration_ms(0) == "0s");
  for (std::int64_t ms : {1LL, 999LL, 61'001LL, 3'600'000LL}) {
    CHECK(*parse_duration_ms(format_duration_ms(ms)) == ms);
  }
}

TEST_CASE("job id depends on stage, inputs by name and shard, not on input order") {
  Digest stage = blake2b("stage");
  JobInput a{"a", blake2b("1")};
  JobInput b{"b", blake2b("2")};
  Digest base = job_id(stage, {a, b}, "");
  CHECK(job_id(stage, {b, a}, "") == base);
  CHECK(job_id(blake2b("other"), {a, b}, "") != base);
  CHECK(job_id(stage, {a, b}, "part-aa") != base);
  CHECK(job_id(stage, {a, {"b", blake2b("3")}}, "") != base);
  // The same artifact bound to another input name is another job.
  CHECK(job_id(stage, {a, {"c", blake2b("2")}}, "") != base);
  CHECK(job_id(stage, {a}, "") != base);
}

TEST_CASE("closest_name suggests typos only") {
  std::vector<std::string> names{"name", "inputs", "outputs", "timeout"};
  CHECK(closest_name("nmae", names) == "name");
  CHECK(closest_name("output", names) == "outputs");
  CHECK_FALSE(closest_name("zzz", names).has_value());
  CHECK(edit_distance("kitten", "sitting") == 3);
}


TEST_CASE("network and memory: parsed, part of the digest, carried by the canonical form") {
  Digest base = stage_digest_of(kPipeline, "count");
  auto with = [](std::string_view lines) {
    return replace(kPipeline, "retries = 2\n", std::string("retries = 2\n") + std::string(lines));
  };
  auto out = pipeline(with("network = true\nmemory = \"512M\"\n"));
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Stage* s = out.value->find_stage("count");
  CHECK(s->network);
  CHECK(s->memory_bytes == 512LL << 20);
  CHECK(s->digest != base);
  CHECK(stage_digest_of(with("network = false\n"), "count") == base);  // the default
  CHECK(stage_digest_of(with("network = true\n"), "count") != base);
  Digest mem = stage_digest_of(with("memory = \"1G\"\n"), "count");
  CHECK(mem != base);
  CHECK(mem == stage_digest_of(with("memory = \"1024MiB\"\n"), "count"));
  CHECK(mem != stage_digest_of(with("memory = \"2G\"\n"), "count"));

  auto back = parse_canonical_pipeline(canonical_pipeline(*out.value));
  REQUIRE_MESSAGE(back.is_ok(), back.status().to_string());
  const Stage* b = back->find_stage("count");
  CHECK(b->network);
  CHECK(b->memory_bytes == 512LL << 20);
  CHECK(b->digest == s->digest);
  CHECK_FALSE(back->find_stage("split")->network);

  check_one_error(pipeline(with("memory = \"lots\"\n")), 22, 10,
                  "'memory' in [[stage]] 'lots' is not a size");
  check_one_error(pipeline(with("memory = \"512\"\n")), 22, 10, "is not a size");
  check_one_error(pipeline(with("memory = \"100K\"\n")), 22, 10, "under the smallest limit, 1M");
  check_one_error(pipeline(with("memory = \"2000G\"\n")), 22, 10, "over the largest limit, 1T");
  check_one_error(pipeline(with("memory = 512\n")), 22, 10,
                  "must be a size string like \"512M\"");
  check_one_error(pipeline(with("network = \"yes\"\n")), 22, 11, "'network' in [[stage]]");
}

TEST_CASE("[agent] sandbox: auto by default, one of three values") {
  auto out = agent(kAgent);
  REQUIRE(out.ok());
  CHECK(out.value->sandbox == "auto");
  auto with = [](std::string_view v) {
    return replace(kAgent, "pipelines = [\"wc.toml\"]\n",
                   "pipelines = [\"wc.toml\"]\nsandbox = " + std::string(v) + "\n");
  };
  auto none = agent(with("\"none\""));
  REQUIRE(none.ok());
  CHECK(none.value->sandbox == "none");
  check_one_error(agent(with("\"docker\"")), 7, 11,
                  "'sandbox' in [agent] must be \"auto\", \"bwrap\" or \"none\", not 'docker'");
}

TEST_CASE("[agent] job_limits: auto by default, one of three values") {
  auto out = agent(kAgent);
  REQUIRE(out.ok());
  CHECK(out.value->job_limits == "auto");
  auto with = [](std::string_view v) {
    return replace(kAgent, "pipelines = [\"wc.toml\"]\n",
                   "pipelines = [\"wc.toml\"]\njob_limits = " + std::string(v) + "\n");
  };
  auto rlimits = agent(with("\"rlimits\""));
  REQUIRE(rlimits.ok());
  CHECK(rlimits.value->job_limits == "rlimits");
  check_one_error(agent(with("\"systemd\"")), 7, 14,
                  "'job_limits' in [agent] must be \"auto\", \"cgroups\" or \"rlimits\", not "
                  "'systemd'");
}

TEST_CASE("[agent] bulk_transfer: encrypted by default, or integrity") {
  auto out = agent(kAgent);
  REQUIRE(out.ok());
  CHECK(out.value->bulk_transfer == "encrypted");
  auto with = [](std::string_view v) {
    return replace(kAgent, "pipelines = [\"wc.toml\"]\n",
                   "pipelines = [\"wc.toml\"]\nbulk_transfer = " + std::string(v) + "\n");
  };
  auto plain = agent(with("\"integrity\""));
  REQUIRE(plain.ok());
  CHECK(plain.value->bulk_transfer == "integrity");
  check_one_error(agent(with("\"plain\"")), 7, 17,
                  "'bulk_transfer' in [agent] must be \"encrypted\" or \"integrity\", not "
                  "'plain'");
  auto port = agent(replace(kAgent, "pipelines = [\"wc.toml\"]\n",
                            "pipelines = [\"wc.toml\"]\nbulk_port = 7401\n"));
  REQUIRE(port.ok());
  CHECK(port.value->bulk_port == 7401);
  CHECK(!agent(replace(kAgent, "pipelines = [\"wc.toml\"]\n",
                       "pipelines = [\"wc.toml\"]\nbulk_port = 70000\n"))
             .ok());
}

TEST_CASE("image: the environment is part of the digest; stages without it keep theirs") {
  // Digests computed before `image` existed: the encodings of stages that do not set it
  // are the same bytes.
  CHECK(stage_digest_of(kPipeline, "count").hex() ==
        "7ba1f6518e07e2d2ac60f1330de87afbe22a09091a4a2e3e9d0c85577c2ea48e");
  auto with = [](std::string_view lines) {
    return replace(kPipeline, "retries = 2\n", std::string("retries = 2\n") + std::string(lines));
  };
  CHECK(stage_digest_of(with("network = true\nmemory = \"512M\"\n"), "count").hex() ==
        "e24542c3ffeabb8f994b81eb6cc6291d4a7846dcc1254b5a45ba6f2a581a6a71");

  const std::string a = "sha256:" + std::string(64, 'a');
  const std::string b = "sha256:" + std::string(64, 'b');
  Digest base = stage_digest_of(kPipeline, "count");
  Digest in_a = stage_digest_of(with("image = \"" + a + "\"\n"), "count");
  CHECK(in_a != base);
  CHECK(in_a != stage_digest_of(with("image = \"" + b + "\"\n"), "count"));
  CHECK(in_a != stage_digest_of(with("image = \"python@" + a + "\"\n"), "count"));
  CHECK(in_a != stage_digest_of(with("image = \"" + a + "\"\nnetwork = true\n"), "count"));
  // The other stage is unchanged, and so is its digest.
  CHECK(stage_digest_of(with("image = \"" + a + "\"\n"), "split") ==
        stage_digest_of(kPipeline, "split"));

  auto out = pipeline(with("image = \"registry.example/py@" + a + "\"\nmemory = \"1G\"\n"));
  INFO(all(out.errors));
  REQUIRE(out.ok());
  auto back = parse_canonical_pipeline(canonical_pipeline(*out.value));
  REQUIRE_MESSAGE(back.is_ok(), back.status().to_string());
  const Stage* s = back->find_stage("count");
  CHECK(s->image == "registry.example/py@" + a);
  CHECK(s->memory_bytes == 1LL << 30);
  CHECK_FALSE(s->network);
  CHECK(s->digest == out.value->find_stage("count")->digest);
  CHECK(back->find_stage("split")->image.empty());

  // A decoded image is checked as a written one is.
  Pipeline bad = *out.value;
  bad.stages[1].image = "python:3.12";
  CHECK_FALSE(parse_canonical_pipeline(canonical_pipeline(bad)).is_ok());

  check_one_error(pipeline(with("image = \"python:3.12\"\n")), 22, 9,
                  "'image' in [[stage]] 'python:3.12' does not name an image by its digest");
  check_one_error(pipeline(with("image = \"sha256:ABC\"\n")), 22, 9, "by its digest");
  check_one_error(pipeline(with("image = \"@" + a + "\"\n")), 22, 9, "nothing before '@'");
  check_one_error(pipeline(with("image = \"a b@" + a + "\"\n")), 22, 9, "has a space");
  check_one_error(pipeline(with("image = 3\n")), 22, 9, "'image' in [[stage]]");
}

TEST_CASE("a stage with an image cannot be promised: no executor runs images") {
  const std::string a = "sha256:" + std::string(64, 'a');
  auto p = pipeline(replace(kPipeline, "retries = 2\n", "retries = 2\nimage = \"" + a + "\"\n"));
  REQUIRE(p.ok());
  auto ag = agent(kAgent);
  REQUIRE(ag.ok());
  auto errors = validate_agent_against(*ag.value, {*p.value});
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].where.line == 13);
  CHECK(errors[0].message ==
        "promise for stage 'wc/count': the stage runs in image '" + a +
            "' (f.toml:14:1), and this agent has no executor that runs container images: no "
            "agent can promise it yet (docs/sandbox.md)");
}

TEST_CASE("pids and cpus: parsed, checked, part of the digest, carried by the canonical form") {
  Digest base = stage_digest_of(kPipeline, "count");
  auto with = [](std::string_view lines) {
    return replace(kPipeline, "retries = 2\n", std::string("retries = 2\n") + std::string(lines));
  };
  auto out = pipeline(with("pids = 64\ncpus = 2\n"));
  INFO(all(out.errors));
  REQUIRE(out.ok());
  const Stage* s = out.value->find_stage("count");
  CHECK(s->pids == 64);
  CHECK(s->cpus == 2);
  Digest pids = stage_digest_of(with("pids = 64\n"), "count");
  Digest cpus = stage_digest_of(with("cpus = 2\n"), "count");
  CHECK(pids != base);
  CHECK(cpus != base);
  CHECK(pids != cpus);
  CHECK(s->digest != pids);
  CHECK(pids != stage_digest_of(with("pids = 65\n"), "count"));
  CHECK(stage_digest_of(kPipeline, "split") == stage_digest_of(with("pids = 64\n"), "split"));

  auto back = parse_canonical_pipeline(canonical_pipeline(*out.value));
  REQUIRE_MESSAGE(back.is_ok(), back.status().to_string());
  CHECK(back->find_stage("count")->pids == 64);
  CHECK(back->find_stage("count")->cpus == 2);
  CHECK(back->find_stage("count")->digest == s->digest);
  // Out-of-range values do not decode.
  Pipeline bad = *out.value;
  bad.stages[1].pids = kMaxStagePids + 1;
  CHECK_FALSE(parse_canonical_pipeline(canonical_pipeline(bad)).is_ok());
  bad.stages[1].pids = -3;
  CHECK_FALSE(parse_canonical_pipeline(canonical_pipeline(bad)).is_ok());

  check_one_error(pipeline(with("pids = 0\n")), 22, 8, "at least 1, not 0");
  check_one_error(pipeline(with("cpus = 2000\n")), 22, 8, "at most 1024, not 2000");
  check_one_error(pipeline(with("cpus = \"2\"\n")), 22, 8, "'cpus' in [[stage]]");
}

TEST_CASE("[[promise]] executor and [slurm]: checked where written") {
  auto ok = agent(replace(kAgent, "capacity = 2\n",
                          "capacity = 2\nexecutor = \"slurm\"\n") +
                  "\n[slurm]\nshared_dir = \"/shared/vow/\"\npartition = \"gpu\"\n"
                  "poll_interval = \"500ms\"\n");
  INFO(all(ok.errors));
  REQUIRE(ok.ok());
  CHECK(ok.value->promises[0].executor == "slurm");
  CHECK(ok.value->slurm.shared_dir == "/shared/vow");
  CHECK(ok.value->slurm.partition == "gpu");
  CHECK(ok.value->slurm.poll_ms == 500);
  CHECK(agent(kAgent).value->promises[0].executor == "local");

  check_one_error(agent(replace(kAgent, "capacity = 2\n", "capacity = 2\nexecutor = \"slurm\"\n")),
                  15, 12, "'executor' in [[promise]] is \"slurm\", but the agent file has no [slurm]");
  check_one_error(agent(replace(kAgent, "capacity = 2\n", "capacity = 2\nexecutor = \"k8s\"\n")),
                  15, 12, "'executor' in [[promise]] must be \"local\" or \"slurm\", not 'k8s'");
  check_one_error(agent(std::string(kAgent) + "\n[slurm]\nshared_dir = \"shared\"\n"), 25, 14,
                  "'shared_dir' in [slurm] must be an absolute path");
  check_one_error(agent(std::string(kAgent) + "\n[slurm]\npartition = \"gpu\"\n"), 24, 1,
                  "shared_dir");
}

}  // namespace vow::promises
