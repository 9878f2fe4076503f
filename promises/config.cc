#include "promises/config.h"

#include <algorithm>
#include <set>

#include "promises/pipeline_check.h"
#include "promises/toml_reader.h"

namespace vow::promises {
namespace {

void sort_by_position(std::vector<Diagnostic>& errors) {
  std::stable_sort(errors.begin(), errors.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
  });
}

// "corpus" is a source; "split.shards" is output `shards` of stage `split`.
InputRef parse_input_ref(const std::string& text) {
  auto dot = text.find('.');
  if (dot == std::string::npos || dot == 0) return InputRef{"", text};
  return InputRef{text.substr(0, dot), text.substr(dot + 1)};
}

bool is_env_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes || (name[0] >= '0' && name[0] <= '9')) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  });
}

// ---- pipeline files ----

constexpr std::string_view kStage = "[[stage]]";

void read_run(TomlReader& r, const toml::table& t, Stage& stage) {
  const toml::node* run = r.get(t, "run", kStage, true);
  if (!run) return;
  if (const auto* s = run->as_string()) {
    if (s->get().empty()) {
      r.error(r.at(*run), "'run' in [[stage]] is empty");
      return;
    }
    stage.argv = {"/bin/sh", "-c", s->get()};
    stage.run_is_shell = true;
    return;
  }
  const auto* arr = run->as_array();
  if (!arr) {
    r.error(r.at(*run),
            "'run' in [[stage]] must be a string (run by /bin/sh -c) or an array "
            "of strings (argv), not " +
                TomlReader::type_name(*run));
    return;
  }
  auto argv = r.string_array(t, "run", kStage, true);
  if (!argv) return;
  if (argv->empty() || argv->front().value.empty()) {
    r.error(r.at(*run), "'run' in [[stage]] needs a program: its first element is empty");
    return;
  }
  for (auto& a : *argv) stage.argv.push_back(std::move(a.value));
  stage.run_is_shell = false;
}

void read_env(TomlReader& r, const toml::table& t, Stage& stage) {
  const toml::node* env = r.get(t, "env", kStage, false);
  if (!env) return;
  const auto* table = env->as_table();
  if (!table) {
    r.error(r.at(*env),
            "'env' in [[stage]] must be a table of strings, not " + TomlReader::type_name(*env));
    return;
  }
  for (auto&& [key, value] : *table) {
    std::string name(key.str());
    Location at = key.source().begin.line ? r.at(key.source()) : r.at(value);
    if (!is_env_name(name)) {
      r.error(at, "env name '" + name + "' is not a variable name: use letters, digits and '_'");
    } else if (name.rfind("VOW_", 0) == 0) {
      r.error(at, "env name '" + name + "' is reserved: VOW_* variables are set by the agent");
    }
    if (!value.is_string()) {
      r.error(r.at(value), "env '" + name + "' in [[stage]] must be a string, not " +
                               TomlReader::type_name(value));
      continue;
    }
    stage.env[name] = value.as_string()->get();
  }
}

// `memory` in [[stage]]: a size string, "512M", "2G", "64MiB"... (binary units), at
// least 1M and at most 1T.
void read_memory(TomlReader& r, const toml::table& t, Stage& stage) {
  const toml::node* node = r.get(t, "memory", kStage, false);
  if (!node) return;
  auto bad = [&](const std::string& why) {
    r.error(r.at(*node), "'memory' in [[stage]] " + why);
  };
  if (!node->is_string()) {
    bad("must be a size string like \"512M\" or \"2G\", not " + TomlReader::type_name(*node));
    return;
  }
  const std::string& text = node->as_string()->get();
  std::size_t i = 0;
  std::int64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9' && n < (std::int64_t{1} << 40)) {
    n = n * 10 + (text[i] - '0');
    ++i;
  }
  std::string unit = text.substr(i);
  std::int64_t scale = 0;
  if (unit == "K" || unit == "KiB") scale = std::int64_t{1} << 10;
  if (unit == "M" || unit == "MiB") scale = std::int64_t{1} << 20;
  if (unit == "G" || unit == "GiB") scale = std::int64_t{1} << 30;
  if (i == 0 || scale == 0) {
    bad("'" + text + "' is not a size: write a number and K, M or G (\"512M\", \"2G\")");
    return;
  }
  std::int64_t bytes = n * scale;
  if (n >= (std::int64_t{1} << 40) || bytes > (std::int64_t{1} << 40)) {
    bad("'" + text + "' is over the largest limit, 1T");
    return;
  }
  if (bytes < (std::int64_t{1} << 20)) {
    bad("'" + text + "' is under the smallest limit, 1M");
    return;
  }
  stage.memory_bytes = bytes;
}

