#include "agent/config_files.h"

#include <glob.h>
#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "transport/identity.h"

namespace vow::agent {
namespace {

namespace fs = std::filesystem;
using promises::Diagnostic;
using promises::Location;

class Loader {
 public:
  LoadedConfigs run(const std::vector<std::string>& paths) {
    for (const auto& path : paths) {
      std::string text;
      if (!read(path, text)) continue;
      auto kind = promises::detect_config_kind(text);
      if (kind == promises::ConfigKind::kAgent) {
        load_agent(path, text);
      } else if (kind == promises::ConfigKind::kPipeline) {
        if (auto i = load_pipeline(path, text)) {
          direct_.push_back(*i);
        } else {
          direct_failed_ = true;
        }
      } else {
        unknown_kind(path, text);
      }
    }
    // Each agent against the pipelines it names plus those given directly.
    for (std::size_t a = 0; a < out_.agents.size(); ++a) {
      std::vector<promises::Pipeline> visible;
      std::vector<std::size_t> indices = direct_;
      indices.insert(indices.end(), agent_named_[a].begin(), agent_named_[a].end());
      std::sort(indices.begin(), indices.end());
      indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
      for (std::size_t i : indices) {
        // One definition of a pipeline per agent (copies that agree on every shared stage
        // but differ otherwise cannot both be loaded).
        const promises::Pipeline& p = out_.pipelines[i];
        auto same = std::find_if(visible.begin(), visible.end(),
                                 [&](const promises::Pipeline& v) { return v.name == p.name; });
        if (same != visible.end()) {
          out_.errors.push_back({out_.agents[a].where, "pipeline '" + p.name + "' is defined in " +
                                                           same->file + " and differently in " +
                                                           p.file + ": load one of them"});
          continue;
        }
        visible.push_back(p);
      }
      promises::AgentConfig agent = out_.agents[a];
      if (direct_failed_ || agent_incomplete_[a]) {
        // A pipeline file failed to load and its errors are reported already: promises
        // for pipelines not loaded may be for that one, and would only repeat them.
        auto loaded = [&](const std::string& name) {
          return std::any_of(visible.begin(), visible.end(),
                             [&](const promises::Pipeline& p) { return p.name == name; });
        };
        std::erase_if(agent.promises, [&](const auto& x) { return !loaded(x.pipeline); });
        std::erase_if(agent.sources, [&](const auto& x) { return !loaded(x.pipeline); });
      }
      for (auto& d : promises::validate_agent_against(agent, visible)) {
        out_.errors.push_back(std::move(d));
      }
    }
    return std::move(out_);
  }

 private:
  void whole_file_error(const std::string& path, std::string message) {
    out_.errors.push_back({Location{path, 0, 0}, std::move(message)});
  }

  bool read(const std::string& path, std::string& text) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      whole_file_error(path, "is a directory, not a config file");
      return false;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      whole_file_error(path, std::string("cannot read: ") + std::strerror(errno));
      return false;
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    text = buf.str();
    return true;
  }

  void unknown_kind(const std::string& path, std::string_view text) {
    auto parsed = promises::parse_pipeline(text, path);
    bool syntax = false;
    for (auto& d : parsed.errors) {
      if (d.message.rfind("TOML syntax error", 0) == 0 ||
          d.message.rfind("file is larger", 0) == 0) {
        out_.errors.push_back(std::move(d));
        syntax = true;
      }
    }
    if (!syntax) {
      out_.errors.push_back({Location{path, 1, 1},
                             "neither a pipeline file (no [pipeline] table) nor an agent file "
                             "(no [agent] table)"});
    }
  }

