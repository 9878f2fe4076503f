// vow diff A B: why two results differ. Asks the agent for both lineages and compares
// them step by step (agent/diff.h): stage definitions with a diff of the command, input
// and source versions, executors, non-deterministic jobs. Text, --json or --dot.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/diff.h"

namespace vow::agent::cli {

void add_diff_command(CLI::App& app) {
  struct O {
    AgentAddress address;
    std::string a, b;
    bool json = false;
    bool dot = false;
  };
  auto o = std::make_shared<O>();
  CLI::App* cmd = app.add_subcommand(
      "diff", "What differs between two results: every step of their lineages compared");
  add_agent_options(cmd, &o->address);
  cmd->add_option("a", o->a, "An artifact digest, PIPELINE/STAGE.OUTPUT, or a job id")
      ->required();
  cmd->add_option("b", o->b, "The same, for the other result")->required();
  auto* json_flag = cmd->add_flag("--json", o->json, "Print JSON (docs/cli.md)");
  cmd->add_flag("--dot", o->dot, "Print Graphviz DOT, the differing steps coloured")
      ->excludes(json_flag);
  cmd->callback([o] {
    auto lineage = [&](const std::string& ref) {
      auto answer = control_call(o->address, "lineage", {{"ref", ref}}, 30000);
      if (!answer.is_ok()) die("diff", answer.status());
      return std::move(answer).value();
    };
    nlohmann::json a = lineage(o->a);
    nlohmann::json b = lineage(o->b);
    nlohmann::json d = diff_lineages(a, b);
    if (o->json) {
      std::cout << d.dump(2) << "\n";
    } else if (o->dot) {
      std::cout << diff_dot(d);
    } else {
      bool colour = ::isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
      std::cout << diff_text(d, colour);
    }
    // As diff(1): 0 the same, 1 they differ.
    if (!d.value("same", false)) throw CLI::RuntimeError(1);
  });
}

}  // namespace vow::agent::cli
