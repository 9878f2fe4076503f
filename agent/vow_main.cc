// vow: the command-line tool. Each subcommand lives in agent/cli/<name>.cc.
//
// Exit status: 0 success, 1 the command found a problem, 2 bad arguments.
#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/cli/commands.h"

namespace {

constexpr int kExitUsage = 2;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vow: run data pipelines on a mesh of agents that keep their promises", "vow"};
  app.require_subcommand(1);
  vow::agent::cli::add_check_command(app);
  vow::agent::cli::add_graph_command(app);
  vow::agent::cli::add_fsck_command(app);
  vow::agent::cli::add_keys_command(app);
  vow::agent::cli::add_status_command(app);
  vow::agent::cli::add_wait_command(app);
  vow::agent::cli::add_retry_command(app);
  vow::agent::cli::add_verify_command(app);
  vow::agent::cli::add_query_commands(app);
  vow::agent::cli::add_get_command(app);
  vow::agent::cli::add_attest_command(app);
  vow::agent::cli::add_diff_command(app);
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
    std::cerr << "vow: " << e.what() << "\n";
    // The usage of the subcommand that was being parsed, else of vow itself.
    const CLI::App* sub = &app;
    std::string path = "vow";
    while (!sub->get_subcommands().empty()) {
      sub = sub->get_subcommands().front();
      path += " " + sub->get_name();
    }
    std::cerr << "usage: " << path << (sub == &app ? " COMMAND" : "")
              << " [OPTIONS] ARGS... ('" << path << " --help' for more)\n\n"
              << sub->help("", CLI::AppFormatMode::Normal);
    return kExitUsage;
  }
  return 0;
}
