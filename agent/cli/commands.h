// The `vow` command line: one function per subcommand, each in agent/cli/<name>.cc,
// adding itself (options and callback) to the app. vow_main.cc calls them all.
// A callback reports failure by throwing CLI::RuntimeError(exit code) after printing
// what went wrong; bad arguments print usage and exit 2 (vow_main.cc).
#pragma once

#include <CLI/CLI.hpp>

namespace vow::agent {

void add_keys_command(CLI::App& app);

}  // namespace vow::agent
