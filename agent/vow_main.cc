// vow: the command-line tool. Each subcommand lives in agent/cli/<name>.cc.
//
// Exit status (docs/cli.md, agent/cli/commands.h): 0 success, 1 the command found a
// problem, 2 bad arguments, 3 not found, 4 timed out.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "agent/cli/commands.h"
#include "agent/version.h"
#include "promises/config.h"

namespace {

using vow::agent::cli::kExitUsage;

std::string path_of(const CLI::App* app) {
  std::string path;
  for (const CLI::App* a = app; a != nullptr; a = a->get_parent()) {
    path = a->get_name() + (path.empty() ? "" : " " + path);
  }
  return path;
}

std::vector<std::string> command_names(const CLI::App* app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app->get_subcommands([](const CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }
  return names;
}

// A short usage on stderr: the command's usage line, its subcommands if it has some,
// and where the full help is.
void print_short_usage(const CLI::App* app) {
  std::string path = path_of(app);
  std::vector<std::string> names = command_names(app);
  if (!names.empty()) {
    std::cerr << "usage: " << path << " COMMAND [OPTIONS] [ARGS...]\ncommands:";
    for (const auto& n : names) std::cerr << " " << n;
    std::cerr << "\n";
  } else {
    std::string usage = CLI::Formatter().make_usage(app, path);
    // CLI11 writes "Usage: ..." followed by a newline.
    if (usage.rfind("Usage: ", 0) == 0) usage = "usage: " + usage.substr(7);
    while (!usage.empty() && usage.back() == '\n') usage.pop_back();
    std::cerr << usage << "\n";
  }
  std::cerr << "'" << path << " --help' for more\n";
}

// CLI11 says "A subcommand is required" for `vow stauts` and `vow --bogus`; say what is
// wrong instead. Walks the leading words through commands that have subcommands, and
// stops at the first one it cannot place. 0 when CLI11 should parse as usual.
int check_command_words(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  for (int i = 1; i < argc; ++i) {
    std::string word = argv[i];
    std::vector<std::string> names = command_names(at);
    if (names.empty()) return 0;
    if (word.rfind("-", 0) == 0) {
      std::string name = word.substr(0, word.find('='));
      if (at->get_option_no_throw(name) != nullptr) return 0;  // --help, --version
      std::cerr << path_of(at) << ": unknown option '" << name << "'\n";
      print_short_usage(at);
      return kExitUsage;
    }
    CLI::App* next = nullptr;
    for (CLI::App* sub : at->get_subcommands([](CLI::App*) { return true; })) {
      if (sub->check_name(word)) next = sub;
    }
    if (next == nullptr) {
      std::cerr << path_of(at) << ": unknown command '" << word << "'";
      if (auto close = vow::promises::closest_name(word, names)) {
        std::cerr << " (did you mean '" << *close << "'?)";
      }
      std::cerr << "\n";
      print_short_usage(at);
      return kExitUsage;
    }
    at = next;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vow: run data pipelines on a mesh of agents that keep their promises", "vow"};
  app.require_subcommand(1);
  app.set_version_flag("--version", vow::agent::version_text("vow"),
                       "Print the version, protocol and ledger schema, and exit");
  vow::agent::cli::add_check_command(app);
  vow::agent::cli::add_graph_command(app);
  vow::agent::cli::add_fsck_command(app);
  vow::agent::cli::add_keys_command(app);
  vow::agent::cli::add_status_command(app);
  vow::agent::cli::add_wait_command(app);
  vow::agent::cli::add_retry_command(app);
  vow::agent::cli::add_gc_command(app);
  vow::agent::cli::add_verify_command(app);
  vow::agent::cli::add_query_commands(app);
  vow::agent::cli::add_get_command(app);
  vow::agent::cli::add_attest_command(app);
  vow::agent::cli::add_diff_command(app);
  if (int rc = check_command_words(app, argc, argv); rc != 0) return rc;
  // CLI11 reports through exceptions; they stop here.
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The subcommand that was being parsed, else vow itself.
    const CLI::App* sub = &app;
    while (!sub->get_subcommands().empty()) sub = sub->get_subcommands().front();
    std::cerr << path_of(sub) << ": " << e.what() << "\n";
    print_short_usage(sub);
    return kExitUsage;
  }
  return 0;
}
