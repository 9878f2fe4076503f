#include "agent/lineage.h"

#include <utility>

namespace vow::agent {

Upstream::Upstream(const promises::Ledger& ledger,
                   std::function<const Statement*(const Digest&)> canonical)
    : ledger_(ledger), canonical_(std::move(canonical)) {}

const Statement* Upstream::made_by(const Digest& digest) {
  if (!index_) {
    index_.emplace();
    std::map<Digest, const Statement*> in_trees, sources;
    for (const auto& [job, _] : ledger_.jobs()) {
      const Statement* c = canonical_(job);
      const auto* r = c ? std::get_if<JobResult>(&c->body) : nullptr;
      if (!r) continue;
      for (const auto& o : r->outputs) {
        index_->emplace(o.artifact.digest, c);
        for (const auto& e : o.artifact.entries) in_trees[e.digest] = c;
      }
    }
    ledger_.for_each([&](const Statement& v) {
      const auto* sv = std::get_if<SourceVersion>(&v.body);
      if (!sv) return;
      auto newest = [&](const Digest& x) {
        auto [it, fresh] = sources.emplace(x, &v);
        if (!fresh && v.wall_unix_ms > it->second->wall_unix_ms) it->second = &v;
      };
      newest(sv->artifact.digest);
      for (const auto& e : sv->artifact.entries) newest(e.digest);
    });
    index_->insert(in_trees.begin(), in_trees.end());  // outputs first, then entries
    index_->insert(sources.begin(), sources.end());
  }
  auto it = index_->find(digest);
  return it == index_->end() ? nullptr : it->second;
}

std::vector<UpstreamEdge> Upstream::of(const Statement& st) {
  std::vector<UpstreamEdge> edges;
  const auto* r = std::get_if<JobResult>(&st.body);
  if (r == nullptr) return edges;
  const std::vector<InputBinding>* bindings = r->bindings.empty() ? nullptr : &r->bindings;
  if (bindings == nullptr) {
    if (const auto* js = ledger_.job(r->job.job)) {
      for (const Statement* a : js->accepts) {
        const auto* acc = std::get_if<Accept>(&a->body);
        if (acc && a->author == st.author && acc->epoch == r->epoch) bindings = &acc->bindings;
      }
    }
  }
  if (bindings != nullptr) {
    // A binding is lineage only if it names one of the result's inputs and a producer
    // that made that digest (as `vow verify` checks).
    for (const auto& b : *bindings) {
      if (!binding_matches_inputs(*r, b)) continue;
      const Statement* up = ledger_.get(b.producer, b.producer_seq);
      if (up == nullptr || !made_artifact(*up, b.digest)) up = made_by(b.digest);
      if (up) edges.push_back({up, b.input, b.digest});
    }
    return edges;
  }
  auto edge = [&](const std::string& input, const Digest& d) {
    const Statement* up = made_by(d);
    if (up) edges.push_back({up, input, d});
    return up != nullptr;
  };
  for (const auto& n : r->inputs) {
    if (edge(n.name, n.artifact.digest)) continue;
    for (const auto& e : n.artifact.entries) edge(n.name + "/" + e.name, e.digest);
  }
  return edges;
}

}  // namespace vow::agent
