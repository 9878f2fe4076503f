#include "promises/pipeline_check.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "promises/config.h"

namespace vow::promises {
namespace {

const Location& span_or(const std::vector<Location>& spans, std::size_t i,
                        const Location& fallback) {
  return i < spans.size() && spans[i].line > 0 ? spans[i] : fallback;
}

const Location& span_or(const Location& span, const Location& fallback) {
  return span.line > 0 ? span : fallback;
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  auto best = closest_name(word, candidates);
  return best ? " (did you mean '" + *best + "'?)" : "";
}

class Checker {
 public:
  Checker(Pipeline& p, const PipelineSpans& spans, std::vector<Diagnostic>& errors)
      : p_(p), spans_(spans), errors_(errors) {}

  bool run() {
    std::size_t before = errors_.size();
    if (!check_limits()) return false;
    check_names();
    std::vector<std::vector<std::size_t>> consumers(p_.stages.size());
    for (std::size_t i = 0; i < p_.stages.size(); ++i) check_stage(i, consumers);
    std::vector<std::size_t> order = topological_order(consumers);
    if (order.size() != p_.stages.size()) report_cycles(consumers, order);
    if (errors_.size() != before) return false;
    std::vector<Stage> sorted;
    sorted.reserve(order.size());
    for (std::size_t i : order) sorted.push_back(std::move(p_.stages[i]));
    p_.stages = std::move(sorted);
    for (auto& s : p_.stages) s.digest = stage_digest(s);
    p_.digest = pipeline_digest(p_);
    return true;
  }

 private:
  void error(const Location& where, std::string message) {
    errors_.push_back({where, std::move(message)});
  }

  const StageSpans* stage_spans(std::size_t i) const {
    return i < spans_.stages.size() ? &spans_.stages[i] : nullptr;
  }
  Location stage_name_at(std::size_t i) const {
    const auto* s = stage_spans(i);
    return s ? span_or(s->name, p_.stages[i].where) : p_.stages[i].where;
  }
  Location input_at(std::size_t i, std::size_t j) const {
    const auto* s = stage_spans(i);
    return s ? span_or(s->inputs, j, p_.stages[i].where) : p_.stages[i].where;
  }
  Location output_at(std::size_t i, std::size_t j) const {
    const auto* s = stage_spans(i);
    return s ? span_or(s->outputs, j, p_.stages[i].where) : p_.stages[i].where;
  }

  bool check_limits() {
    Location top = span_or(spans_.name, Location{p_.file, 1, 1});
    bool ok = true;
    if (p_.stages.size() > kMaxStages) {
      error(top, "too many stages: " + std::to_string(p_.stages.size()) + " (at most " +
                     std::to_string(kMaxStages) + ")");
      ok = false;
    }
    if (p_.sources.size() > kMaxSources) {
      error(top, "too many sources: " + std::to_string(p_.sources.size()) + " (at most " +
                     std::to_string(kMaxSources) + ")");
      ok = false;
    }
    for (std::size_t i = 0; i < p_.stages.size() && ok; ++i) {
      const auto& s = p_.stages[i];
      if (s.inputs.size() > kMaxStageInputs || s.outputs.size() > kMaxStageOutputs) {
        error(s.where, "stage '" + s.name + "' has too many inputs or outputs (at most " +
                           std::to_string(kMaxStageInputs) + " each)");
        ok = false;
      }
    }
    return ok;
  }

  void check_name(const Location& where, std::string_view what, const std::string& name) {
    if (!is_identifier(name)) {
      error(where, std::string(what) + " name '" + name + "' is not an identifier: use 1-" +
                       std::to_string(kMaxNameBytes) + " letters, digits, '_' or '-'");
    }
  }

  void check_names() {
    if (!spans_.name_reported) {
      check_name(span_or(spans_.name, Location{p_.file, 1, 1}), "pipeline", p_.name);
    }
    std::map<std::string, Location> seen;
    for (std::size_t i = 0; i < p_.sources.size(); ++i) {
      const auto& src = p_.sources[i];
      Location at = span_or(spans_.sources, i, src.where);
      check_name(at, "source", src.name);
      source_names_.insert(src.name);
      auto [it, fresh] = seen.emplace(src.name, at);
      if (!fresh) {
        error(at,
              "duplicate source name '" + src.name + "' (first at " + it->second.to_string() + ")");
      }
    }
    seen.clear();
    for (std::size_t i = 0; i < p_.stages.size(); ++i) {
      const auto& st = p_.stages[i];
      check_name(stage_name_at(i), "stage", st.name);
      stage_index_.emplace(st.name, i);
      auto [it, fresh] = seen.emplace(st.name, stage_name_at(i));
      if (!fresh) {
        error(stage_name_at(i),
              "duplicate stage name '" + st.name + "' (first at " + it->second.to_string() + ")");
      }
    }
  }

