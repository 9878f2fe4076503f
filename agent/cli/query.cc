// vow jobs, vow job, vow peers, vow promises, vow lineage, vow why: read-only questions
// to one agent, answered from its replicated ledger (agent/queries.cc). Each prints an
// aligned table, or with --json the agent's answer as is (schemas: docs/cli.md).
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/cli/table.h"

namespace vow::agent::cli {
namespace {

using nlohmann::json;

json ask(const char* cmd, const AgentAddress& address, const std::string& method,
         const json& args = json::object()) {
  auto answer = control_call(address, method, args);
  if (!answer.is_ok()) die(cmd, answer.status());
  return std::move(answer).value();
}

std::string who(const json& ref) {
  std::string name = ref.value("name", "");
  std::string id = short_id(ref.value("id", ""), 14);
  return name.empty() ? id : name + " (" + id + ")";
}

std::string stage_label(const json& j) {
  std::string s = j.value("pipeline", "") + "/" + j.value("stage", "");
  if (!j.value("shard", "").empty()) s += "[" + j.value("shard", "") + "]";
  return s;
}

struct Common {
  AgentAddress address;
  bool json = false;
};

CLI::App* query_command(CLI::App& app, const char* name, const char* help, Common* c) {
  CLI::App* cmd = app.add_subcommand(name, help);
  add_agent_options(cmd, &c->address);
  cmd->add_flag("--json", c->json, "Print JSON (docs/cli.md)");
  return cmd;
}

void print_jobs(const json& answer) {
  std::vector<Row> rows;
  for (const auto& j : answer["jobs"]) {
    std::string claims;
    for (const auto& c : j["claims"]) {
      if (!claims.empty()) claims += ", ";
      claims +=
          c.value("name", short_id(c.value("id", ""))) + "@" + std::to_string(c.value("epoch", 0));
      if (c.value("live", false)) claims += "*";
    }
    std::string executor = j.contains("executor") ? who(j["executor"]) : "-";
    rows.push_back(
        {short_id(j.value("id", "")), stage_label(j), paint_state(j.value("state", "")),
         std::to_string(j.value("attempts", 0)), claims.empty() ? "-" : claims, executor,
         j.contains("duration_ms") ? human_ms(j["duration_ms"].get<std::int64_t>()) : "-"});
  }
  print_table(
      {"JOB", "STAGE", "STATE", "ATTEMPTS", "CLAIMS (agent@epoch, *live)", "EXECUTOR", "DURATION"},
      rows);
  std::cout << answer["jobs"].size() << " jobs\n";
}

void print_job(const json& j) {
  std::cout << "job       " << j.value("id", "") << "\n"
            << "stage     " << escape_text(stage_label(j)) << "  ("
            << short_id(j.value("stage_digest", "")) << ")\n"
            << "state     " << paint_state(j.value("state", "")) << "\n"
            << "attempts  " << j.value("attempts", 0) << " (" << j.value("failed_attempts", 0)
            << " failed)" << (j.value("nondeterministic", false) ? "  NON-DETERMINISTIC" : "")
            << "\n";
  if (j.contains("inputs")) {
    std::cout << "\ninputs\n";
    std::vector<Row> rows;
    for (const auto& [name, a] : j["inputs"].items()) {
      rows.push_back({name, a.value("digest", ""), a.value("kind", ""),
                      human_bytes(a.value("size_bytes", 0u))});
    }
    print_table({"NAME", "DIGEST", "KIND", "SIZE"}, rows, 2);
  }
  std::cout << "\nclaims\n";
  std::vector<Row> rows;
  for (const auto& c : j["claims"]) {
    rows.push_back(
        {who(c), std::to_string(c.value("epoch", 0)),
         c.value("live", false) ? "live" : (c.value("released", false) ? "released" : "ended")});
  }
  print_table({"AGENT", "EPOCH", "CLAIM"}, rows, 2);
  std::cout << "\nresults\n";
  rows.clear();
  for (const auto& r : j["results"]) {
    std::string outs;
    for (const auto& [name, d] : r["outputs"].items()) {
      outs += (outs.empty() ? "" : " ") + name + "=" + short_id(d.get<std::string>());
    }
    rows.push_back({r.value("canonical", false) ? paint("canonical", Colour::kGreen) : "", who(r),
                    std::to_string(r.value("epoch", 0)),
                    r.value("ok", false) ? "ok" : paint("failed", Colour::kRed),
                    std::to_string(r.value("exit_status", 0)),
                    human_ms(r.value("duration_ms", std::int64_t{0})),
                    r.value("ok", false) ? outs : r.value("error", "")});
  }
  print_table({"", "AGENT", "EPOCH", "RESULT", "EXIT", "DURATION", "OUTPUTS / ERROR"}, rows, 2);
  for (const char* stream : {"stdout", "stderr"}) {
    if (!j.contains("logs") || !j["logs"].contains(stream)) continue;
    std::string text = j["logs"][stream].get<std::string>();
    if (text.empty()) continue;
    std::cout << "\n" << stream << " (tail)\n" << text;
    if (text.back() != '\n') std::cout << "\n";
  }
}

// Steps of a lineage, upstream first.
std::vector<json> in_order(const json& lineage) {
  std::map<std::string, json> steps;
  std::map<std::string, std::set<std::string>> ups;
  for (const auto& s : lineage["steps"]) steps[s.value("id", "")] = s;
  for (const auto& e : lineage["edges"]) ups[e.value("to", "")].insert(e.value("from", ""));
  std::vector<json> out;
  std::set<std::string> done;
  while (done.size() < steps.size()) {
    bool progress = false;
    for (const auto& [id, s] : steps) {
      if (done.count(id)) continue;
      bool ready = true;
      for (const auto& u : ups[id]) ready = ready && (done.count(u) || !steps.count(u));
      if (!ready) continue;
      out.push_back(s);
      done.insert(id);
      progress = true;
    }
    if (!progress) break;  // a cycle cannot happen (digests), but never loop forever
  }
  return out;
}

void print_lineage(const json& l) {
  std::map<std::string, std::vector<json>> into;
  for (const auto& e : l["edges"]) into[e.value("to", "")].push_back(e);
  std::cout << "lineage of " << l.value("ref", "") << "\n";
  for (const auto& s : in_order(l)) {
    std::string id = s.value("id", "");
    std::cout << "\n";
    if (s.value("kind", "") == "source") {
      std::cout << paint("source ", Colour::kBold) << s.value("pipeline", "") << "/"
                << s.value("source", "") << " version " << s.value("version", 0) << "\n"
                << "  artifact  " << s["output"].value("digest", "") << " ("
                << s["output"].value("kind", "") << ", "
                << human_bytes(s["output"].value("size_bytes", 0u)) << ")\n"
                << "  signer    " << who(s["signer"]) << "  statement " << id << " at "
                << human_time(s.value("signed_unix_ms", std::int64_t{0})) << "\n"
                << "  attested  " << s.value("attestation", "- (signed before attestations)")
                << "\n";
      continue;
    }
    std::cout << paint("job ", Colour::kBold) << s.value("job", "") << "  "
              << escape_text(stage_label(s)) << "\n"
              << "  stage     " << s.value("stage_digest", "") << "\n";
    if (s.contains("definition") && s["definition"].contains("image")) {
      std::cout << "  image     " << escape_text(s["definition"].value("image", "")) << "\n";
    }
    if (s.contains("definition") && s["definition"].contains("root")) {
      std::cout << "  root      " << escape_text(s["definition"].value("root", "")) << "\n";
    }
    std::cout << "  executor  " << who(s["executor"]) << ", epoch " << s.value("epoch", 0) << ", "
              << human_time(s.value("started_unix_ms", std::int64_t{0})) << " for "
              << human_ms(s.value("ended_unix_ms", std::int64_t{0}) -
                          s.value("started_unix_ms", std::int64_t{0}))
              << "\n"
              << "  signer    " << who(s["signer"]) << "  statement " << id << "\n"
              << "  attested  " << s.value("attestation", "- (signed before attestations)")
              << "\n";
    for (const auto& [name, d] : s["inputs"].items()) {
      std::vector<std::string> froms;
      for (const auto& e : into[id]) {
        if (e.value("input", "") == name || e.value("input", "").rfind(name + "/", 0) == 0) {
          froms.push_back(e.value("from", ""));
        }
      }
      std::string from = froms.size() == 1 ? "  <- " + froms.front()
                         : froms.empty()
                             ? ""
                             : "  <- " + std::to_string(froms.size()) + " results (fan-in)";
      std::cout << "  in        " << escape_text(name) << " = " << d.get<std::string>() << from
                << "\n";
    }
    for (const auto& [name, d] : s["outputs"].items()) {
      std::cout << "  out       " << name << " = " << d.get<std::string>() << "\n";
    }
  }
}

void print_lineage_dot(const json& l) {
  std::cout << "digraph lineage {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (const auto& s : l["steps"]) {
    std::string label;
    if (s.value("kind", "") == "source") {
      label = "source " + s.value("pipeline", "") + "/" + s.value("source", "") + " v" +
              std::to_string(s.value("version", 0)) + "\n" +
              short_id(s["output"].value("digest", ""));
    } else {
      label = escape_text(stage_label(s)) + "\njob " + short_id(s.value("job", "")) + "\nby " +
              s["executor"].value("name", short_id(s["executor"].value("id", "")));
    }
    std::cout << "  " << dot_quote(s.value("id", "")) << " [label=" << dot_quote(label)
              << (s.value("kind", "") == "source" ? ", shape=ellipse" : "") << "];\n";
  }
  for (const auto& e : l["edges"]) {
    std::cout << "  " << dot_quote(e.value("from", "")) << " -> " << dot_quote(e.value("to", ""))
              << " [label=" << dot_quote(escape_text(e.value("input", ""))) << "];\n";
  }
  std::cout << "}\n";
}

void print_why(const json& j) {
  const json& p = j["id_parts"];
  std::cout << "job " << j.value("id", "") << "  " << escape_text(stage_label(j)) << "  "
            << paint_state(j.value("state", "")) << "\n\n"
            << "job id = H(stage digest, inputs by name, shard)\n"
            << "  stage digest  " << p.value("stage_digest", "") << "\n";
  if (p.contains("stage_covers")) {
    const json& c = p["stage_covers"];
    std::string argv;
    for (const auto& a : c["argv"]) argv += (argv.empty() ? "" : " ") + a.get<std::string>();
    std::cout << "    covers      " << c.value("pipeline", "") << "/" << c.value("name", "") << ": "
              << c.value("form", "") << " command [" << argv << "]\n";
    std::string ins, outs;
    for (const auto& i : c["inputs"]) ins += (ins.empty() ? "" : ", ") + i.get<std::string>();
    for (const auto& o : c["outputs"]) outs += (outs.empty() ? "" : ", ") + o.get<std::string>();
    std::cout << "                inputs " << ins << "; outputs " << outs;
    if (!c.value("foreach", "").empty()) std::cout << "; foreach " << c.value("foreach", "");
    if (!c["env"].empty()) std::cout << "; env " << c["env"].dump();
    if (c.contains("image")) std::cout << "; image " << escape_text(c.value("image", ""));
    if (c.contains("root")) std::cout << "; root " << escape_text(c.value("root", ""));
    std::cout << " (not timeout or retries)\n";
  }
  for (const auto& [name, d] : p["inputs"].items()) {
    std::cout << "  input         " << escape_text(name) << " = " << d.get<std::string>() << "\n";
  }
  std::cout << "  shard         "
            << (p.value("shard", "").empty() ? "(none)" : escape_text(p.value("shard", ""))) << "\n"
            << "  recomputed    " << p.value("recomputed_job_id", "")
            << (p.value("matches", false) ? "  (matches)" : "  (DOES NOT MATCH)") << "\n\n";
  if (j.contains("from_result")) {
    std::cout << "result: " << j.value("from_result", "")
              << "  attestation " << j.value("attestation", "-")
              << (j.value("memoized", false)
                      ? "  memoized: signed before the pipeline's newest source version, reused"
                      : "  computed for the current source versions")
              << "\n";
  } else {
    std::cout << "result: none yet\n";
  }
  std::cout << "competing results: " << j["results"].size() << "\n";
  for (const auto& r : j["results"]) {
    std::cout << "  " << (r.value("canonical", false) ? "* " : "  ") << r.value("statement", "")
              << " " << who(r) << " epoch " << r.value("epoch", 0) << " "
              << (r.value("ok", false) ? "ok" : "failed");
    if (r.contains("attestation")) {
      std::cout << "  attestation " << short_id(r.value("attestation", ""));
    }
    std::cout << "\n";
  }
  std::cout << "rule: " << j.value("rule", "") << "\n";
}

}  // namespace

