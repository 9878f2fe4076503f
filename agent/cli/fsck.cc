// vow fsck --state-dir DIR: checks an agent's state directory offline (store/fsck.h):
// every statement's checksum and signature, every artifact against its digest, tree
// children, and files the index does not know. Prints each problem on one line, then a
// summary; exits 0 if clean, 1 if anything is wrong or the check could not run.
#include "store/fsck.h"

#include <iostream>
#include <memory>
#include <string>

#include "agent/cli/commands.h"

namespace vow::agent::cli {

void add_fsck_command(CLI::App& app) {
  auto state_dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "fsck", "Check a state directory: signatures, artifact digests, references");
  cmd->add_option("--state-dir", *state_dir, "The agent's state directory")->required();
  cmd->callback([state_dir] {
    auto report = store::fsck_state_dir(*state_dir);
    if (!report.is_ok()) {
      std::cerr << "vow fsck: " << report.status().to_string() << "\n";
      throw CLI::RuntimeError(1);
    }
    for (const auto& p : report->problems) std::cout << p.to_string() << "\n";
    std::cout << report->statements_checked << " statements, " << report->artifacts_checked
              << " artifacts checked: "
              << (report->clean() ? "clean" : std::to_string(report->problems.size()) + " problems")
              << "\n";
    if (!report->clean()) throw CLI::RuntimeError(1);
  });
}

}  // namespace vow::agent::cli
