#include "agent/diff.h"

#include <doctest/doctest.h>

namespace vow::agent {
namespace {

using nlohmann::json;

json definition(const std::string& script) {
  return {{"name", "s"},  {"form", "shell"}, {"argv", {"/bin/sh", "-c", script}},
          {"inputs", {}}, {"outputs", {}},   {"env", {{"LC_ALL", "C"}}},
          {"foreach", ""}};
}

json source(const std::string& id, int version, const std::string& digest) {
  return {{"id", id},          {"kind", "source"},
          {"pipeline", "p"},   {"source", "in"},
          {"version", version}, {"output", {{"digest", digest}}},
          {"signer", {{"id", "vowa"}, {"name", "a"}}}};
}

json job(const std::string& id, const std::string& stage, const std::string& job_id,
         const std::string& stage_digest, const json& def, const json& inputs,
         const json& outputs, const std::string& executor = "a") {
  return {{"id", id},
          {"kind", "job"},
          {"job", job_id},
          {"pipeline", "p"},
          {"stage", stage},
          {"shard", ""},
          {"stage_digest", stage_digest},
          {"definition", def},
          {"executor", {{"id", "vow" + executor}, {"name", executor}}},
          {"nondeterministic", false},
          {"inputs", inputs},
          {"outputs", outputs}};
}

// source in -> first -> second -> third
json lineage(int version, const std::string& in, const std::string& second_script,
             const std::string& second_out, const std::string& third_executor = "a") {
  std::string sd = second_script == "cat" ? "sd1" : "sd2";
  json steps = {
      source("a/" + std::to_string(version), version, in),
      job("a/f" + in, "first", "j1" + in, "fd", definition("tr a-z A-Z"), {{"in", in}},
          {{"o", "F" + in}}),
      job("a/s" + in + sd, "second", "j2" + in + sd, sd, definition(second_script),
          {{"o", "F" + in}}, {{"o", second_out}}),
      job("b/t" + second_out, "third", "j3" + second_out, "td", definition("wc -l"),
          {{"o", second_out}}, {{"n", "N" + second_out}}, third_executor)};
  json edges = json::array();
  auto edge = [&](const json& f, const json& t, const std::string& input) {
    edges.push_back({{"from", f["id"]}, {"to", t["id"]}, {"input", input}, {"digest", ""}});
  };
  edge(steps[0], steps[1], "in");
  edge(steps[1], steps[2], "o");
  edge(steps[2], steps[3], "o");
  return {{"ref", "p/third.n"}, {"artifacts", {"N" + second_out}}, {"roots", {steps[3]["id"]}},
          {"steps", steps}, {"edges", edges}};
}

json step(const json& diff, const std::string& key) {
  for (const auto& s : diff["steps"]) {
    if (s["step"] == key) return s;
  }
  FAIL("no step " << key);
  return {};
}

}  // namespace

TEST_CASE("line diff keeps common lines and marks removed and added ones") {
  auto d = line_diff({"a", "b", "c"}, {"a", "x", "c", "d"});
  std::vector<DiffLine> want = {{' ', "a"}, {'-', "b"}, {'+', "x"}, {' ', "c"}, {'+', "d"}};
  CHECK(d == want);
  CHECK(line_diff({}, {}).empty());
  CHECK(command_lines(definition("one\ntwo\n")) == std::vector<std::string>{"one", "two"});
  json argv = {{"form", "argv"}, {"argv", {"/usr/bin/env", "true"}}};
  CHECK(command_lines(argv) == std::vector<std::string>{"/usr/bin/env", "true"});
}

TEST_CASE("two lineages of one result are the same") {
  json a = lineage(1, "I1", "cat", "S1");
  json d = diff_lineages(a, a);
  CHECK(d["same"] == true);
  CHECK(d["summary"]["same"] == 4);
  CHECK(diff_text(d, false).find("the same: all 4 steps") != std::string::npos);
}

TEST_CASE("a changed command names its stage and what is downstream, nothing upstream") {
  json a = lineage(1, "I1", "cat", "S1");
  json b = lineage(1, "I1", "sort\ncat", "S2", "b");
  json d = diff_lineages(a, b);
  CHECK(d["same"] == false);
  CHECK(d["summary"]["origins"] == json({"p/second"}));
  CHECK(step(d, "p/in")["state"] == "same");
  CHECK(step(d, "p/first")["state"] == "same");
  json second = step(d, "p/second");
  CHECK(second["state"] == "differs");
  CHECK(second["causes"] == json({"definition"}));
  CHECK(second["definition"]["command"] ==
        json({{{"op", "+"}, {"text", "sort"}}, {{"op", " "}, {"text", "cat"}}}));
  json third = step(d, "p/third");
  CHECK(third["causes"] == json({"inputs"}));
  CHECK(third["inputs"]["o"]["from_b"] == json({"p/second"}));
  CHECK(third["executor"]["b"]["name"] == "b");
  // Upstream first in the answer.
  CHECK(d["steps"][0]["step"] == "p/in");
  std::string text = diff_text(d, false);
  CHECK(text.find("2 of 4 steps differ") != std::string::npos);
  CHECK(text.find("the differences start at p/second") != std::string::npos);
  CHECK(text.find("    + sort") != std::string::npos);
  CHECK(text.find("the same (2): p/in, p/first") != std::string::npos);
  std::string dot = diff_dot(d);
  CHECK(dot.find("\"p/second\" [label=\"p/second\\ndefinition\", fillcolor=\"#f4a6a6\"") !=
        std::string::npos);
  CHECK(dot.find("\"p/first\" [label=\"p/first\"];") != std::string::npos);
  CHECK(dot.find("\"p/first\" -> \"p/second\" [label=\"o\"];") != std::string::npos);
}

TEST_CASE("a new source version is where the difference starts") {
  json a = lineage(1, "I1", "cat", "S1");
  json b = lineage(2, "I2", "cat", "S2");
  json d = diff_lineages(a, b);
  CHECK(d["summary"]["origins"] == json({"p/in"}));
  json in = step(d, "p/in");
  CHECK(in["causes"] == json({"version"}));
  CHECK(in["version"]["a"]["version"] == 1);
  CHECK(in["version"]["b"]["digest"] == "I2");
  CHECK(step(d, "p/first")["causes"] == json({"inputs"}));
  CHECK(step(d, "p/first")["inputs"]["in"]["from_b"] == json({"p/in"}));
  CHECK(d["summary"]["differ"] == 4);
}

}  // namespace vow::agent
