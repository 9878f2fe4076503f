// The ledger horizon in the core (docs/storage.md, "The ledger horizon"): proposing,
// endorsing and applying horizons. The computation itself is promises/horizon.h.
#include <algorithm>

#include "promises/core_internal.h"
#include "promises/horizon.h"

namespace vow::promises {
namespace {

VersionVector cut_of(const Horizon& h) {
  VersionVector v;
  for (const auto& c : h.cuts) v[c.author] = c.seq;
  return v;
}

// A proposal whose content digest is what it says.
bool well_formed_proposal(const Horizon& h) {
  return !h.endorses && horizon_content(h) == h.content;
}

}  // namespace

void Core::Impl::note_horizon(const Statement& st) {
  const auto& h = std::get<Horizon>(st.body);
  if (h.number <= ledger.horizon_number()) return;  // behind us already
  horizon_by_number[h.number].push_back(&st);
  horizon_due = true;
  decisions_due = true;
}

std::vector<AgentKey> Core::Impl::horizon_members() const {
  std::vector<AgentKey> out;
  for (const auto& [author, advert] : ledger.adverts()) {
    if (!ledger.equivocating(author)) out.push_back(author);
  }
  return out;
}

// Two proposals of one number can both be in force only if some agent endorsed both:
// honest agents endorse one per number, so a quorum of more than half the other members
// keeps the chain single while fewer than that many endorsers are faulty.
std::size_t Core::Impl::horizon_quorum() const {
  std::size_t n = horizon_members().size();
  return n <= 1 ? 0 : (n - 1) / 2 + 1;
}

bool Core::Impl::designated_proposer(const AgentKey& agent, std::uint64_t number) const {
  Hasher h;
  h.update_field("vow-horizon-proposer-v1");
  h.update_u64(number);
  Digest key = h.finish();
  std::optional<AgentKey> best;
  Digest best_score;
  for (const AgentKey& a : horizon_members()) {
    Digest score = rendezvous_score(key, a);
    if (!best || score > best_score) {
      best = a;
      best_score = score;
    }
  }
  return best && *best == agent;
}

void Core::Impl::apply_horizon(const Statement& proposal) {
  const auto& h = std::get<Horizon>(proposal.body);
  for (const auto& r : h.retired) {
    if (r.cut >= h.cuts.size() || h.cuts[r.cut].author != config.key) continue;
    for (std::uint64_t seq = r.first; seq != 0 && seq <= r.last; ++seq) {
      const Statement* st = ledger.get(config.key, seq);
      if (const Claim* c = st ? std::get_if<Claim>(&st->body) : nullptr) {
        book.retire_own(c->job.job, c->epoch);
      }
      if (seq == r.last) break;
    }
  }
  std::set<Digest> changed = ledger.apply_horizon(h);
  book.invalidate();  // its summaries point at statements now gone
  for (const Digest& job : changed) {
    touch(job);
    job_index.dirty.insert(job);
  }
  horizon_by_number.erase(horizon_by_number.begin(),
                          horizon_by_number.upper_bound(ledger.horizon_number()));
  ++horizons_applied;
  event(EventKind::kHorizon, EventLevel::kInfo,
        "horizon " + std::to_string(h.number) + " applied: " +
            std::to_string(horizon_retired_statements(h)) + " statement(s) retired, " +
            std::to_string(h.settled.size()) + " result(s) settled");
}

void Core::Impl::horizon_step() {
  horizon_due = false;
  auto apply_in_force = [&] {
    for (;;) {
      const std::uint64_t n = ledger.horizon_number() + 1;
      auto at = horizon_by_number.find(n);
      if (at == horizon_by_number.end()) return;
      const Statement* chosen = nullptr;
      const std::vector<const Statement*> candidates = at->second;  // publish() appends
      for (const Statement* p : candidates) {
        const auto& h = std::get<Horizon>(p->body);
        if (h.previous != ledger.horizon_content() || !well_formed_proposal(h)) continue;
        StatementKey key{p->author, p->seq};
        if (!horizon_verified.count(key)) {
          bool holds = std::all_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
            return ledger.mark(c.author) >= c.seq;
          });
          if (holds) {
            auto mine = compute_horizon(ledger, cut_of(h), n, h.previous);
            bool same = mine && mine->content == h.content;
            horizon_verified[key] = same;
            if (!same) {
              event(EventKind::kHorizon, EventLevel::kWarn,
                    "horizon " + std::to_string(n) + " proposed by " +
                        p->author.hex().substr(0, 12) +
                        " differs from what this agent's ledger gives: not endorsed",
                    p->author);
            }
          }
        }
        auto v = horizon_verified.find(key);
        bool verified = v != horizon_verified.end() && v->second;
        if (verified && p->author != config.key && !horizon_endorsed.count(n) &&
            designated_proposer(p->author, n)) {
          horizon_endorsed.insert(n);
          Horizon e;
          e.number = n;
          e.previous = h.previous;
          e.endorses = StatementRef{p->author, p->seq};
          e.content = h.content;
          publish(std::move(e));
          at = horizon_by_number.find(n);  // publish() noted the endorsement
        }
        std::set<AgentKey> endorsers;
        for (const Statement* e : at->second) {
          const auto& eh = std::get<Horizon>(e->body);
          if (eh.endorses && eh.endorses->author == p->author && eh.endorses->seq == p->seq &&
              eh.content == h.content && e->author != p->author &&
              !ledger.equivocating(e->author)) {
            endorsers.insert(e->author);
          }
        }
        if (endorsers.size() < horizon_quorum()) continue;
        if (v != horizon_verified.end() && !v->second) continue;  // ours differs: never
        chosen = p;
        break;
      }
      if (chosen == nullptr) return;
      apply_horizon(*chosen);
    }
  };
  apply_in_force();
  // Propose the next one, if this agent is the one to.
  const std::uint64_t n = ledger.horizon_number() + 1;
  if (config.horizon_every == 0 || withdrawn || horizon_endorsed.count(n) ||
      !designated_proposer(config.key, n)) {
    return;
  }
  std::uint64_t beyond = 0;
  VersionVector cut = ledger.version_vector();
  for (const auto& [author, seq] : cut) beyond += seq - std::min(seq, ledger.floor(author));
  if (beyond < config.horizon_every) return;
  if (horizon_tried_at != 0 && ledger.vv_sum() < horizon_tried_at + config.horizon_every / 2) {
    return;
  }
  auto h = compute_horizon(ledger, cut, n, ledger.horizon_content());
  if (!h || h->retired.empty() || h->retired.size() > kMaxHorizonEntries ||
      h->settled.size() > kMaxHorizonEntries || h->cuts.size() > kMaxHorizonCuts) {
    horizon_tried_at = ledger.vv_sum();
    return;
  }
  horizon_tried_at = 0;
  horizon_endorsed.insert(n);
  std::size_t retired = horizon_retired_statements(*h);
  const Statement& st = publish(std::move(*h));
  horizon_verified[{st.author, st.seq}] = true;
  event(EventKind::kHorizon, EventLevel::kInfo,
        "horizon " + std::to_string(n) + " proposed: " + std::to_string(retired) +
            " statement(s) to retire");
  apply_in_force();
}

void Core::Impl::restore_horizons() {
  for (;;) {
    const std::uint64_t n = ledger.horizon_number() + 1;
    auto at = horizon_by_number.find(n);
    if (at == horizon_by_number.end()) return;
    // The proposal with the most endorsements: this agent applied it before (it drops
    // statements only for a horizon in force), unless it only endorsed it.
    const Statement* best = nullptr;
    std::size_t best_count = 0;
    for (const Statement* p : at->second) {
      const auto& h = std::get<Horizon>(p->body);
      if (h.previous != ledger.horizon_content() || !well_formed_proposal(h)) continue;
      std::set<AgentKey> endorsers;
      for (const Statement* e : at->second) {
        const auto& eh = std::get<Horizon>(e->body);
        if (eh.endorses && eh.endorses->author == p->author && eh.endorses->seq == p->seq &&
            eh.content == h.content && e->author != p->author) {
          endorsers.insert(e->author);
        }
      }
      if (best == nullptr || endorsers.size() > best_count) {
        best = p;
        best_count = endorsers.size();
      }
    }
    if (best == nullptr || best_count < horizon_quorum()) return;
    apply_horizon(*best);
  }
}

}  // namespace vow::promises