  // Loads a pipeline file once (by canonical path); its index in out_.pipelines.
  std::optional<std::size_t> load_pipeline(const std::string& path, std::string_view text) {
    std::error_code ec;
    std::string key = fs::weakly_canonical(path, ec).string();
    if (ec) key = path;
    if (auto it = by_path_.find(key); it != by_path_.end()) return it->second;
    auto parsed = promises::parse_pipeline(text, path);
    for (auto& d : parsed.errors) out_.errors.push_back(std::move(d));
    if (!parsed.value) {
      by_path_[key] = std::nullopt;
      return std::nullopt;
    }
    // The same pipeline in several files (each agent's copy): an identical copy is loaded
    // once; a stage defined differently is an error at both definitions, because agents
    // loading them would promise two current definitions of one stage (a conflict).
    bool conflict = false;
    for (std::size_t i = 0; i < out_.pipelines.size(); ++i) {
      const promises::Pipeline& p = out_.pipelines[i];
      if (p.name != parsed.value->name) continue;
      if (p.digest == parsed.value->digest) {
        by_path_[key] = i;
        return i;
      }
      for (const auto& s : parsed.value->stages) {
        const promises::Stage* other = p.find_stage(s.name);
        if (other == nullptr || other->digest == s.digest) continue;
        out_.errors.push_back({s.where, "stage '" + p.name + "/" + s.name +
                                            "' differs from its definition at " +
                                            other->where.to_string() +
                                            ": agents loading both would promise conflicting "
                                            "definitions of one stage"});
        conflict = true;
      }
    }
    if (conflict) {
      by_path_[key] = std::nullopt;
      return std::nullopt;
    }
    out_.pipelines.push_back(std::move(*parsed.value));
    by_path_[key] = out_.pipelines.size() - 1;
    return out_.pipelines.size() - 1;
  }

  std::optional<std::size_t> load_pipeline_file(const std::string& path, const Location& from) {
    std::error_code ec;
    std::string key = fs::weakly_canonical(path, ec).string();
    if (!ec) {
      if (auto it = by_path_.find(key); it != by_path_.end()) return it->second;
    }
    std::string text;
    if (!read(path, text)) return std::nullopt;
    if (promises::detect_config_kind(text) == promises::ConfigKind::kAgent) {
      out_.errors.push_back({from, "'" + path + "' is an agent file, not a pipeline file"});
      return std::nullopt;
    }
    return load_pipeline(path, text);
  }

  void load_agent(const std::string& path, std::string_view text) {
    auto parsed = promises::parse_agent(text, path);
    for (auto& d : parsed.errors) out_.errors.push_back(std::move(d));
    if (!parsed.value) return;
    const promises::AgentConfig& agent = *parsed.value;
    fs::path dir = fs::path(path).parent_path();
    std::vector<std::size_t> named;
    bool incomplete = false;
    for (std::size_t i = 0; i < agent.pipelines.size(); ++i) {
      const Location& at =
          i < agent.pipelines_where.size() ? agent.pipelines_where[i] : agent.where;
      auto files = expand(dir, agent.pipelines[i], at);
      incomplete |= files.empty();
      for (const auto& file : files) {
        if (auto index = load_pipeline_file(file, at)) {
          named.push_back(*index);
        } else {
          incomplete = true;
        }
      }
    }
    check_trust(agent, dir);
    // A source that cannot be read here is no error in the file (it may appear later),
    // but the agent publishes no version of it until it can: say so.
    for (const auto& src : agent.sources) {
      fs::path p = fs::path(src.path).is_absolute() ? fs::path(src.path) : dir / src.path;
      p = p.lexically_normal();
      std::error_code ec;
      auto st = fs::symlink_status(p, ec);
      std::string what;
      if (ec || !fs::exists(st)) {
        what = "does not exist here";
      } else if (fs::is_symlink(st)) {
        what = "is a symbolic link, which sources refuse";
      } else if (::access(p.c_str(), R_OK) != 0) {
        what = std::string("cannot be read here (") + std::strerror(errno) + ")";
      }
      if (!what.empty()) {
        out_.warnings.push_back({src.where, "source '" + src.pipeline + "/" + src.source +
                                                "' path " + p.string() + " " + what +
                                                ": the agent publishes no version of it until "
                                                "it can read it"});
      }
    }
    if (!agent.control_group.empty() && ::getgrnam(agent.control_group.c_str()) == nullptr) {
      out_.warnings.push_back({agent.where, "control_group '" + agent.control_group +
                                                "' is no group on this host: vowd refuses to "
                                                "start here"});
    }
    out_.agents.push_back(std::move(*parsed.value));
    agent_named_.push_back(std::move(named));
    agent_incomplete_.push_back(incomplete);
  }

