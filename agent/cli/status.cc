// vow status: the mesh as one agent sees it (agents, pipelines, jobs by state, rejected
// messages); vow wait: block until a pipeline is done. JSON schemas: docs/cli.md.
#include <unistd.h>

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

struct StatusOptions {
  AgentAddress address;
  bool json = false;
};

[[noreturn]] void fail(const char* cmd, const Status& s, int code = 1) {
  std::cerr << "vow " << cmd << ": " << s.message() << "\n";
  throw CLI::RuntimeError(code);
}

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
                      a.value("self", false) ? "-" : seen < 0 ? "never" : human_ms(seen) + " ago"});
  }
  print_table({"AGENT", "ID", "ALIVE", "LOAD", "LAST SEEN"}, agents);
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
  }
  std::uint64_t rejected = 0;
  for (const auto& [k, v] : s["rejected"].items()) rejected += v.get<std::uint64_t>();
  std::cout << "\nrejected messages: " << rejected;
  for (const auto& [k, v] : s["rejected"].items()) {
    if (v.get<std::uint64_t>() > 0) std::cout << "  " << k << "=" << v.get<std::uint64_t>();
  }
  std::cout << "\n";
}

// 0 done, 1 failed (names the stage), -1 not yet.
int pipeline_state(const nlohmann::json& s, const std::string& name, std::string* why) {
  for (const auto& p : s["pipelines"]) {
    if (p.value("name", "") != name) continue;
    bool all_done = true;
    for (const auto& st : p["stages"]) {
      const auto& j = st["jobs"];
      if (j.value("failed", 0) > 0) {
        *why = "stage " + st.value("name", "?") + ": " + std::to_string(j.value("failed", 0)) +
               " job(s) failed past their retries";
        return 1;
      }
      if (j.value("done", 0) == 0 ||
          j.value("pending", 0) + j.value("ready", 0) + j.value("running", 0) > 0) {
        all_done = false;
      }
    }
    return all_done ? 0 : -1;
  }
  return -1;
}

}  // namespace

void add_status_command(CLI::App& app) {
  auto o = std::make_shared<StatusOptions>();
  CLI::App* cmd = app.add_subcommand("status", "Agents, pipelines and jobs, as an agent sees them");
  add_agent_options(cmd, &o->address);
  cmd->add_flag("--json", o->json, "Print JSON (docs/cli.md)");
  cmd->callback([o] {
    auto s = control_call(o->address, "status");
    if (!s.is_ok()) fail("status", s.status());
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
    std::string pipeline;
    std::string timeout = "10m";
  };
  auto o = std::make_shared<WaitOptions>();
  CLI::App* cmd = app.add_subcommand(
      "wait", "Wait for a pipeline: exit 0 when done, 1 if a job failed, 2 on timeout");
  cmd->add_option("pipeline", o->pipeline, "Pipeline name")->required();
  cmd->add_option("--timeout", o->timeout, "How long to wait (e.g. 90s, 5m)");
  add_agent_options(cmd, &o->address);
  cmd->callback([o] {
    auto timeout = promises::parse_duration_ms(o->timeout);
    if (!timeout.is_ok()) {
      std::cerr << "vow wait: --timeout: " << timeout.status().message() << "\n";
      throw CLI::RuntimeError(2);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*timeout);
    std::string why = "no answer from the agent";
    while (std::chrono::steady_clock::now() < deadline) {
      auto s = control_call(o->address, "status", nlohmann::json::object(), 2000);
      if (s.is_ok()) {
        int state = pipeline_state(*s, o->pipeline, &why);
        if (state == 0) {
          std::cout << "pipeline " << o->pipeline << ": done\n";
          return;
        }
        if (state == 1) {
          std::cerr << "vow wait: pipeline " << o->pipeline << ": " << why << "\n";
          throw CLI::RuntimeError(1);
        }
        why = "not finished";
      } else {
        why = s.status().message();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::cerr << "vow wait: pipeline " << o->pipeline << ": timed out after " << o->timeout << " ("
              << why << ")\n";
    throw CLI::RuntimeError(2);
  });
}

}  // namespace vow::agent::cli
