// vow fsck --state-dir DIR [--json]: checks an agent's state directory offline
// (store/fsck.h): every statement's checksum and signature, every artifact against its
// digest, tree children, and files the index does not know. Prints each problem on one
// line, then a summary (or one JSON object with --json); exits 0 if clean, 1 if anything
// is wrong or the check could not run.
#include "store/fsck.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/cli/commands.h"

namespace vow::agent::cli {
namespace {

struct FsckArgs {
  std::string state_dir;
  bool json = false;
};

void print_json(const store::FsckReport& report) {
  nlohmann::json problems = nlohmann::json::array();
  for (const auto& p : report.problems) {
    problems.push_back(
        {{"kind", store::fsck_kind_name(p.kind)}, {"subject", p.subject}, {"detail", p.detail}});
  }
  nlohmann::json out = {{"clean", report.clean()},
                        {"statements_checked", report.statements_checked},
                        {"artifacts_checked", report.artifacts_checked},
                        {"problems", problems}};
  std::cout << out.dump(2) << "\n";
}

void print_text(const store::FsckReport& report) {
  for (const auto& p : report.problems) std::cout << p.to_string() << "\n";
  std::cout << report.statements_checked << " statements, " << report.artifacts_checked
            << " artifacts checked: ";
  if (report.clean()) {
    std::cout << "clean\n";
  } else {
    std::cout << report.problems.size()
              << (report.problems.size() == 1 ? " problem\n" : " problems\n");
  }
}

}  // namespace

void add_fsck_command(CLI::App& app) {
  auto args = std::make_shared<FsckArgs>();
  CLI::App* cmd = app.add_subcommand(
      "fsck", "Check a state directory: signatures, artifact digests, references");
  cmd->add_option("--state-dir", args->state_dir, "The agent's state directory")->required();
  cmd->add_flag("--json", args->json, "Print the report as JSON");
  cmd->callback([args] {
    auto report = store::fsck_state_dir(args->state_dir);
    if (!report.is_ok()) {
      std::cerr << "vow fsck: " << report.status().to_string() << "\n";
      throw CLI::RuntimeError(1);
    }
    if (args->json) {
      print_json(*report);
    } else {
      print_text(*report);
    }
    if (!report->clean()) throw CLI::RuntimeError(1);
  });
}

}  // namespace vow::agent::cli