// Reads one [[stage]]; nullopt when it has no usable name (it is then left out, so
// later checks do not repeat the problem).
std::optional<Stage> read_stage(TomlReader& r, const toml::table& t, StageSpans& spans) {
  r.check_keys(t, kStage,
               {"name", "inputs", "outputs", "run", "foreach", "timeout", "retries", "env",
                "network", "memory", "image", "pids", "cpus", "root"});
  Stage stage;
  stage.where = r.at(t);
  auto name = r.string(t, "name", kStage, true);
  if (auto inputs = r.string_array(t, "inputs", kStage, false)) {
    for (auto& in : *inputs) {
      stage.inputs.push_back(parse_input_ref(in.value));
      spans.inputs.push_back(in.where);
    }
  }
  if (auto outputs = r.string_array(t, "outputs", kStage, true)) {
    for (auto& o : *outputs) {
      stage.outputs.push_back(std::move(o.value));
      spans.outputs.push_back(o.where);
    }
  }
  read_run(r, t, stage);
  if (auto fe = r.string(t, "foreach", kStage, false)) {
    stage.foreach = parse_input_ref(fe->value);
    spans.foreach = fe->where;
  }
  if (auto ms = r.duration(t, "timeout", kStage)) stage.timeout_ms = *ms;
  if (auto n = r.integer(t, "retries", kStage, 0, kMaxRetries)) stage.retries = int(*n);
  read_env(r, t, stage);
  if (auto network = r.boolean(t, "network", kStage)) stage.network = *network;
  read_memory(r, t, stage);
  if (auto n = r.integer(t, "pids", kStage, 1, kMaxStagePids)) stage.pids = int(*n);
  if (auto n = r.integer(t, "cpus", kStage, 1, kMaxStageCpus)) stage.cpus = int(*n);
  if (auto image = r.string(t, "image", kStage, false)) {
    std::string why = image_problem(image->value);
    if (why.empty()) {
      stage.image = std::move(image->value);
    } else {
      r.error(image->where, "'image' in [[stage]] '" + image->value + "' " + why);
    }
  }
  if (auto root = r.string(t, "root", kStage, false)) {
    stage.root = parse_input_ref(root->value);
    spans.root = root->where;
  }
  if (!name) return std::nullopt;
  stage.name = std::move(name->value);
  spans.name = name->where;
  return stage;
}

// ---- agent files ----

constexpr std::string_view kAgent = "[agent]";

// "pipeline/name" -> (pipeline, name); records a problem and returns nullopt otherwise.
std::optional<std::pair<std::string, std::string>> read_qualified(TomlReader& r, const Located& v,
                                                                  std::string_view key,
                                                                  std::string_view example) {
  auto slash = v.value.find('/');
  if (slash != std::string::npos) {
    std::string p = v.value.substr(0, slash), n = v.value.substr(slash + 1);
    if (is_identifier(p) && is_identifier(n)) return std::pair(p, n);
  }
  r.error(v.where, "'" + std::string(key) + "' must be PIPELINE/NAME (identifiers), like \"" +
                       std::string(example) + "\", not '" + v.value + "'");
  return std::nullopt;
}

void read_endpoint(TomlReader& r, const Located& v, std::string_view key, std::string& out) {
  Status s = validate_endpoint(v.value);
  if (!s) {
    r.error(v.where,
            "bad endpoint '" + v.value + "' for '" + std::string(key) + "': " + s.message());
    return;
  }
  out = v.value;
}

