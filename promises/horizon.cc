#include "promises/horizon.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace vow::promises {
namespace {

struct Cut {
  const Ledger& ledger;
  const VersionVector& cut;
  bool behind(const Statement& st) const {
    auto it = cut.find(st.author);
    return it != cut.end() && st.seq <= it->second;
  }
};

// Bound claims of a job among those behind the cut (ClaimBook::bind_claims' rules).
std::set<const Statement*> bound_claims(const Cut& c, const Digest& job,
                                        const std::vector<const Statement*>& claims) {
  std::vector<const Statement*> order = claims;
  std::stable_sort(order.begin(), order.end(), [](const Statement* a, const Statement* b) {
    return std::get<Claim>(a->body).epoch < std::get<Claim>(b->body).epoch;
  });
  std::set<const Statement*> bound;
  for (const Statement* st : order) {
    const auto& cl = std::get<Claim>(st->body);
    if (c.ledger.equivocating(st->author)) continue;
    const Statement* adv = c.ledger.advert_at(st->author, st->seq);
    bool promised = false;
    if (adv != nullptr) {
      for (const auto& p : std::get<Advert>(adv->body).promises) {
        promised = promised || (p.stage_digest == cl.job.stage_digest && p.capacity > 0);
      }
    }
    if (!promised || cl.epoch == 0 || (cl.epoch == 1) == cl.supersedes.has_value()) continue;
    if (cl.epoch > 1 && !c.ledger.is_retired(cl.supersedes->author, cl.supersedes->seq)) {
      const Statement* prev = c.ledger.get(cl.supersedes->author, cl.supersedes->seq);
      const Claim* pc = prev != nullptr ? std::get_if<Claim>(&prev->body) : nullptr;
      if (pc == nullptr || !c.behind(*prev) || pc->job.job != job || pc->epoch + 1 != cl.epoch ||
          bound.count(prev) == 0) {
        continue;
      }
    }
    bound.insert(st);
  }
  return bound;
}

}  // namespace

std::optional<Horizon> compute_horizon(const Ledger& ledger, const VersionVector& cut,
                                       std::uint64_t number, const Digest& previous) {
  Horizon h;
  h.number = number;
  h.previous = previous;
  const VersionVector mine = ledger.version_vector();
  std::map<AgentKey, std::uint32_t> index;
  for (const auto& [author, seq] : cut) {
    if (seq == 0) continue;
    auto m = mine.find(author);
    if (m == mine.end() || seq > m->second || seq < ledger.floor(author)) return std::nullopt;
    auto prefix = ledger.prefix_digest(author, seq);
    if (!prefix) return std::nullopt;
    index[author] = static_cast<std::uint32_t>(h.cuts.size());
    bool member = ledger.advert_at(author, seq + 1) != nullptr && !ledger.equivocating(author);
    h.cuts.push_back(HorizonCut{author, seq, *prefix, member});
  }
  const Cut c{ledger, cut};
  std::map<std::uint32_t, std::vector<std::uint64_t>> retired;  // by cut index
  for (const auto& [job, js] : ledger.jobs()) {
    auto behind = [&](const std::vector<const Statement*>& v) {
      std::vector<const Statement*> out;
      for (const Statement* st : v) {
        if (c.behind(*st)) out.push_back(st);
      }
      return out;
    };
    std::vector<const Statement*> results = behind(js.results);
    if (results.empty()) continue;
    std::vector<const Statement*> claims = behind(js.claims);
    std::set<const Statement*> bound = bound_claims(c, job, claims);
    // Bound successful results behind the cut.
    std::vector<const Statement*> ok;
    std::uint32_t settled_epoch = 0;
    for (const Statement* st : results) {
      const auto& r = std::get<JobResult>(st->body);
      if (!r.ok || ledger.equivocating(st->author)) continue;
      bool is_bound = ledger.settled(st->author, st->seq);
      for (const Statement* cl : bound) {
        is_bound = is_bound || (cl->author == st->author && cl->seq < st->seq &&
                                std::get<Claim>(cl->body).epoch == r.epoch);
      }
      if (!is_bound) continue;
      ok.push_back(st);
      settled_epoch = std::max(settled_epoch, r.epoch);
    }
    if (ok.empty()) continue;
    std::set<const Statement*> keep(ok.begin(), ok.end());
    // A job settled by an earlier horizon keeps its settled results as its candidates:
    // later successful ones stay as evidence, unsettled (they would compete with them).
    const bool settled_before = std::any_of(ok.begin(), ok.end(), [&](const Statement* st) {
      return ledger.settled(st->author, st->seq);
    });
    for (const Statement* st : ok) {
      if (!settled_before) h.settled.push_back(HorizonRef{index.at(st->author), st->seq});
    }
    // A claim whose run ended behind the cut (its author's result or release of that
    // epoch is there too); one still open may bind a result published after the cut.
    std::set<std::pair<AgentKey, std::uint32_t>> ended;
    for (const Statement* st : results) ended.insert({st->author, statement_epoch(*st)});
    for (const Statement* st : js.releases) {
      if (c.behind(*st)) ended.insert({st->author, statement_epoch(*st)});
    }
    for (const Statement* st : claims) {
      const std::uint32_t e = statement_epoch(*st);
      if (e <= settled_epoch && ended.count({st->author, e})) {
        retired[index.at(st->author)].push_back(st->seq);
      }
    }
    for (const Statement* st : results) {
      if (!keep.count(st) && statement_epoch(*st) <= settled_epoch) {
        retired[index.at(st->author)].push_back(st->seq);
      }
    }
    for (const auto* v : {&js.releases, &js.accepts}) {
      for (const Statement* st : *v) {
        if (c.behind(*st) && statement_epoch(*st) <= settled_epoch) {
          retired[index.at(st->author)].push_back(st->seq);
        }
      }
    }
  }
  for (auto& [cut_index, seqs] : retired) {
    std::sort(seqs.begin(), seqs.end());
    for (std::size_t i = 0; i < seqs.size();) {
      std::size_t j = i;
      while (j + 1 < seqs.size() && seqs[j + 1] == seqs[j] + 1) ++j;
      h.retired.push_back(HorizonRange{cut_index, seqs[i], seqs[j]});
      i = j + 1;
    }
  }
  std::sort(h.settled.begin(), h.settled.end(), [](const HorizonRef& a, const HorizonRef& b) {
    return std::tie(a.cut, a.seq) < std::tie(b.cut, b.seq);
  });
  h.content = horizon_content(h);
  return h;
}

std::uint64_t horizon_retired_statements(const Horizon& h) {
  std::uint64_t n = 0;
  for (const auto& r : h.retired) n += r.last >= r.first ? r.last - r.first + 1 : 0;
  return n;
}

}  // namespace vow::promises
