// vow check FILE... [--json]
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "agent/cli/commands.h"
#include "agent/config_files.h"

namespace vow::agent::cli {
namespace {

struct CheckOptions {
  std::vector<std::string> files;
  bool json = false;
};

nlohmann::json to_json(const LoadedConfigs& loaded) {
  nlohmann::json pipelines = nlohmann::json::array();
  for (const auto& p : loaded.pipelines) {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& s : p.stages) {
      nlohmann::json inputs = nlohmann::json::array();
      for (const auto& in : s.inputs) inputs.push_back(in.to_string());
      stages.push_back({{"name", s.name},
                        {"digest", s.digest.hex()},
                        {"inputs", inputs},
                        {"outputs", s.outputs}});
    }
    pipelines.push_back(
        {{"name", p.name}, {"file", p.file}, {"digest", p.digest.hex()}, {"stages", stages}});
  }
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& d : loaded.errors) {
    errors.push_back({{"file", d.where.file},
                      {"line", d.where.line},
                      {"column", d.where.column},
                      {"message", d.message}});
  }
  nlohmann::json warnings = nlohmann::json::array();
  for (const auto& d : loaded.warnings) {
    warnings.push_back({{"file", d.where.file},
                        {"line", d.where.line},
                        {"column", d.where.column},
                        {"message", d.message}});
  }
  return {{"pipelines", pipelines}, {"errors", errors}, {"warnings", warnings}};
}

void print_summary(const LoadedConfigs& loaded) {
  for (const auto& p : loaded.pipelines) {
    std::cout << p.file << ": pipeline " << p.name << " " << p.digest.short_hex() << ", "
              << p.sources.size() << (p.sources.size() == 1 ? " source, " : " sources, ")
              << p.stages.size() << (p.stages.size() == 1 ? " stage: " : " stages: ");
    for (std::size_t i = 0; i < p.stages.size(); ++i) {
      std::cout << (i ? ", " : "") << p.stages[i].name;
    }
    std::cout << "\n";
  }
  for (const auto& a : loaded.agents) {
    std::cout << a.file << ": agent " << a.name << " at " << a.listen << ", promises ";
    for (std::size_t i = 0; i < a.promises.size(); ++i) {
      const auto& pr = a.promises[i];
      std::cout << (i ? ", " : "") << pr.pipeline << "/" << pr.stage << " x" << pr.capacity;
    }
    if (a.promises.empty()) std::cout << "nothing";
    for (std::size_t i = 0; i < a.sources.size(); ++i) {
      std::cout << (i ? ", " : "; provides ") << a.sources[i].pipeline << "/"
                << a.sources[i].source;
    }
    std::cout << "\n";
  }
  std::cout << "ok: " << loaded.pipelines.size()
            << (loaded.pipelines.size() == 1 ? " pipeline, " : " pipelines, ")
            << loaded.agents.size() << (loaded.agents.size() == 1 ? " agent" : " agents") << "\n";
}

void run_check(const CheckOptions& opts) {
  LoadedConfigs loaded = load_config_files(opts.files);
  if (opts.json) {
    std::cout << to_json(loaded).dump(2) << "\n";
  } else if (loaded.errors.empty()) {
    print_summary(loaded);
  }
  if (!opts.json) {
    for (const auto& d : loaded.warnings) {
      std::cerr << format_diagnostic({d.where, "warning: " + d.message}) << "\n";
    }
    for (const auto& d : loaded.errors) std::cerr << format_diagnostic(d) << "\n";
    if (!loaded.errors.empty()) {
      std::cerr << loaded.errors.size() << (loaded.errors.size() == 1 ? " error\n" : " errors\n");
    }
  }
  if (!loaded.errors.empty()) throw CLI::RuntimeError(1);
}

}  // namespace

void add_check_command(CLI::App& app) {
  auto opts = std::make_shared<CheckOptions>();
  CLI::App* cmd = app.add_subcommand(
      "check", "Validate pipeline and agent files (agent files with the pipelines they name)");
  cmd->add_option("FILE", opts->files, "pipeline or agent files")->required();
  cmd->add_flag("--json", opts->json, "print pipelines and errors as JSON on stdout");
  cmd->callback([opts] { run_check(*opts); });
}

}  // namespace vow::agent::cli
