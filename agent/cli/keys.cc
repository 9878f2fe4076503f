// vow keys gen|show: the agent identity and client key files (docs/protocol.md).
//
//   vow keys gen --state-dir DIR   create DIR/identity if absent; print the agent id
//   vow keys gen --out FILE        write a new client key file (mode 0600); print its id
//   vow keys show --state-dir DIR  print the agent id (--json: {"id", "public_key_hex"})
//   vow keys show --key FILE       the same for a client key file
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/cli/commands.h"
#include "transport/identity.h"

namespace vow::agent::cli {
namespace {

struct KeysOptions {
  std::string state_dir;
  std::string out;
  std::string key_file;
  bool json = false;
};

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "vow keys: " << message << "\n";
  throw CLI::RuntimeError(1);
}

void print_identity(const transport::Identity& id, bool json) {
  if (json) {
    nlohmann::json j{{"id", id.id()}, {"public_key_hex", id.key().hex()}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << id.id() << "\n";
  }
}

void run_gen(const KeysOptions& o) {
  if (!o.out.empty()) {
    std::error_code ec;
    if (std::filesystem::exists(o.out, ec)) {
      fail(o.out + " already exists; not overwriting a key file");
    }
    auto id = transport::Identity::generate();
    Status st = transport::save_key_file(id, o.out);
    if (!st) fail(st.to_string());
    print_identity(id, o.json);
    return;
  }
  bool created = false;
  auto id = transport::load_or_create_identity(o.state_dir, &created);
  if (!id) fail(id.status().to_string());
  if (!created) {
    std::cerr << "vow keys: identity already exists in " << o.state_dir << ", kept\n";
  }
  print_identity(*id, o.json);
}

void run_show(const KeysOptions& o) {
  std::filesystem::path file =
      !o.key_file.empty() ? std::filesystem::path(o.key_file)
                          : std::filesystem::path(o.state_dir) / transport::kIdentityFileName;
  auto id = transport::load_key_file(file);
  if (!id) fail(id.status().to_string());
  print_identity(*id, o.json);
}

}  // namespace

void add_keys_command(CLI::App& app) {
  auto opts = std::make_shared<KeysOptions>();
  CLI::App* keys = app.add_subcommand("keys", "Create or show identity keys");
  keys->require_subcommand(1);

  CLI::App* gen = keys->add_subcommand(
      "gen", "Create the agent identity in --state-dir (if absent) or a client key --out FILE");
  auto* gs = gen->add_option("--state-dir", opts->state_dir, "Agent state directory");
  auto* go = gen->add_option("--out", opts->out, "Write a new client key file here");
  gs->excludes(go);
  gen->add_flag("--json", opts->json, "Print {\"id\", \"public_key_hex\"}");
  gen->callback([opts, gen] {
    if (opts->state_dir.empty() && opts->out.empty()) {
      throw CLI::RequiredError("--state-dir or --out");
    }
    (void)gen;
    run_gen(*opts);
  });

  CLI::App* show = keys->add_subcommand("show", "Print the id of an agent or client key");
  auto* ss = show->add_option("--state-dir", opts->state_dir, "Agent state directory");
  auto* sk = show->add_option("--key", opts->key_file, "A client key file");
  ss->excludes(sk);
  show->add_flag("--json", opts->json, "Print {\"id\", \"public_key_hex\"}");
  show->callback([opts] {
    if (opts->state_dir.empty() && opts->key_file.empty()) {
      throw CLI::RequiredError("--state-dir or --key");
    }
    run_show(*opts);
  });
}

}  // namespace vow::agent::cli
