// vow: the command-line tool (DESIGN.md section 7).
#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"vow: a peer-to-peer mesh of agents running data pipelines"};
  app.require_subcommand(1);
  vow::agent::add_keys_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // the command printed its error
  } catch (const CLI::ParseError& e) {
    std::cerr << "vow: " << e.what() << "\n\n" << app.help();
    return 2;
  }
  return 0;
}
