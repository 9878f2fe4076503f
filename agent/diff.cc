// vow diff: two lineages compared step by step (agent/diff.h).
#include "agent/diff.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace vow::agent {
namespace {

using nlohmann::json;

std::string step_key(const json& s) {
  if (s.value("kind", "") == "source") {
    return s.value("pipeline", "") + "/" + s.value("source", "");
  }
  std::string k = s.value("pipeline", "") + "/" + s.value("stage", "");
  if (!s.value("shard", "").empty()) k += "[" + s.value("shard", "") + "]";
  return k;
}

struct Side {
  std::map<std::string, json> steps;                    // by key
  std::map<std::string, std::string> key_of;            // statement id -> key
  std::map<std::string, std::map<std::string, std::set<std::string>>> from;  // key -> input -> keys
  std::set<std::pair<std::string, std::string>> edges;  // (from key, to key)
  std::map<std::pair<std::string, std::string>, std::string> edge_input;
};

Side index(const json& lineage) {
  Side s;
  for (const auto& st : lineage.value("steps", json::array())) {
    std::string key = step_key(st);
    s.steps[key] = st;
    s.key_of[st.value("id", "")] = key;
  }
  for (const auto& e : lineage.value("edges", json::array())) {
    auto f = s.key_of.find(e.value("from", ""));
    auto t = s.key_of.find(e.value("to", ""));
    if (f == s.key_of.end() || t == s.key_of.end()) continue;
    std::string input = e.value("input", "");
    input = input.substr(0, input.find('/'));  // a fan-in entry "counts/part-aa"
    s.from[t->second][input].insert(f->second);
    s.edges.insert({f->second, t->second});
    s.edge_input[{f->second, t->second}] = input;
  }
  return s;
}

json opt(const json& j, const char* field) { return j.contains(field) ? j[field] : json(); }

json pair_of(const json& a, const json& b) { return {{"a", a}, {"b", b}}; }

std::vector<std::string> strings(const json& j) {
  std::vector<std::string> v;
  if (j.is_array()) {
    for (const auto& x : j) v.push_back(x.get<std::string>());
  }
  return v;
}

// The definition part of a step pair whose stage digests differ.
json definition_diff(const json& a, const json& b) {
  json d = {{"stage_digest", pair_of(opt(a, "stage_digest"), opt(b, "stage_digest"))}};
  json da = opt(a, "definition");
  json db = opt(b, "definition");
  if (da.is_null() || db.is_null()) {
    d["known"] = false;  // an agent that never heard of a definition cannot show it
    return d;
  }
  d["known"] = true;
  if (da.value("form", "") != db.value("form", "")) d["form"] = pair_of(da["form"], db["form"]);
  auto la = command_lines(da);
  auto lb = command_lines(db);
  if (la != lb) {
    json lines = json::array();
    for (const auto& l : line_diff(la, lb)) {
      lines.push_back({{"op", std::string(1, l.op)}, {"text", l.text}});
    }
    d["command"] = lines;
  }
  json env = json::object();
  json ea = da.value("env", json::object());
  json eb = db.value("env", json::object());
  std::set<std::string> keys;
  for (const auto& [k, _] : ea.items()) keys.insert(k);
  for (const auto& [k, _] : eb.items()) keys.insert(k);
  for (const auto& k : keys) {
    json va = ea.contains(k) ? ea[k] : json();
    json vb = eb.contains(k) ? eb[k] : json();
    if (va != vb) env[k] = pair_of(va, vb);
  }
  if (!env.empty()) d["env"] = env;
  for (const char* f : {"inputs", "outputs", "foreach", "image", "root", "name"}) {
    if (da.value(f, json()) != db.value(f, json())) d[f] = pair_of(da[f], db[f]);
  }
  return d;
}

json from_list(const Side& s, const std::string& key, const std::string& input) {
  json out = json::array();
  auto it = s.from.find(key);
  if (it == s.from.end()) return out;
  auto jt = it->second.find(input);
  if (jt == it->second.end()) return out;
  for (const auto& k : jt->second) out.push_back(k);
  return out;
}

json compare(const std::string& key, const Side& sa, const Side& sb) {
  auto ia = sa.steps.find(key);
  auto ib = sb.steps.find(key);
  const json* a = ia == sa.steps.end() ? nullptr : &ia->second;
  const json* b = ib == sb.steps.end() ? nullptr : &ib->second;
  const json& any = a ? *a : *b;
  json d = {{"step", key}, {"kind", any.value("kind", "job")}};
  if (a) d["a"] = a->value("id", "");
  if (b) d["b"] = b->value("id", "");
  if (!a || !b) {
    d["state"] = a ? "only_a" : "only_b";
    d["causes"] = json::array({"only in " + std::string(a ? "A" : "B")});
    return d;
  }
  json causes = json::array();
  if (d["kind"] == "source") {
    // One artifact is the same source, whichever provider's statement named it.
    bool same = a->value("id", "") == b->value("id", "") ||
                (*a)["output"].value("digest", "") == (*b)["output"].value("digest", "");
    d["state"] = same ? "same" : "differs";
    if (!same) {
      causes.push_back("version");
      d["version"] = pair_of(
          {{"version", opt(*a, "version")}, {"digest", (*a)["output"].value("digest", "")},
           {"signer", opt(*a, "signer")}},
          {{"version", opt(*b, "version")}, {"digest", (*b)["output"].value("digest", "")},
           {"signer", opt(*b, "signer")}});
    }
    d["causes"] = causes;
    return d;
  }
  bool same_job = a->value("job", "") == b->value("job", "");
  bool same_result = a->value("id", "") == b->value("id", "");
  d["state"] = same_job && same_result ? "same" : "differs";
  d["job"] = pair_of(opt(*a, "job"), opt(*b, "job"));
  if (a->value("stage_digest", "") != b->value("stage_digest", "")) {
    causes.push_back("definition");
    d["definition"] = definition_diff(*a, *b);
  }
  json inputs = json::object();
  json ina = a->value("inputs", json::object());
  json inb = b->value("inputs", json::object());
  std::set<std::string> names;
  for (const auto& [k, _] : ina.items()) names.insert(k);
  for (const auto& [k, _] : inb.items()) names.insert(k);
  for (const auto& n : names) {
    json va = ina.contains(n) ? ina[n] : json();
    json vb = inb.contains(n) ? inb[n] : json();
    if (va == vb) continue;
    inputs[n] = {{"a", va},
                 {"b", vb},
                 {"from_a", from_list(sa, key, n)},
                 {"from_b", from_list(sb, key, n)}};
  }
  if (!inputs.empty()) {
    causes.push_back("inputs");
    d["inputs"] = inputs;
  }
  json outputs = json::object();
  json oa = a->value("outputs", json::object());
  json ob = b->value("outputs", json::object());
  std::set<std::string> onames;
  for (const auto& [k, _] : oa.items()) onames.insert(k);
  for (const auto& [k, _] : ob.items()) onames.insert(k);
  for (const auto& n : onames) {
    json va = oa.contains(n) ? oa[n] : json();
    json vb = ob.contains(n) ? ob[n] : json();
    if (va != vb) outputs[n] = pair_of(va, vb);
  }
  if (!outputs.empty()) d["outputs"] = outputs;
  if (same_job && !same_result) causes.push_back("result");  // one job, another result
  json xa = opt(*a, "executor");
  json xb = opt(*b, "executor");
  if (xa.value("id", "") != xb.value("id", "")) d["executor"] = pair_of(xa, xb);
  bool nda = a->value("nondeterministic", false);
  bool ndb = b->value("nondeterministic", false);
  if (nda || ndb) d["nondeterministic"] = pair_of(nda, ndb);
  d["causes"] = causes;
  return d;
}

// Keys upstream first (ties by name), over the edges of both sides.
std::vector<std::string> ordered(const std::set<std::string>& keys,
                                 const std::set<std::pair<std::string, std::string>>& edges) {
  std::map<std::string, int> indegree;
  for (const auto& k : keys) indegree[k] = 0;
  for (const auto& [f, t] : edges) {
    if (keys.count(f) && keys.count(t) && f != t) ++indegree[t];
  }
  std::set<std::string> ready;
  for (const auto& [k, n] : indegree) {
    if (n == 0) ready.insert(k);
  }
  std::vector<std::string> out;
  while (!ready.empty()) {
    std::string k = *ready.begin();
    ready.erase(ready.begin());
    out.push_back(k);
    for (const auto& [f, t] : edges) {
      if (f == k && t != k && keys.count(t) && --indegree[t] == 0) ready.insert(t);
    }
  }
  for (const auto& k : keys) {  // a cycle cannot happen (digests); never drop a step
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  return out;
}

std::string short_hex(const json& j, std::size_t n = 12) {
  if (!j.is_string()) return "(none)";
  std::string s = j.get<std::string>();
  return s.size() > n ? s.substr(0, n) : s;
}

std::string agent_label(const json& ref) {
  std::string name = ref.value("name", "");
  std::string id = ref.value("id", "");
  if (id.size() > 14) id = id.substr(0, 14);
  return name.empty() ? id : name;
}

std::string paint(const std::string& s, const char* code, bool colour) {
  return colour ? std::string("\033[") + code + "m" + s + "\033[0m" : s;
}

}  // namespace

std::vector<DiffLine> line_diff(const std::vector<std::string>& a,
                                const std::vector<std::string>& b) {
  // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
  std::vector<std::vector<std::size_t>> lcs(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = a.size(); i-- > 0;) {
    for (std::size_t j = b.size(); j-- > 0;) {
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::vector<DiffLine> out;
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] == b[j]) {
      out.push_back({' ', a[i]});
      ++i;
      ++j;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push_back({'-', a[i++]});
    } else {
      out.push_back({'+', b[j++]});
    }
  }
  while (i < a.size()) out.push_back({'-', a[i++]});
  while (j < b.size()) out.push_back({'+', b[j++]});
  return out;
}

