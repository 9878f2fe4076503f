// vow status: the mesh as one agent sees it (agents, pipelines, jobs by state, rejected
// messages); vow wait: block until a pipeline is done; vow retry: run failed jobs again.
// JSON schemas: docs/cli.md.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <thread>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/cli/table.h"
#include "promises/config.h"

namespace vow::agent::cli {
namespace {

// vow wait's exit status is the common one (commands.h): 1 a job failed past its
// retries, 3 no such pipeline or stage, 4 timed out.
constexpr int kWaitPollMs = 100;

struct StatusOptions {
  AgentAddress address;
  bool json = false;
};

void print_status(const nlohmann::json& s) {
  std::vector<Row> agents;
  for (const auto& a : s["agents"]) {
    bool alive = a.value("alive", false);
    std::string load = std::to_string(a.value("running", 0));
    if (a.contains("capacity")) load += "/" + std::to_string(a.value("capacity", 0));
    std::int64_t seen = a.value("last_seen_ms", std::int64_t{-1});
    agents.push_back({a.value("name", "?") + (a.value("self", false) ? " (this)" : ""),
                      a.value("id", ""),
                      alive ? paint("yes", Colour::kGreen) : paint("no", Colour::kRed), load,
                      a.value("self", false) ? "-"
                      : seen < 0             ? "never"
                                             : human_ms(seen) + " ago"});
  }
  print_table({"AGENT", "ID", "ALIVE", "LOAD", "LAST SEEN"}, agents);
  for (const auto& a : s["agents"]) {
    if (a.value("self", false) && a.value("catching_up", false)) {
      std::cout << "\nthis agent is catching up (pulling statements from peers): the job "
                   "counts below are those of before the pull\n";
    }
  }
  const char* states[] = {"pending", "ready", "running", "done", "failed", "superseded"};
  for (const auto& p : s["pipelines"]) {
    std::cout << "\npipeline " << p.value("name", "?") << "  (" << short_id(p.value("digest", ""))
              << ")\n";
    std::vector<Row> rows;
    for (const auto& st : p["stages"]) {
      Row r{st.value("name", "?")};
      for (const char* k : states) {
        int n = st["jobs"].value(k, 0);
        std::string cell = std::to_string(n);
        std::string state = k;
        if (n > 0 && state == "done") cell = paint(cell, Colour::kGreen);
        if (n > 0 && state == "failed") cell = paint(cell, Colour::kRed);
        if (n > 0 && state == "running") cell = paint(cell, Colour::kYellow);
        r.push_back(cell);
      }
      rows.push_back(r);
    }
    print_table({"STAGE", "PENDING", "READY", "RUNNING", "DONE", "FAILED", "SUPERSEDED"}, rows, 2);
    for (const auto& st : p["stages"]) {
      if (st.value("state", "") == "pending" && st.contains("reason")) {
        std::cout << "  stage " << st.value("name", "?") << ": pending (" << st.value("reason", "")
                  << ")\n";
      }
    }
    // Two current definitions of one stage: which agents promise which.
    for (const auto& c : p.value("conflicts", nlohmann::json::array())) {
      std::cout << "  " << paint("conflict", Colour::kRed) << ": stage " << c.value("stage", "?")
                << " has " << c["definitions"].size() << " current definitions:";
      for (const auto& d : c["definitions"]) {
        std::cout << " " << short_id(d.value("digest", "")) << " by";
        for (const auto& a : d["agents"]) {
          std::string name = a.value("name", "");
          std::cout << " " << (name.empty() ? short_id(a.value("id", "")) : name);
        }
        std::cout << ";";
      }
      std::cout << " planning " << short_id(c.value("planned", "")) << "\n";
    }
  }
  // The sources this agent provides, and what keeps one from being read.
  const auto sources = s.value("sources", nlohmann::json::array());
  if (!sources.empty()) {
    std::cout << "\nsources provided here\n";
    std::vector<Row> rows;
    for (const auto& src : sources) {
      std::string state = src.value("state", "?");
      rows.push_back({src.value("pipeline", "?") + "/" + src.value("source", "?"),
                      src.value("path", ""),
                      state == "ok"      ? paint(state, Colour::kGreen)
                      : state == "error" ? paint(state, Colour::kRed)
                                         : state,
                      src["snapshot"].is_string() ? short_id(src["snapshot"].get<std::string>())
                                                  : "-",
                      human_time(src.value("last_ok_ms", std::int64_t{0}))});
    }
    print_table({"SOURCE", "PATH", "STATE", "SNAPSHOT", "LAST READ"}, rows, 2);
    std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    for (const auto& src : sources) {
      if (!src.contains("error")) continue;
      std::int64_t since = src.value("error_since_ms", std::int64_t{0});
      std::cout << "  " << paint("error", Colour::kRed) << ": source "
                << escape_text(src.value("pipeline", "?") + "/" + src.value("source", "?"))
                << ": " << escape_text(src.value("error", ""));
      if (since > 0) std::cout << " (since " << human_ms(std::max<std::int64_t>(0, now - since))
                               << " ago)";
      std::cout << "\n";
    }
  }
  std::uint64_t rejected = 0;
  for (const auto& [k, v] : s["rejected"].items()) rejected += v.get<std::uint64_t>();
  std::cout << "\nrejected messages: " << rejected;
  for (const auto& [k, v] : s["rejected"].items()) {
    if (v.get<std::uint64_t>() > 0) std::cout << "  " << k << "=" << v.get<std::uint64_t>();
  }
  std::cout << "\n";
}

}  // namespace

void add_status_command(CLI::App& app) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* cmd = app.add_subcommand("status", "Agents, pipelines and jobs, as an agent sees them");
  add_agent_options(cmd, &o->address);
  cmd->add_flag("--json", o->json, "Print JSON (docs/cli.md)");
  cmd->callback([o] {
    auto s = control_call(o->address, "status");
    if (!s.is_ok()) die("status", s.status());
    if (o->json) {
      std::cout << s->dump(2) << "\n";
    } else {
      print_status(*s);
    }
  });
}