void read_agent_table(TomlReader& r, const toml::table& t, AgentConfig& a) {
  r.check_keys(t, kAgent,
               {"name", "listen", "advertise", "peers", "state_dir", "pipelines", "control",
                "control_group", "http", "http_token_file", "replicas", "sandbox", "job_limits",
                "horizon_every", "retire_superseded", "checkpoint_percent", "gc_interval",
                "bulk_transfer", "bulk_port"});
  a.where = r.at(t);
  if (auto name = r.string(t, "name", kAgent, true)) {
    if (!is_identifier(name->value)) {
      r.error(name->where, "agent name '" + name->value + "' is not an identifier: use 1-" +
                               std::to_string(kMaxNameBytes) + " letters, digits, '_' or '-'");
    }
    a.name = name->value;
  }
  if (auto listen = r.string(t, "listen", kAgent, true))
    read_endpoint(r, *listen, "listen", a.listen);
  if (auto advertise = r.string(t, "advertise", kAgent, false)) {
    read_endpoint(r, *advertise, "advertise", a.advertise);
    std::string_view v = advertise->value;
    bool wildcard = v.rfind("tcp://0.0.0.0:", 0) == 0 || v.rfind("tcp://*:", 0) == 0 ||
                    v.rfind("tcp://[::]:", 0) == 0;
    if (!a.advertise.empty() && (v.rfind("tcp://", 0) != 0 || wildcard)) {
      r.error(advertise->where, "bad endpoint '" + advertise->value +
                                    "' for 'advertise': peers dial it, so it must be "
                                    "tcp://HOST:PORT with a host they reach, not a wildcard");
      a.advertise.clear();
    }
  }
  if (auto peers = r.string_array(t, "peers", kAgent, false)) {
    for (const auto& p : *peers) {
      std::string ep;
      // A seed may name its key: "ID@tcp://host:port" (ID checked by the agent).
      auto at = p.value.find('@');
      auto scheme = p.value.find("://");
      if (at != std::string::npos && (scheme == std::string::npos || at < scheme)) {
        std::string id = p.value.substr(0, at);
        bool id_ok = !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
        });
        if (!id_ok) {
          r.error(p.where, "bad peer '" + p.value + "': the part before '@' must be an agent id");
          continue;
        }
        Located rest = p;
        rest.value = p.value.substr(at + 1);
        std::string tail;
        read_endpoint(r, rest, "peers", tail);
        if (!tail.empty()) a.peers.push_back(p.value);
        continue;
      }
      read_endpoint(r, p, "peers", ep);
      if (!ep.empty()) a.peers.push_back(ep);
    }
  }
  if (auto dir = r.string(t, "state_dir", kAgent, true)) {
    if (dir->value.empty()) r.error(dir->where, "'state_dir' in [agent] is empty");
    a.state_dir = dir->value;
  }
  if (auto globs = r.string_array(t, "pipelines", kAgent, false)) {
    for (const auto& g : *globs) {
      if (g.value.empty()) r.error(g.where, "'pipelines' in [agent] holds an empty pattern");
      a.pipelines.push_back(g.value);
      a.pipelines_where.push_back(g.where);
    }
  }
  if (auto control = r.string(t, "control", kAgent, false)) {
    read_endpoint(r, *control, "control", a.control);
  }
  if (auto group = r.string(t, "control_group", kAgent, false)) {
    if (!is_identifier(group->value)) {
      r.error(group->where, "'control_group' in [agent] must be a group name, not '" +
                                group->value + "'");
    }
    a.control_group = group->value;
  }
  if (auto http = r.string(t, "http", kAgent, false)) {
    Status s = validate_http_address(http->value);
    if (!s) {
      r.error(http->where, "bad address '" + http->value + "' for 'http': " + s.message());
    }
    a.http = http->value;
  }
  if (auto token = r.string(t, "http_token_file", kAgent, false)) {
    if (token->value.empty()) r.error(token->where, "'http_token_file' in [agent] is empty");
    a.http_token_file = token->value;
    a.http_token_file_where = token->where;
  }
  if (auto n = r.integer(t, "replicas", kAgent, 1, kMaxReplicas)) a.replicas = int(*n);
  if (auto n = r.integer(t, "horizon_every", kAgent, 0, kMaxHorizonEvery)) {
    a.horizon_every = static_cast<std::uint64_t>(*n);
  }
  if (auto b = r.boolean(t, "retire_superseded", kAgent)) a.retire_superseded = *b;
  if (auto n = r.integer(t, "checkpoint_percent", kAgent, 0, 1000)) {
    a.checkpoint_percent = static_cast<std::uint32_t>(*n);
  }
  if (auto ms = r.duration(t, "gc_interval", kAgent)) {
    constexpr std::int64_t kMinGcIntervalMs = 1'000;
    constexpr std::int64_t kMaxGcIntervalMs = 7LL * 24 * 3600 * 1000;
    if (*ms < kMinGcIntervalMs || *ms > kMaxGcIntervalMs) {
      r.error(r.at(*t.get("gc_interval")),
              "'gc_interval' in [agent] must be between 1s and 168h, not " +
                  format_duration_ms(*ms));
    } else {
      a.gc_interval_ms = *ms;
    }
  }
  if (auto sandbox = r.string(t, "sandbox", kAgent, false)) {
    if (sandbox->value != "auto" && sandbox->value != "bwrap" && sandbox->value != "none") {
      r.error(sandbox->where, "'sandbox' in [agent] must be \"auto\", \"bwrap\" or \"none\", not '" +
                                  sandbox->value + "'");
    } else {
      a.sandbox = sandbox->value;
    }
  }
  if (auto bulk = r.string(t, "bulk_transfer", kAgent, false)) {
    if (bulk->value != "encrypted" && bulk->value != "integrity") {
      r.error(bulk->where, "'bulk_transfer' in [agent] must be \"encrypted\" or "
                           "\"integrity\", not '" + bulk->value + "'");
    } else {
      a.bulk_transfer = bulk->value;
    }
  }
  if (auto n = r.integer(t, "bulk_port", kAgent, 0, 65535)) a.bulk_port = static_cast<int>(*n);
  if (auto limits = r.string(t, "job_limits", kAgent, false)) {
    if (limits->value != "auto" && limits->value != "cgroups" && limits->value != "rlimits") {
      r.error(limits->where, "'job_limits' in [agent] must be \"auto\", \"cgroups\" or "
                             "\"rlimits\", not '" + limits->value + "'");
    } else {
      a.job_limits = limits->value;
    }
  }
}