  // The trust lists as vowd reads them (agent/daemon.cc): each id in `keys` and
  // `clients` where it is written, each line of each file `key_files` matches where it
  // is in that file; a pattern matching no file is a warning.
  void check_trust(const promises::AgentConfig& agent, const fs::path& dir) {
    transport::TrustSet trust;
    auto why = [](const Status& s) {
      std::string m = s.message();
      constexpr std::string_view kPrefix = "trusted key: ";
      return m.rfind(kPrefix, 0) == 0 ? m.substr(kPrefix.size()) : m;
    };
    auto ids = [&](const std::vector<std::string>& list, const std::vector<Location>& where,
                   const char* key) {
      for (std::size_t i = 0; i < list.size(); ++i) {
        Status s = trust.add(list[i]);
        if (s.is_ok()) continue;
        const Location& at = i < where.size() ? where[i] : agent.where;
        out_.errors.push_back({at, "'" + list[i] + "' in [trust] " + key +
                                       " is not an agent id (vow...): " + why(s)});
      }
    };
    ids(agent.trust_keys, agent.trust_keys_where, "keys");
    ids(agent.trust_clients, agent.trust_clients_where, "clients");
    for (std::size_t i = 0; i < agent.trust_key_files.size(); ++i) {
      const std::string& pattern = agent.trust_key_files[i];
      const Location& at =
          i < agent.trust_key_files_where.size() ? agent.trust_key_files_where[i] : agent.where;
      fs::path full = fs::path(pattern).is_absolute() ? fs::path(pattern) : dir / pattern;
      full = full.lexically_normal();
      glob_t g{};
      int rc = ::glob(full.c_str(), 0, nullptr, &g);
      std::vector<std::string> files;
      for (std::size_t k = 0; rc == 0 && k < g.gl_pathc && k < kMaxConfigFiles; ++k) {
        files.emplace_back(g.gl_pathv[k]);
      }
      ::globfree(&g);
      if (files.empty()) {
        out_.warnings.push_back(
            {at, "key_files pattern '" + pattern + "' matches no file (looked for " +
                     full.string() + "): the agent trusts no key from it until it does"});
        continue;
      }
      for (const auto& file : files) {
        std::ifstream in(file);
        if (!in) {
          out_.errors.push_back({Location{file, 0, 0},
                                 std::string("cannot read trusted keys: ") + std::strerror(errno)});
          continue;
        }
        for (const auto& k : read_key_file(in)) {
          Status s = trust.add(k.id);
          if (!s.is_ok()) {
            out_.errors.push_back({Location{file, k.line, k.column},
                                   "'" + k.id + "' (matched by key_files '" + pattern +
                                       "') is not an agent id (vow...): " + why(s)});
          }
        }
      }
    }
  }

  // The files a `pipelines` pattern matches, relative to the agent file's directory.
  std::vector<std::string> expand(const fs::path& dir, const std::string& pattern,
                                  const Location& at) {
    fs::path full = fs::path(pattern).is_absolute() ? fs::path(pattern) : dir / pattern;
    glob_t g{};
    int rc = ::glob(full.c_str(), 0, nullptr, &g);
    std::vector<std::string> files;
    if (rc == 0) {
      for (std::size_t i = 0; i < g.gl_pathc && files.size() < kMaxConfigFiles; ++i) {
        files.emplace_back(g.gl_pathv[i]);
      }
    }
    ::globfree(&g);
    if (files.empty()) {
      out_.errors.push_back({at, "pipelines pattern '" + pattern +
                                     "' matches no file (looked for " + full.string() + ")"});
    }
    return files;
  }

  LoadedConfigs out_;
  std::map<std::string, std::optional<std::size_t>> by_path_;
  std::vector<std::size_t> direct_;
  bool direct_failed_ = false;  // a pipeline file given directly did not load
  std::vector<std::vector<std::size_t>> agent_named_;  // parallel to out_.agents
  std::vector<bool> agent_incomplete_;                 // a pipeline it names did not load
};

}  // namespace

LoadedConfigs load_config_files(const std::vector<std::string>& paths) {
  return Loader().run(paths);
}

std::vector<KeyFileLine> read_key_file(std::istream& in) {
  std::vector<KeyFileLine> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    auto e = line.find_last_not_of(" \t\r");
    out.push_back({n, static_cast<int>(b) + 1, line.substr(b, e - b + 1)});
  }
  return out;
}

std::string format_diagnostic(const promises::Diagnostic& d) {
  if (d.where.line == 0) return d.where.file + ": " + d.message;
  return d.to_string();
}

}  // namespace vow::agent