void add_query_commands(CLI::App& app) {
  {
    struct O : Common {
      std::string pipeline, stage, state, after;
      std::int64_t limit = 0;
    };
    auto o = std::make_shared<O>();
    CLI::App* cmd =
        query_command(app, "jobs", "Jobs with their claims, results and durations", o.get());
    cmd->add_option("--pipeline", o->pipeline, "Only this pipeline");
    cmd->add_option("--stage", o->stage, "Only this stage");
    cmd->add_option("--state", o->state, "Only jobs in this state")
        ->check(CLI::IsMember({"pending", "ready", "running", "done", "failed", "superseded"}));
    cmd->add_option("--limit", o->limit,
                    "At most this many jobs (one page; the answer's \"next\" continues it). "
                    "Default: every job, asked for page by page")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--after", o->after, "Only jobs whose id sorts after this one (a \"next\")")
        ->check(job_id_arg());
    cmd->callback([o] {
      json args = {{"pipeline", o->pipeline}, {"stage", o->stage}, {"state", o->state}};
      if (!o->after.empty()) args["after"] = o->after;
      json answer;
      if (o->limit > 0) {
        args["limit"] = o->limit;
        answer = ask("jobs", o->address, "jobs", args);
      } else {
        // Every job: page after page (each answer is bounded, and the agent goes on
        // with its work between them).
        json all = json::array();
        for (;;) {
          json page = ask("jobs", o->address, "jobs", args);
          for (auto& j : page["jobs"]) all.push_back(std::move(j));
          if (!page.contains("next") || !page["next"].is_string()) break;
          args["after"] = page["next"];
        }
        answer = {{"jobs", all}, {"next", nullptr}};
      }
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
      } else {
        print_jobs(answer);
        if (answer.contains("next") && answer["next"].is_string()) {
          std::cout << "more: vow jobs --after " << answer["next"].get<std::string>() << "\n";
        }
      }
    });
  }
  {
    struct O : Common {
      std::string job;
    };
    auto o = std::make_shared<O>();
    CLI::App* cmd =
        query_command(app, "job", "One job: claims, every result, attempts, log tails", o.get());
    cmd->add_option("job", o->job, "Job id (or a prefix of 6+ hex digits)")
        ->required()
        ->check(job_id_arg());
    cmd->callback([o] {
      json answer = ask("job", o->address, "job", {{"job", o->job}});
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
      } else {
        print_job(answer);
      }
    });
  }
  {
    auto o = std::make_shared<Common>();
    CLI::App* cmd = query_command(app, "peers", "The agents this agent knows and hears", o.get());
    cmd->callback([o] {
      json answer = ask("peers", o->address, "peers");
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
        return;
      }
      std::cout << "this agent: " << who(answer["self"]) << "\n\n";
      std::vector<Row> rows;
      for (const auto& p : answer["peers"]) {
        std::string l = p.value("liveness", "");
        rows.push_back(
            {p.value("name", ""), p.value("id", ""),
             l == "alive" ? paint(l, Colour::kGreen) : paint(l, Colour::kRed),
             p.value("linked", false) ? "yes" : "no", p.value("endpoint", ""),
             std::to_string(p.value("running", 0)) + "/" + std::to_string(p.value("capacity", 0)),
             p.value("last_seen_ms", std::int64_t{-1}) < 0
                 ? "never"
                 : human_ms(p.value("last_seen_ms", std::int64_t{0})) + " ago",
             std::to_string(p.value("statements", 0))});
      }
      print_table(
          {"NAME", "ID", "LIVENESS", "LINKED", "ENDPOINT", "LOAD", "LAST SEEN", "STATEMENTS"},
          rows);
    });
  }
  {
    auto o = std::make_shared<Common>();
    CLI::App* cmd =
        query_command(app, "promises", "What every agent promises to run and provides", o.get());
    cmd->callback([o] {
      json answer = ask("promises", o->address, "promises");
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
        return;
      }
      std::vector<Row> rows;
      for (const auto& a : answer["agents"]) {
        std::string name = a.value("name", "") + (a.value("self", false) ? " (this)" : "");
        for (const auto& p : a["promises"]) {
          rows.push_back({name, "runs", p.value("pipeline", "") + "/" + p.value("stage", ""),
                          "capacity " + std::to_string(p.value("capacity", 0))});
        }
        for (const auto& s : a["sources"]) {
          rows.push_back(
              {name, "provides", s.value("pipeline", "") + "/" + s.value("source", ""), ""});
        }
        if (a["promises"].empty() && a["sources"].empty()) rows.push_back({name, "-", "", ""});
      }
      print_table({"AGENT", "PROMISE", "WHAT", ""}, rows);
    });
  }
  {
    struct O : Common {
      std::string ref;
      bool dot = false;
    };
    auto o = std::make_shared<O>();
    CLI::App* cmd = query_command(app, "lineage",
                                  "The DAG behind a result, back to its source versions", o.get());
    cmd->add_option("artifact", o->ref, "An artifact digest, or PIPELINE/STAGE.OUTPUT")
        ->required()
        ->check(artifact_arg());
    auto* dot = cmd->add_flag("--dot", o->dot, "Print Graphviz DOT");
    dot->excludes(cmd->get_option("--json"));
    cmd->callback([o] {
      json answer = ask("lineage", o->address, "lineage", {{"ref", o->ref}});
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
      } else if (o->dot) {
        print_lineage_dot(answer);
      } else {
        print_lineage(answer);
      }
    });
  }
  {
    struct O : Common {
      std::string job;
    };
    auto o = std::make_shared<O>();
    CLI::App* cmd = query_command(
        app, "why", "Why a job exists, what its id is made of, which result counts", o.get());
    cmd->add_option("job", o->job, "Job id (or a prefix of 6+ hex digits)")
        ->required()
        ->check(job_id_arg());
    cmd->callback([o] {
      json answer = ask("why", o->address, "why", {{"job", o->job}});
      if (o->json) {
        std::cout << answer.dump(2) << "\n";
      } else {
        print_why(answer);
      }
    });
  }
}

}  // namespace vow::agent::cli