void read_trust(TomlReader& r, const toml::table& t, AgentConfig& a) {
  constexpr std::string_view kTrust = "[trust]";
  r.check_keys(t, kTrust, {"keys", "clients", "key_files"});
  auto read = [&](std::string_view key, std::vector<std::string>& out,
                  std::vector<Location>& where) {
    if (auto list = r.string_array(t, key, kTrust, false)) {
      for (const auto& v : *list) {
        if (v.value.empty()) {
          r.error(v.where, "'" + std::string(key) + "' in [trust] holds an empty string");
          continue;
        }
        out.push_back(v.value);
        where.push_back(v.where);
      }
    }
  };
  read("keys", a.trust_keys, a.trust_keys_where);
  read("clients", a.trust_clients, a.trust_clients_where);
  read("key_files", a.trust_key_files, a.trust_key_files_where);
}

void read_slurm(TomlReader& r, const toml::table& t, SlurmConfig& slurm) {
  constexpr std::string_view kSlurm = "[slurm]";
  r.check_keys(t, kSlurm, {"shared_dir", "partition", "poll_interval"});
  slurm.where = r.at(t);
  if (auto dir = r.string(t, "shared_dir", kSlurm, true)) {
    if (dir->value.empty() || dir->value.front() != '/') {
      r.error(dir->where, "'shared_dir' in [slurm] must be an absolute path (the same on the "
                          "compute nodes), not '" + dir->value + "'");
    } else {
      slurm.shared_dir = dir->value;
      while (slurm.shared_dir.size() > 1 && slurm.shared_dir.back() == '/') {
        slurm.shared_dir.pop_back();
      }
    }
  }
  if (auto part = r.string(t, "partition", kSlurm, false)) {
    if (!is_identifier(part->value)) {
      r.error(part->where, "'partition' in [slurm] must be a partition name, not '" +
                               part->value + "'");
    } else {
      slurm.partition = part->value;
    }
  }
  if (auto ms = r.duration(t, "poll_interval", kSlurm)) slurm.poll_ms = *ms;
}