  // "did you mean" for a word among candidates. A suggestion costs an edit distance per
  // candidate, so a pathological pipeline (thousands of dangling inputs among thousands
  // of outputs) gets only the first few, and none from a huge candidate list.
  std::string suggest(std::string_view word, const std::vector<std::string>& candidates) {
    constexpr std::size_t kMaxSuggestionCandidates = 2000;
    if (suggestions_left_ == 0 || candidates.size() > kMaxSuggestionCandidates) return "";
    --suggestions_left_;
    return did_you_mean(word, candidates);
  }

  // Every "stage.output" of the pipeline, built once.
  const std::vector<std::string>& all_outputs() {
    if (!all_outputs_) {
      all_outputs_.emplace();
      for (const auto& s : p_.stages) {
        for (const auto& o : s.outputs) all_outputs_->push_back(s.name + "." + o);
      }
    }
    return *all_outputs_;
  }

  // Resolves input j of stage i; returns the producing stage's index, if a stage.
  std::optional<std::size_t> resolve_input(std::size_t i, std::size_t j) {
    const InputRef& in = p_.stages[i].inputs[j];
    Location at = input_at(i, j);
    if (in.is_source()) {
      if (source_names_.count(in.name)) return std::nullopt;
      std::vector<std::string> names(source_names_.begin(), source_names_.end());
      names.insert(names.end(), all_outputs().begin(), all_outputs().end());
      error(at, "input '" + in.name + "' names no source of pipeline '" + p_.name + "'" +
                    suggest(in.name, names));
      return std::nullopt;
    }
    auto stage = stage_index_.find(in.stage);
    if (stage == stage_index_.end()) {
      error(at, "input '" + in.to_string() + "' names no stage '" + in.stage + "'" +
                    suggest(in.to_string(), all_outputs()));
      return std::nullopt;
    }
    std::size_t k = stage->second;
    const auto& outs = p_.stages[k].outputs;
    if (std::find(outs.begin(), outs.end(), in.name) == outs.end()) {
      std::vector<std::string> names;
      for (const auto& o : outs) names.push_back(in.stage + "." + o);
      error(at, "input '" + in.to_string() + "': stage '" + in.stage + "' has no output '" +
                    in.name + "'" + suggest(in.to_string(), names));
      return std::nullopt;
    }
    return k;
  }

  void check_stage(std::size_t i, std::vector<std::vector<std::size_t>>& consumers) {
    const Stage& st = p_.stages[i];
    std::map<std::string, std::size_t> outputs;
    for (std::size_t j = 0; j < st.outputs.size(); ++j) {
      const auto& o = st.outputs[j];
      check_name(output_at(i, j), "output", o);
      if (!outputs.emplace(o, j).second) {
        error(output_at(i, j), "duplicate output '" + o + "' in stage '" + st.name + "'");
      }
    }
    std::map<std::string, std::size_t> locals;
    for (std::size_t j = 0; j < st.inputs.size(); ++j) {
      const InputRef& in = st.inputs[j];
      if (!is_identifier(in.name) || (!in.is_source() && !is_identifier(in.stage))) {
        error(input_at(i, j),
              "input '" + in.to_string() + "' is not a source name or STAGE.OUTPUT of identifiers");
        continue;
      }
      auto [it, fresh] = locals.emplace(in.local_name(), j);
      if (!fresh) {
        const InputRef& other = st.inputs[it->second];
        if (other == in) {
          error(input_at(i, j), "input '" + in.to_string() + "' is listed twice");
        } else {
          error(input_at(i, j), "inputs '" + other.to_string() + "' and '" + in.to_string() +
                                    "' would both be VOW_IN_" + in.local_name() + " in stage '" +
                                    st.name + "'");
        }
        continue;
      }
      if (auto k = resolve_input(i, j)) {
        auto& c = consumers[*k];
        if (std::find(c.begin(), c.end(), i) == c.end()) c.push_back(i);
      }
    }
    if (st.foreach &&
        std::find(st.inputs.begin(), st.inputs.end(), *st.foreach) == st.inputs.end()) {
      std::vector<std::string> names;
      for (const auto& in : st.inputs) names.push_back(in.to_string());
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      const auto* sp = stage_spans(i);
      error(sp ? span_or(sp->foreach, st.where) : st.where,
            "foreach '" + st.foreach->to_string() + "' is not one of the inputs of stage '" +
                st.name + "' (" + (list.empty() ? "it has none" : "inputs: " + list) + ")" +
                suggest(st.foreach->to_string(), names));
    }
    if (st.root) check_root(i);
  }