std::vector<std::string> command_lines(const json& definition) {
  auto argv = strings(definition.value("argv", json::array()));
  if (definition.value("form", "") == "shell" && argv.size() == 3) {
    std::vector<std::string> lines;
    std::istringstream in(argv[2]);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  return argv;
}

json diff_lineages(const json& a, const json& b) {
  Side sa = index(a);
  Side sb = index(b);
  std::set<std::string> keys;
  for (const auto& [k, _] : sa.steps) keys.insert(k);
  for (const auto& [k, _] : sb.steps) keys.insert(k);
  std::set<std::pair<std::string, std::string>> edges = sa.edges;
  edges.insert(sb.edges.begin(), sb.edges.end());
  json steps = json::array();
  json origins = json::array();
  std::map<std::string, int> counts = {{"same", 0}, {"differs", 0}, {"only_a", 0}, {"only_b", 0}};
  for (const auto& key : ordered(keys, edges)) {
    json d = compare(key, sa, sb);
    ++counts[d["state"].get<std::string>()];
    // Where a difference starts: a definition, a source version, a step on one side
    // only, or another result of one job. Inputs that differ only carry it downstream.
    bool origin = false;
    for (const auto& c : d["causes"]) origin = origin || c != "inputs";
    if (d["state"] != "same" && origin) origins.push_back(key);
    steps.push_back(d);
  }
  json edge_list = json::array();
  for (const auto& [f, t] : edges) {
    auto it = sa.edge_input.find({f, t});
    std::string input = it != sa.edge_input.end() ? it->second : sb.edge_input.at({f, t});
    edge_list.push_back({{"from", f}, {"to", t}, {"input", input}});
  }
  auto side = [](const json& l) {
    return json{{"ref", l.value("ref", "")},
                {"artifacts", l.value("artifacts", json::array())},
                {"roots", l.value("roots", json::array())}};
  };
  return {{"a", side(a)},
          {"b", side(b)},
          {"same", counts["differs"] + counts["only_a"] + counts["only_b"] == 0},
          {"summary",
           {{"steps", keys.size()},
            {"same", counts["same"]},
            {"differ", counts["differs"]},
            {"only_a", counts["only_a"]},
            {"only_b", counts["only_b"]},
            {"origins", origins}}},
          {"steps", steps},
          {"edges", edge_list}};
}

std::string diff_text(const json& diff, bool colour) {
  std::ostringstream out;
  for (const char* side : {"a", "b"}) {
    const json& s = diff[side];
    std::string arts;
    for (const auto& x : s["artifacts"]) arts += (arts.empty() ? "" : ", ") + short_hex(x);
    out << (side[0] == 'a' ? "A " : "B ") << s.value("ref", "") << "  (" << arts << ")\n";
  }
  const json& sum = diff["summary"];
  if (diff.value("same", false)) {
    out << "\nthe same: all " << sum.value("steps", 0)
        << " steps are the same jobs with the same results\n";
    return out.str();
  }
  out << "\n"
      << sum.value("differ", 0) << " of " << sum.value("steps", 0) << " steps differ";
  if (sum.value("only_a", 0) + sum.value("only_b", 0) > 0) {
    out << ", " << sum.value("only_a", 0) << " only in A, " << sum.value("only_b", 0)
        << " only in B";
  }
  std::string origins;
  for (const auto& o : sum["origins"]) origins += (origins.empty() ? "" : ", ") + o.get<std::string>();
  out << "; the differences start at " << (origins.empty() ? "(none)" : origins) << "\n";
  std::vector<std::string> same;
  for (const auto& d : diff["steps"]) {
    std::string key = d.value("step", "");
    std::string state = d.value("state", "");
    if (state == "same") {
      same.push_back(key);
      continue;
    }
    out << "\n";
    std::string head = (d.value("kind", "") == "source" ? "source " : "step ") + key;
    if (state != "differs") {
      out << paint(head, "1;33", colour) << ": only in " << (state == "only_a" ? "A" : "B")
          << " (" << d.value(state == "only_a" ? "a" : "b", "") << ")\n";
      continue;
    }
    std::string causes;
    for (const auto& c : d["causes"]) causes += (causes.empty() ? "" : ", ") + c.get<std::string>();
    out << paint(head, "1;31", colour) << ": " << causes << "\n";
    if (d.contains("version")) {
      const json& v = d["version"];
      out << "  version   " << v["a"].value("version", 0) << " -> " << v["b"].value("version", 0)
          << "  (" << short_hex(v["a"]["digest"]) << " -> " << short_hex(v["b"]["digest"])
          << ")\n";
    }
    if (d.contains("job")) {
      out << "  job       " << short_hex(d["job"]["a"]) << " -> " << short_hex(d["job"]["b"])
          << "\n";
    }
    if (d.contains("definition")) {
      const json& def = d["definition"];
      out << "  stage     " << short_hex(def["stage_digest"]["a"]) << " -> "
          << short_hex(def["stage_digest"]["b"]) << "\n";
      if (!def.value("known", false)) {
        out << "  (the definitions are not known to the agent asked)\n";
      }
      if (def.contains("form")) {
        out << "  form      " << def["form"]["a"].get<std::string>() << " -> "
            << def["form"]["b"].get<std::string>() << "\n";
      }
      if (def.contains("command")) {
        out << "  command\n";
        for (const auto& l : def["command"]) {
          std::string op = l.value("op", " ");
          std::string line = "    " + op + " " + l.value("text", "");
          out << (op == "-"   ? paint(line, "31", colour)
                  : op == "+" ? paint(line, "32", colour)
                              : line)
              << "\n";
        }
      }
      if (def.contains("env")) {
        for (const auto& [k, v] : def["env"].items()) {
          auto show = [](const json& x) { return x.is_null() ? "(unset)" : x.get<std::string>(); };
          out << "  env       " << k << ": " << show(v["a"]) << " -> " << show(v["b"]) << "\n";
        }
      }
      for (const char* f : {"inputs", "outputs", "foreach", "image", "root"}) {
        if (def.contains(f)) out << "  " << f << "    " << def[f]["a"].dump() << " -> " << def[f]["b"].dump() << "\n";
      }
    }
    if (d.contains("inputs")) {
      for (const auto& [name, v] : d["inputs"].items()) {
        std::string from;
        for (const auto& f : v["from_b"]) from += (from.empty() ? "" : ", ") + f.get<std::string>();
        out << "  input     " << name << " " << short_hex(v["a"]) << " -> " << short_hex(v["b"])
            << (from.empty() ? "" : "  (from " + from + ")") << "\n";
      }
    }
    if (d.contains("outputs")) {
      for (const auto& [name, v] : d["outputs"].items()) {
        out << "  output    " << name << " " << short_hex(v["a"]) << " -> " << short_hex(v["b"])
            << "\n";
      }
    }
    if (d.contains("executor")) {
      out << "  executor  " << agent_label(d["executor"]["a"]) << " -> "
          << agent_label(d["executor"]["b"]) << "\n";
    }
    if (d.contains("nondeterministic")) {
      out << "  " << paint("non-deterministic", "1;35", colour) << ": its job has results with "
          << "different outputs in " << (d["nondeterministic"]["a"].get<bool>() ? "A" : "")
          << (d["nondeterministic"]["a"].get<bool>() && d["nondeterministic"]["b"].get<bool>()
                  ? " and "
                  : "")
          << (d["nondeterministic"]["b"].get<bool>() ? "B" : "") << "\n";
    }
  }
  // Non-deterministic steps that are otherwise the same are still worth knowing.
  for (const auto& d : diff["steps"]) {
    if (d.value("state", "") == "same" && d.contains("nondeterministic")) {
      out << "\n"
          << paint("step " + d.value("step", ""), "1;35", colour)
          << ": the same result, but non-deterministic (its job has results with different "
             "outputs)\n";
    }
  }
  if (!same.empty()) {
    std::string list;
    for (const auto& s : same) list += (list.empty() ? "" : ", ") + s;
    out << "\nthe same (" << same.size() << "): " << list << "\n";
  }
  return out.str();
}

std::string diff_dot(const json& diff) {
  auto quote = [](const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '\n') {
        out += "\\n";  // a line break in the label
        continue;
      }
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  };
  std::ostringstream out;
  out << "digraph diff {\n  rankdir=LR;\n  node [shape=box, style=filled, fillcolor=white, "
         "fontname=\"monospace\"];\n";
  std::set<std::string> origins;
  for (const auto& o : diff["summary"]["origins"]) origins.insert(o.get<std::string>());
  for (const auto& d : diff["steps"]) {
    std::string key = d.value("step", "");
    std::string state = d.value("state", "");
    std::string label = (d.value("kind", "") == "source" ? "source " : "") + key;
    std::string causes;
    for (const auto& c : d["causes"]) causes += (causes.empty() ? "" : ", ") + c.get<std::string>();
    if (!causes.empty()) label += "\n" + causes;
    std::string attrs;
    if (state == "differs") {
      attrs = origins.count(key) ? "fillcolor=\"#f4a6a6\", color=\"#c00000\", penwidth=2"
                                 : "fillcolor=\"#fbd9a5\", color=\"#d07000\"";
    } else if (state != "same") {
      attrs = "style=\"filled,dashed\", fillcolor=\"#e0e0e0\"";
    }
    if (d.contains("nondeterministic")) attrs += std::string(attrs.empty() ? "" : ", ") + "peripheries=2";
    out << "  " << quote(key) << " [label=" << quote(label)
        << (d.value("kind", "") == "source" ? ", shape=ellipse" : "")
        << (attrs.empty() ? "" : ", " + attrs) << "];\n";
  }
  for (const auto& e : diff["edges"]) {
    out << "  " << quote(e.value("from", "")) << " -> " << quote(e.value("to", ""))
        << " [label=" << quote(e.value("input", "")) << "];\n";
  }
  out << "}\n";
  return out.str();
}

}  // namespace vow::agent