void add_wait_command(CLI::App& app) {
  struct WaitOptions {
    AgentAddress address;
    std::string target;
    std::string timeout = "10m";
  };
  auto o = std::make_shared<WaitOptions>();
  CLI::App* cmd = app.add_subcommand(
      "wait",
      "Wait for a pipeline (or one stage) as of its sources now: exit 0 done, 1 a job failed, "
      "3 unknown pipeline or stage, 4 timed out");
  cmd->add_option("pipeline", o->target, "PIPELINE or PIPELINE/STAGE")->required();
  cmd->add_option("--timeout", o->timeout, "How long to wait (e.g. 90s, 5m)")
      ->check(duration_arg());
  add_agent_options(cmd, &o->address);
  cmd->callback([o] {
    auto timeout = promises::parse_duration_ms(o->timeout);

    nlohmann::json args = nlohmann::json::object();
    auto slash = o->target.find('/');
    args["pipeline"] = o->target.substr(0, slash);
    if (slash != std::string::npos) args["stage"] = o->target.substr(slash + 1);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*timeout);
    std::string why = "no answer from the agent";
    while (std::chrono::steady_clock::now() < deadline) {
      auto s = control_call(o->address, "wait", args, 2000);
      if (s.is_ok()) {
        std::string state = s->value("state", "");
        why = s->value("why", "not finished");
        if (s->contains("ticket")) args["ticket"] = (*s)["ticket"];
        if (state == "done") {
          std::cout << "pipeline " << o->target << ": done\n";
          return;
        }
        if (state == "failed") {
          std::cerr << "vow wait: pipeline " << o->target << ": " << why << "\n";
          throw CLI::RuntimeError(kExitFailed);
        }
        if (state == "unknown") {
          std::cerr << "vow wait: " << why << "\n";
          throw CLI::RuntimeError(kExitNotFound);
        }
      } else {
        why = s.status().message();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kWaitPollMs));
    }
    std::cerr << "vow wait: pipeline " << o->target << ": timed out after " << o->timeout << " ("
              << why << ")\n";
    throw CLI::RuntimeError(kExitTimeout);
  });
}

void add_retry_command(CLI::App& app) {
  struct RetryOptions {
    AgentAddress address;
    std::string target;
    bool json = false;
  };
  auto o = std::make_shared<RetryOptions>();
  CLI::App* cmd = app.add_subcommand(
      "retry", "Run again a job failed past its retries, or every such job of a stage");
  cmd->add_option("target", o->target, "JOB (id or a prefix of 6+ hex digits) or PIPELINE/STAGE")
      ->required()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            if (text.find('/') != std::string::npos) return "";
            return job_id_arg()(text).empty()
                       ? ""
                       : "'" + text + "' is neither a job id (6+ hex digits) nor PIPELINE/STAGE";
          },
          "TARGET"));
  cmd->add_flag("--json", o->json, "Print JSON (docs/cli.md)");
  add_agent_options(cmd, &o->address);
  cmd->callback([o] {
    auto s = control_call(o->address, "retry", {{"target", o->target}});
    if (!s.is_ok()) die("retry", s.status());
    if (o->json) {
      std::cout << s->dump(2) << "\n";
      return;
    }
    const auto& ids = (*s)["retried"];
    std::cout << "retrying " << ids.size() << (ids.size() == 1 ? " job:" : " jobs:");
    for (const auto& id : ids) std::cout << " " << short_id(id.get<std::string>());
    std::cout << "\n";
  });
}

void add_gc_command(CLI::App& app) {
  struct GcOptions {
    AgentAddress address;
    bool dry_run = false;
    bool json = false;
  };
  auto o = std::make_shared<GcOptions>();
  CLI::App* cmd = app.add_subcommand(
      "gc", "Remove from the agent's store the artifacts its retention policy does not keep");
  cmd->add_flag("--dry-run", o->dry_run, "Only say what would be removed");
  cmd->add_flag("--json", o->json, "Print JSON (docs/cli.md)");
  add_agent_options(cmd, &o->address);
  cmd->callback([o] {
    auto s = control_call(o->address, "gc", {{"dry_run", o->dry_run}});
    if (!s.is_ok()) die("gc", s.status());
    std::uint64_t ticket = (*s).value("ticket", std::uint64_t{0});
    // The pass runs on the agent's worker: ask until it is done.
    for (;;) {
      auto a = control_call(o->address, "gc", {{"ticket", ticket}});
      if (!a.is_ok()) die("gc", a.status());
      if ((*a).value("state", "") != "done") {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      if (o->json) {
        std::cout << a->dump(2) << "\n";
      } else {
        const nlohmann::json& r = *a;
        std::cout << (o->dry_run ? "would remove " : "removed ")
                  << r.value("removed_objects", std::uint64_t{0}) << " objects ("
                  << r.value("removed_bytes", std::uint64_t{0}) << " bytes); "
                  << r.value("kept_bytes", std::uint64_t{0}) << " bytes kept\n";
        if (r.contains("skipped")) std::cout << r["skipped"].get<std::string>() << "\n";
        if (o->dry_run) {
          for (const auto& d : r["removed"]) std::cout << "  " << d.get<std::string>() << "\n";
        }
      }
      if ((*a).contains("error")) throw CLI::RuntimeError(kExitFailed);
      return;
    }
  });
}

}  // namespace vow::agent::cli