void read_promises(TomlReader& r, const toml::table& root, AgentConfig& a) {
  constexpr std::string_view kPromise = "[[promise]]";
  std::set<std::pair<std::string, std::string>> seen;
  for (const toml::table* t : r.table_array(root, "promise")) {
    r.check_keys(*t, kPromise, {"stage", "capacity", "executor"});
    PromiseDecl p;
    auto stage = r.string(*t, "stage", kPromise, true);
    auto capacity = r.integer(*t, "capacity", kPromise, 1, kMaxCapacity);
    if (capacity) p.capacity = int(*capacity);
    if (auto ex = r.string(*t, "executor", kPromise, false)) {
      if (ex->value != "local" && ex->value != "slurm") {
        r.error(ex->where, "'executor' in [[promise]] must be \"local\" or \"slurm\", not '" +
                               ex->value + "'");
      } else if (ex->value == "slurm" && a.slurm.shared_dir.empty()) {
        r.error(ex->where, "'executor' in [[promise]] is \"slurm\", but the agent file has no "
                           "[slurm] table with a shared_dir (docs/executors.md)");
      } else {
        p.executor = ex->value;
      }
    }
    if (!stage) continue;
    auto q = read_qualified(r, *stage, "stage", "wordcount/count");
    if (!q) continue;
    std::tie(p.pipeline, p.stage) = *q;
    p.where = stage->where;
    if (!seen.insert(*q).second) {
      r.error(stage->where, "duplicate promise for stage '" + stage->value + "'");
      continue;
    }
    a.promises.push_back(std::move(p));
  }
}

void read_sources(TomlReader& r, const toml::table& root, AgentConfig& a) {
  constexpr std::string_view kSource = "[[source]]";
  std::set<std::pair<std::string, std::string>> seen;
  for (const toml::table* t : r.table_array(root, "source")) {
    r.check_keys(*t, kSource, {"dataset", "path", "watch"});
    SourceDecl s;
    auto dataset = r.string(*t, "dataset", kSource, true);
    if (auto path = r.string(*t, "path", kSource, true)) {
      if (path->value.empty()) r.error(path->where, "'path' in [[source]] is empty");
      s.path = path->value;
    }
    if (auto watch = r.boolean(*t, "watch", kSource)) s.watch = *watch;
    if (!dataset) continue;
    auto q = read_qualified(r, *dataset, "dataset", "wordcount/corpus");
    if (!q) continue;
    std::tie(s.pipeline, s.source) = *q;
    s.where = dataset->where;
    if (!seen.insert(*q).second) {
      r.error(dataset->where, "duplicate source for dataset '" + dataset->value + "'");
      continue;
    }
    a.sources.push_back(std::move(s));
  }
}

void read_timing(TomlReader& r, const toml::table& t, Timing& timing) {
  constexpr std::string_view kTiming = "[timing]";
  r.check_keys(t, kTiming,
               {"heartbeat", "suspect_after", "dead_after", "sync_interval", "claim_step",
                "membership", "probe_interval", "probe_timeout", "indirect_probes",
                "suspicion_mult", "suspicion_max_mult", "retransmit_mult"});
  // The membership profile first: its values are the defaults the keys below override.
  if (auto m = r.string(t, "membership", kTiming, false)) {
    bool known = false;
    for (auto p : {MembershipProfile::kLan, MembershipProfile::kWan, MembershipProfile::kAllToAll}) {
      if (m->value == membership_profile_name(p)) {
        timing.membership = p;
        timing.swim = swim_profile(p);
        known = true;
      }
    }
    if (!known) {
      r.error(m->where, "'membership' in [timing] must be \"lan\", \"wan\" or \"all-to-all\", not '" +
                            m->value + "'");
    }
  }
  if (auto ms = r.duration(t, "probe_interval", kTiming)) timing.swim.probe_interval_ms = *ms;
  if (auto ms = r.duration(t, "probe_timeout", kTiming)) timing.swim.probe_timeout_ms = *ms;
  if (auto n = r.integer(t, "indirect_probes", kTiming, 0, 16)) timing.swim.indirect_probes = int(*n);
  if (auto n = r.integer(t, "suspicion_mult", kTiming, 1, 100)) timing.swim.suspicion_mult = int(*n);
  if (auto n = r.integer(t, "suspicion_max_mult", kTiming, 1, 100)) {
    timing.swim.suspicion_max_mult = int(*n);
  }
  if (auto n = r.integer(t, "retransmit_mult", kTiming, 1, 100)) timing.swim.retransmit_mult = int(*n);
  struct Field {
    std::string_view key;
    std::int64_t* ms;
  };
  const Field fields[] = {{"heartbeat", &timing.heartbeat_ms},
                          {"suspect_after", &timing.suspect_after_ms},
                          {"dead_after", &timing.dead_after_ms},
                          {"sync_interval", &timing.sync_interval_ms},
                          {"claim_step", &timing.claim_step_ms}};
  for (const auto& f : fields) {
    if (auto ms = r.duration(t, f.key, kTiming)) *f.ms = *ms;
  }
  // Failure detection needs a few heartbeats before suspicion, and suspicion before death.
  auto order = [&](std::string_view a, std::int64_t a_ms, std::string_view b, std::int64_t b_ms) {
    if (a_ms < b_ms) return;
    const toml::node* node = t.get(b);
    if (!node) node = t.get(a);
    Location where = node ? r.at(*node) : r.at(t);
    r.error(where, "in [timing], " + std::string(a) + " (" + format_duration_ms(a_ms) +
                       ") must be shorter than " + std::string(b) + " (" +
                       format_duration_ms(b_ms) + ")");
  };
  order("heartbeat", timing.heartbeat_ms, "suspect_after", timing.suspect_after_ms);
  order("suspect_after", timing.suspect_after_ms, "dead_after", timing.dead_after_ms);
  // An ack must be able to arrive within the period it was asked for.
  order("probe_timeout", timing.swim.probe_timeout_ms, "probe_interval",
        timing.swim.probe_interval_ms);
}

}  // namespace

