// vow graph FILE... [--dot]
#include <iostream>
#include <memory>
#include <string>

#include "agent/cli/commands.h"
#include "agent/cli/table.h"
#include "agent/config_files.h"

namespace vow::agent::cli {
namespace {

struct GraphOptions {
  std::vector<std::string> files;
  bool dot = false;
};

void print_text(const promises::Pipeline& p) {
  std::cout << "pipeline " << p.name << " " << p.digest.short_hex() << " (" << p.file << ")\n";
  for (const auto& s : p.sources) std::cout << "  source " << s.name << "\n";
  for (const auto& s : p.stages) {
    std::cout << "  stage " << s.name << " " << s.digest.short_hex();
    if (s.foreach) std::cout << ", one job per entry of " << s.foreach->to_string();
    std::cout << "\n";
    for (const auto& in : s.inputs) std::cout << "    <- " << in.to_string() << "\n";
    for (const auto& out : s.outputs) std::cout << "    -> " << s.name << "." << out << "\n";
  }
}

void print_dot(const std::vector<promises::Pipeline>& pipelines) {
  std::cout << "digraph vow {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n"
               "  edge [fontname=\"sans-serif\", fontsize=10];\n";
  for (const auto& p : pipelines) {
    auto id = [&](std::string_view kind, std::string_view name) {
      return dot_quote(p.name + "/" + std::string(kind) + "/" + std::string(name));
    };
    std::cout << "  subgraph " << dot_quote("cluster_" + p.name)
              << " {\n    label=" << dot_quote(p.name + " " + p.digest.short_hex()) << ";\n";
    for (const auto& s : p.sources) {
      std::cout << "    " << id("source", s.name) << " [shape=ellipse, label=" << dot_quote(s.name)
                << "];\n";
    }
    for (const auto& s : p.stages) {
      std::string label = s.name + (s.foreach ? "\n(foreach)" : "");
      std::cout << "    " << id("stage", s.name) << " [shape=box, label=" << dot_quote(label)
                << "];\n";
    }
    for (const auto& s : p.stages) {
      for (const auto& in : s.inputs) {
        std::string from = in.is_source() ? id("source", in.name) : id("stage", in.stage);
        bool fan = s.foreach && *s.foreach == in;
        std::cout << "    " << from << " -> " << id("stage", s.name)
                  << " [label=" << dot_quote(in.name) << (fan ? ", style=bold" : "") << "];\n";
      }
    }
    std::cout << "  }\n";
  }
  std::cout << "}\n";
}

void run_graph(const GraphOptions& opts) {
  LoadedConfigs loaded = load_config_files(opts.files);
  if (!loaded.errors.empty()) {
    for (const auto& d : loaded.errors) std::cerr << format_diagnostic(d) << "\n";
    throw CLI::RuntimeError(1);
  }
  if (opts.dot) {
    print_dot(loaded.pipelines);
    return;
  }
  for (std::size_t i = 0; i < loaded.pipelines.size(); ++i) {
    if (i) std::cout << "\n";
    print_text(loaded.pipelines[i]);
  }
}

}  // namespace

void add_graph_command(CLI::App& app) {
  auto opts = std::make_shared<GraphOptions>();
  CLI::App* cmd = app.add_subcommand("graph", "Draw the pipelines in these files as a DAG");
  cmd->add_option("FILE", opts->files, "pipeline files, or agent files (their pipelines)")
      ->required();
  cmd->add_flag("--dot", opts->dot, "print Graphviz DOT instead of text");
  cmd->callback([opts] { run_graph(*opts); });
}

}  // namespace vow::agent::cli
