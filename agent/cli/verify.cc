// vow verify: checks everything a ledger claims, every statement's Ed25519 signature
// over its stored bytes and every lineage link (agent/verify_ledger.h). Offline with
// --state-dir DIR (reads the ledger directly; the agent may be running or stopped), or
// live against an agent (--agent, --config, or the default local socket), which checks
// its own ledger. Prints each problem on one line naming the statement; exit 0 clean,
// 1 otherwise.
#include <iostream>
#include <memory>
#include <string>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/verify_ledger.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"

namespace vow::agent::cli {
namespace {

int print_report(const VerifyReport& r, bool json) {
  if (json) {
    std::cout << nlohmann::json{{"statements", r.statements},
                                {"links", r.links},
                                {"attestations", r.attestations},
                                {"evidence", r.evidence},
                                {"equivocators", r.equivocators},
                                {"problems", r.problems},
                                {"ok", r.problems.empty()}}
                     .dump(2)
              << "\n";
  } else {
    for (const auto& p : r.problems) std::cout << p << "\n";
    for (const auto& e : r.equivocators) {
      std::cout << "author " << e
                << " is proven to equivocate (two statements with one sequence number): none "
                   "of its statements counts\n";
    }
    if (r.evidence != 0) {
      std::cout << r.evidence << " statements held as evidence only (they do not count)\n";
    }
    std::cout << r.statements << " statements verified, " << r.links
              << " lineage links and " << r.attestations << " attestations checked: "
              << (r.problems.empty() ? "ok" : std::to_string(r.problems.size()) + " problems")
              << "\n";
  }
  return r.problems.empty() ? 0 : 1;
}

int run_offline(const std::string& state_dir, bool json) {
  auto ledger = store::open_sqlite_ledger(store::ledger_path(state_dir));
  if (!ledger.is_ok()) {
    std::cerr << "vow verify: " << ledger.status().to_string() << "\n";
    return 1;
  }
  auto report = verify_ledger(**ledger);
  if (!report.is_ok()) {
    std::cerr << "vow verify: " << report.status().to_string() << "\n";
    return 1;
  }
  return print_report(*report, json);
}

int run_live(const AgentAddress& address, bool json) {
  auto answer = control_call(address, "verify", nlohmann::json::object(), 60'000);
  if (!answer.is_ok()) {
    std::cerr << "vow verify: " << answer.status().message() << "\n";
    return 1;
  }
  VerifyReport r;
  r.statements = answer->value("statements", 0u);
  r.links = answer->value("links", 0u);
  r.attestations = answer->value("attestations", 0u);
  r.evidence = answer->value("evidence", 0u);
  for (const auto& e : answer->value("equivocators", nlohmann::json::array())) {
    r.equivocators.push_back(e.get<std::string>());
  }
  for (const auto& p : answer->value("problems", nlohmann::json::array())) {
    r.problems.push_back(p.get<std::string>());
  }
  return print_report(r, json);
}

}  // namespace

void add_verify_command(CLI::App& app) {
  struct Options {
    AgentAddress address;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "verify",
      "Check every statement's signature and every lineage link: offline with --state-dir, "
      "else live against an agent");
  add_agent_options(cmd, &o->address);  // --state-dir here means: offline
  cmd->add_flag("--json", o->json, "Print {\"statements\", \"links\", \"attestations\", \"problems\", \"ok\"}");
  cmd->callback([o] {
    int rc = o->address.state_dir.empty() ? run_live(o->address, o->json)
                                          : run_offline(o->address.state_dir, o->json);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace vow::agent::cli