ParseOutput<Pipeline> parse_pipeline(std::string_view text, std::string file) {
  ParseOutput<Pipeline> out;
  TomlReader r(file, out.errors);
  auto root = r.parse(text);
  if (!root) return out;
  r.check_keys(*root, "a pipeline file", {"pipeline", "source", "stage"});
  Pipeline p;
  p.file = file;
  PipelineSpans spans;
  spans.name = Location{file, 1, 1};
  if (const toml::table* pt = r.table(*root, "pipeline", true)) {
    r.check_keys(*pt, "[pipeline]", {"name"});
    spans.name = r.at(*pt);
    if (auto name = r.string(*pt, "name", "[pipeline]", true)) {
      p.name = name->value;
      spans.name = name->where;
    }
  }
  for (const toml::table* t : r.table_array(*root, "source")) {
    r.check_keys(*t, "[[source]]", {"name"});
    if (auto name = r.string(*t, "name", "[[source]]", true)) {
      p.sources.push_back(Source{name->value, r.at(*t)});
      spans.sources.push_back(name->where);
    }
  }
  auto stage_tables = r.table_array(*root, "stage");
  const toml::node* stage_node = root->get("stage");
  bool stage_wrong_type = stage_node && !stage_node->is_array();
  if (stage_tables.empty() && !stage_wrong_type) {
    r.error(spans.name, "pipeline has no [[stage]]");
  }
  for (const toml::table* t : stage_tables) {
    StageSpans ss;
    if (auto stage = read_stage(r, *t, ss)) {
      p.stages.push_back(std::move(*stage));
      spans.stages.push_back(std::move(ss));
    }
  }
  bool syntax_ok = out.errors.empty();
  spans.name_reported = p.name.empty() && !syntax_ok;
  bool meaning_ok = check_pipeline(p, spans, out.errors);
  if (syntax_ok && meaning_ok) out.value = std::move(p);
  sort_by_position(out.errors);
  return out;
}

ParseOutput<AgentConfig> parse_agent(std::string_view text, std::string file) {
  ParseOutput<AgentConfig> out;
  TomlReader r(file, out.errors);
  auto root = r.parse(text);
  if (!root) return out;
  r.check_keys(*root, "an agent file",
               {"agent", "trust", "promise", "source", "timing", "slurm"});
  AgentConfig a;
  a.file = file;
  a.where = Location{file, 1, 1};
  if (const toml::table* t = r.table(*root, "agent", true)) read_agent_table(r, *t, a);
  if (const toml::table* t = r.table(*root, "trust", false)) read_trust(r, *t, a);
  if (const toml::table* t = r.table(*root, "slurm", false)) read_slurm(r, *t, a.slurm);
  read_promises(r, *root, a);
  read_sources(r, *root, a);
  if (const toml::table* t = r.table(*root, "timing", false)) read_timing(r, *t, a.timing);
  if (out.errors.empty()) out.value = std::move(a);
  sort_by_position(out.errors);
  return out;
}

