// vow attest ARTIFACT | PIPELINE/STAGE.OUTPUT | JOB -o FILE: the attestations of every
// step behind a result, back to its source versions, as an in-toto bundle (JSON Lines
// of DSSE envelopes), and the public keys of the agents that signed them
// (docs/provenance.md). Anyone can check the bundle without vow.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "agent/cli/commands.h"
#include "agent/cli/control_client.h"
#include "agent/cli/table.h"

namespace vow::agent::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Writes `text` to `path` through a temporary file in the same directory, so that a
// reader never sees half a bundle.
void write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) die("attest", "cannot write " + tmp);
    out << text;
    out.flush();
    if (!out) die("attest", "cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    die("attest", "cannot write " + path + ": " + ec.message());
  }
}

}  // namespace

void add_attest_command(CLI::App& app) {
  struct O {
    AgentAddress address;
    std::string ref, out, keys;
    bool json = false;
  };
  auto o = std::make_shared<O>();
  CLI::App* cmd = app.add_subcommand(
      "attest", "Write the signed attestations behind a result, and the keys to check them");
  add_agent_options(cmd, &o->address);
  cmd->add_option("artifact", o->ref,
                  "An artifact digest, PIPELINE/STAGE.OUTPUT, or a job id (prefix of 6+)")
      ->required();
  cmd->add_option("-o,--output", o->out, "The bundle to write (JSON Lines of DSSE envelopes)")
      ->required();
  cmd->add_option("--keys", o->keys, "Where to write the public keys (default OUTPUT.keys.json)");
  cmd->add_flag("--json", o->json, "Print what was written as JSON (docs/cli.md)");
  cmd->callback([o] {
    auto answer = control_call(o->address, "attest", {{"ref", o->ref}}, 30000);
    if (!answer.is_ok()) die("attest", answer.status());
    const json& a = *answer;
    if (!a["problems"].empty()) {
      std::string all;
      for (const auto& p : a["problems"]) all += "\n  " + p.get<std::string>();
      die("attest", "cannot attest " + o->ref + ", nothing written:" + all);
    }
    std::string bundle;
    std::size_t jobs = 0, sources = 0;
    json written = json::array();
    for (const auto& x : a["attestations"]) {
      bundle += x.value("line", "") + "\n";
      (x.value("kind", "") == "source" ? sources : jobs) += 1;
      written.push_back({{"step", x["step"]}, {"kind", x["kind"]}, {"digest", x["digest"]}});
    }
    std::string keys_path = o->keys.empty() ? o->out + ".keys.json" : o->keys;
    write_file(o->out, bundle);
    write_file(keys_path, json{{"keys", a["keys"]}}.dump(2) + "\n");
    if (o->json) {
      std::cout << json{{"ref", a["ref"]},
                        {"artifacts", a["artifacts"]},
                        {"bundle", o->out},
                        {"keys_file", keys_path},
                        {"attestations", written},
                        {"keys", a["keys"]}}
                       .dump(2)
                << "\n";
      return;
    }
    std::cout << "wrote " << written.size() << " attestations behind " << o->ref << " ("
              << jobs << " results, " << sources << " source versions) to " << o->out << "\n"
              << "keys of the " << a["keys"].size() << " agents that signed them: " << keys_path
              << "\n";
  });
}

}  // namespace vow::agent::cli