  // `root` names one whole input directory that every job of the stage runs in: not an
  // entry of the foreach input (that differs per shard), and not besides an `image`
  // (a job runs in one environment).
  void check_root(std::size_t i) {
    const Stage& st = p_.stages[i];
    const auto* sp = stage_spans(i);
    Location at = sp ? span_or(sp->root, st.where) : st.where;
    const std::string root = st.root->to_string();
    if (!st.image.empty()) {
      error(at, "stage '" + st.name + "' names both an image and a root ('" + root +
                    "'): a job runs in one environment, so name one of them");
    }
    if (std::find(st.inputs.begin(), st.inputs.end(), *st.root) == st.inputs.end()) {
      std::vector<std::string> names;
      std::string list;
      for (const auto& in : st.inputs) {
        names.push_back(in.to_string());
        list += (list.empty() ? "" : ", ") + in.to_string();
      }
      error(at, "root '" + root + "' is not one of the inputs of stage '" + st.name + "' (" +
                    (list.empty() ? "it has none" : "inputs: " + list) + ")" +
                    suggest(root, names));
    } else if (st.foreach && *st.foreach == *st.root) {
      error(at, "root '" + root + "' of stage '" + st.name +
                    "' is its foreach input: a root is one directory for every job of the "
                    "stage, not one entry per shard");
    }
  }

  // Kahn's algorithm, taking the first ready stage in file order each time, so the order
  // is deterministic. Returns fewer than all stages when there is a cycle.
  std::vector<std::size_t> topological_order(
      const std::vector<std::vector<std::size_t>>& consumers) const {
    std::size_t n = p_.stages.size();
    std::vector<std::size_t> indegree(n, 0);
    for (const auto& c : consumers) {
      for (std::size_t k : c) ++indegree[k];
    }
    std::set<std::size_t> ready;
    for (std::size_t i = 0; i < n; ++i) {
      if (indegree[i] == 0) ready.insert(i);
    }
    std::vector<std::size_t> order;
    while (!ready.empty()) {
      std::size_t i = *ready.begin();
      ready.erase(ready.begin());
      order.push_back(i);
      for (std::size_t k : consumers[i]) {
        if (--indegree[k] == 0) ready.insert(k);
      }
    }
    return order;
  }

  // Reports each cycle among the stages left out of the order once, in data-flow order
  // ("cycle: a -> b -> a"), starting at the one written first.
  void report_cycles(const std::vector<std::vector<std::size_t>>& consumers,
                     const std::vector<std::size_t>& order) {
    std::size_t n = p_.stages.size();
    enum Color : std::uint8_t { kWhite, kGray, kBlack };
    std::vector<Color> color(n, kWhite);
    for (std::size_t i : order) color[i] = kBlack;
    // Iterative depth-first search: a frame is (stage, next consumer to visit).
    for (std::size_t root = 0; root < n; ++root) {
      if (color[root] != kWhite) continue;
      std::vector<std::pair<std::size_t, std::size_t>> stack{{root, 0}};
      color[root] = kGray;
      while (!stack.empty()) {
        auto& [node, next] = stack.back();
        if (next == consumers[node].size()) {
          color[node] = kBlack;
          stack.pop_back();
          continue;
        }
        std::size_t k = consumers[node][next++];
        if (color[k] == kWhite) {
          color[k] = kGray;
          stack.emplace_back(k, 0);
        } else if (color[k] == kGray) {
          std::vector<std::size_t> cycle;
          std::size_t from = 0;
          while (stack[from].first != k) ++from;
          for (std::size_t f = from; f < stack.size(); ++f) cycle.push_back(stack[f].first);
          auto first = std::min_element(cycle.begin(), cycle.end());
          std::rotate(cycle.begin(), first, cycle.end());
          std::string text;
          for (std::size_t c : cycle) text += p_.stages[c].name + " -> ";
          text += p_.stages[cycle.front()].name;
          error(p_.stages[cycle.front()].where, "cycle: " + text);
        }
      }
    }
  }

  Pipeline& p_;
  const PipelineSpans& spans_;
  std::vector<Diagnostic>& errors_;
  std::set<std::string> source_names_;
  std::map<std::string, std::size_t> stage_index_;  // first stage of each name
  std::optional<std::vector<std::string>> all_outputs_;
  int suggestions_left_ = 100;
};

}  // namespace

bool check_pipeline(Pipeline& pipeline, const PipelineSpans& spans,
                    std::vector<Diagnostic>& errors) {
  return Checker(pipeline, spans, errors).run();
}

}  // namespace vow::promises