std::vector<Diagnostic> validate_agent_against(const AgentConfig& agent,
                                               const std::vector<Pipeline>& pipelines) {
  std::vector<Diagnostic> errors;
  auto find = [&](const std::string& name) -> const Pipeline* {
    for (const auto& p : pipelines) {
      if (p.name == name) return &p;
    }
    return nullptr;
  };
  auto suggest = [](std::string_view word, const std::vector<std::string>& names) {
    auto best = closest_name(word, names);
    return best ? " (did you mean '" + *best + "'?)" : std::string();
  };
  std::vector<std::string> pipeline_names;
  for (const auto& p : pipelines) pipeline_names.push_back(p.name);
  auto check = [&](const Location& where, std::string_view what, const std::string& pipeline,
                   const std::string& name, bool is_stage) {
    std::string full = pipeline + "/" + name;
    const Pipeline* p = find(pipeline);
    if (!p) {
      errors.push_back({where, std::string(what) + " '" + full +
                                   "': no loaded pipeline is named '" + pipeline + "'" +
                                   suggest(pipeline, pipeline_names)});
      return;
    }
    if (is_stage ? p->find_stage(name) != nullptr : p->find_source(name) != nullptr) return;
    std::vector<std::string> names;
    if (is_stage) {
      for (const auto& s : p->stages) names.push_back(pipeline + "/" + s.name);
    } else {
      for (const auto& s : p->sources) names.push_back(pipeline + "/" + s.name);
    }
    errors.push_back({where, std::string(what) + " '" + full + "': pipeline '" + pipeline + "' (" +
                                 p->file + ") has no " + (is_stage ? "stage" : "source") + " '" +
                                 name + "'" + suggest(full, names)});
  };
  for (const auto& pr : agent.promises) {
    check(pr.where, "promise for stage", pr.pipeline, pr.stage, true);
    const Pipeline* p = find(pr.pipeline);
    const Stage* s = p ? p->find_stage(pr.stage) : nullptr;
    if (s && !s->image.empty()) {
      // Decided, not yet built: no executor here runs container images (docs/sandbox.md,
      // "Environments"), and a job run on the host's files instead would be another job.
      errors.push_back({pr.where, "promise for stage '" + pr.pipeline + "/" + pr.stage +
                                      "': the stage runs in image '" + s->image + "' (" +
                                      s->where.to_string() +
                                      "), and this agent has no executor that runs container "
                                      "images: no agent can promise it yet (docs/sandbox.md)"});
    }
    if (s && s->root) {
      // A root is made with bubblewrap (agent/sandbox.h); without it the command would
      // run on the host's files under the root's name.
      std::string runs_in = "promise for stage '" + pr.pipeline + "/" + pr.stage +
                            "': the stage runs in root '" + s->root->to_string() + "' (" +
                            s->where.to_string() + "), ";
      if (pr.executor == "slurm") {
        errors.push_back({pr.where, runs_in + "and the Slurm executor runs jobs on the compute "
                                              "nodes' own file system: promise it with executor "
                                              "= \"local\" (docs/sandbox.md)"});
      } else if (agent.sandbox == "none") {
        errors.push_back({pr.where, runs_in + "which only the bubblewrap sandbox makes, and "
                                              "this agent's sandbox is \"none\" "
                                              "(docs/sandbox.md)"});
      }
    }
  }
  for (const auto& s : agent.sources) check(s.where, "source", s.pipeline, s.source, false);
  return errors;
}

ConfigKind detect_config_kind(std::string_view text) {
  if (text.size() > kMaxConfigBytes || find_nul(text, "")) return ConfigKind::kUnknown;
  try {
    toml::table root = toml::parse(text);
    if (root.contains("pipeline")) return ConfigKind::kPipeline;
    if (root.contains("agent")) return ConfigKind::kAgent;
  } catch (const toml::parse_error&) {
  }
  return ConfigKind::kUnknown;
}

}  // namespace vow::promises
