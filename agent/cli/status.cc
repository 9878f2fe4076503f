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
  std::cout << std::left << std::setw(14) << "AGENT" << std::setw(8) << "ALIVE" << std::setw(9)
            << "RUNNING"
            << "ID\n";
  for (const auto& a : s["agents"]) {
    std::cout << std::setw(14) << a.value("name", "?") << std::setw(8)
              << (a.value("alive", false) ? "yes" : "no") << std::setw(9) << a.value("running", 0)
              << a.value("id", "") << "\n";
  }
  for (const auto& p : s["pipelines"]) {
    std::cout << "\npipeline " << p.value("name", "?") << "\n";
    std::cout << "  " << std::setw(14) << "STAGE";
    for (const char* k : {"pending", "ready", "running", "done", "failed", "superseded"}) {
      std::cout << std::setw(11) << k;
    }
    std::cout << "\n";
    for (const auto& st : p["stages"]) {
      std::cout << "  " << std::setw(14) << st.value("name", "?");
      for (const char* k : {"pending", "ready", "running", "done", "failed", "superseded"}) {
        std::cout << std::setw(11) << st["jobs"].value(k, 0);
      }
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
