// The ledger horizon in the core (docs/storage.md, "The ledger horizon"): proposing,
// endorsing and applying horizons. The computation itself is promises/horizon.h.
//
// A proposal lists its members (the authors with an advert at or below their cut) and is
// in force once every member but its proposer endorsed it. An agent endorses one
// proposal per number, and only one it computed itself from its own ledger, whose
// proposer is the member ranked first for that number, and whose members it knows as
// members too. Members are never dropped (an advert stays), so two proposals of one
// number share their smaller member set, whose agents endorse one of them: at most one
// is in force while any member is honest.
#include <algorithm>

#include "promises/assert.h"
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

Digest proposer_key(std::uint64_t number) {
  Hasher h;
  h.update_field("vow-horizon-proposer-v1");
  h.update_u64(number);
  return h.finish();
}

// The member of a proposal ranked first for its number: the only one whose proposal is
// endorsed.
std::optional<AgentKey> designated(const Horizon& h) {
  Digest key = proposer_key(h.number);
  std::optional<AgentKey> best;
  Digest best_score;
  for (const auto& c : h.cuts) {
    if (!c.member) continue;
    Digest score = rendezvous_score(key, c.author);
    if (!best || score > best_score) {
      best = c.author;
      best_score = score;
    }
  }
  return best;
}

}  // namespace

void Core::Impl::note_horizon(const Statement& st) {
  const auto& h = std::get<Horizon>(st.body);
  if (h.number <= ledger.horizon_number()) return;  // behind us already
  horizon_by_number[h.number].push_back(&st);
  decisions_due = true;
}

std::vector<AgentKey> Core::Impl::horizon_members() const {
  std::vector<AgentKey> out;
  for (const auto& [author, advert] : ledger.adverts()) {
    if (!ledger.equivocating(author)) out.push_back(author);
  }
  return out;
}

bool Core::Impl::knows_every_advert() const {
  const auto& adverts = ledger.adverts();
  for (const auto& [key, peer] : members.peers()) {
    if (peer.spoke && !adverts.count(key)) return false;
  }
  return true;
}

bool Core::Impl::heard_from_most_configured() const {
  std::size_t named = 1;  // this agent
  std::size_t heard = 1;
  for (const AgentKey& k : config.configured_peers) {
    if (k == config.key) continue;
    ++named;
    const Membership::Peer* p = members.find(k);
    if (p != nullptr && p->spoke) ++heard;
  }
  return 2 * heard > named;
}

bool Core::Impl::horizon_in_force(const Statement& proposal,
                                  const std::vector<const Statement*>& statements) const {
  const auto& h = std::get<Horizon>(proposal.body);
  std::set<AgentKey> endorsers;
  for (const Statement* e : statements) {
    const auto& eh = std::get<Horizon>(e->body);
    if (eh.endorses && eh.endorses->author == proposal.author &&
        eh.endorses->seq == proposal.seq && eh.content == h.content) {
      endorsers.insert(e->author);
    }
  }
  return std::all_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
    return !c.member || c.author == proposal.author || endorsers.count(c.author) != 0;
  });
}

namespace {

// Every digest lineage can name a maker of: the outputs of results held (and their
// entries) and the source versions held (and theirs); with `sources_only`, the latter.
std::set<Digest> lineage_digests(const Ledger& ledger, bool sources_only = false) {
  std::set<Digest> known;
  ledger.for_each([&](const Statement& st) {
    if (const auto* r = sources_only ? nullptr : std::get_if<JobResult>(&st.body)) {
      for (const auto& o : r->outputs) {
        known.insert(o.artifact.digest);
        for (const auto& e : o.artifact.entries) known.insert(e.digest);
      }
    } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
      known.insert(v->artifact.digest);
      for (const auto& e : v->artifact.entries) known.insert(e.digest);
    }
  });
  return known;
}

// Whether every input of `r` that `from` knows is among `known` (a gathered tree of a
// fan-out's outputs: each of its entries).
bool reads_known(const JobResult& r, const std::set<Digest>& from, const std::set<Digest>& known) {
  auto ok = [&](const Digest& d) { return from.count(d) == 0 || known.count(d) != 0; };
  return std::all_of(r.inputs.begin(), r.inputs.end(), [&](const NamedArtifact& in) {
    const auto& es = in.artifact.entries;
    return ok(in.artifact.digest) &&
           std::all_of(es.begin(), es.end(), [&](const TreeEntry& e) { return ok(e.digest); });
  });
}

}  // namespace

void Core::Impl::apply_horizon(const Statement& proposal) {
  const auto& h = std::get<Horizon>(proposal.body);
  // Each range costs the statements held in it (a checkpoint's cover slots retired long
  // ago).
  auto each_retired_held = [&](auto&& f) {
    for (const auto& r : h.retired) {
      if (r.cut >= h.cuts.size() || r.first == 0 || r.last < r.first) continue;
      ledger.for_each_in(h.cuts[r.cut].author, r.first, r.last, f);
    }
  };
  each_retired_held([&](const Statement& st) {
    if (st.author != config.key) return;
    if (const Claim* c = std::get_if<Claim>(&st.body)) book.retire_own(c->job.job, c->epoch);
  });
  // An agent that holds every statement behind the cut (it computed the proposal
  // itself) sees no canonical result change; one that took it on its endorsers' word may
  // learn of results bound there that it could not bind itself.
  const bool checked = horizon_verified[{proposal.author, proposal.seq}];
  std::map<Digest, StatementKey> canonical_before;
  if (config.check_horizons && checked) {
    // Those decided behind the cut (a result published after it may lose to a settled
    // one: the horizon fixes the canonical result of the jobs it settles).
    VersionVector cut;
    for (const auto& c : h.cuts) cut[c.author] = c.seq;
    for (const auto& [job, js] : ledger.jobs()) {
      const Statement* c = book.canonical(job);
      if (c == nullptr) continue;
      auto at = cut.find(c->author);
      if (at != cut.end() && c->seq <= at->second) canonical_before[job] = {c->author, c->seq};
    }
  }
  // The jobs planned now: a superseded job's canonical result may go only if the plan
  // does not have it (the plan at the cut did not; nor may the plan now).
  std::set<Digest> planned;
  // Held beyond the cut: a source version or pipeline that may make a job the
  // cut superseded current again (a source changed back: an agent that applies the
  // horizon only after it holds that version plans the job again, and runs it).
  bool plan_moved = false;
  if (config.check_horizons && checked) {
    const VersionVector cut = cut_of(h);
    for (const auto& [author, mark] : ledger.version_vector()) {
      auto at = cut.find(author);
      const std::uint64_t from = at == cut.end() ? 1 : at->second + 1;
      if (from > mark) continue;
      ledger.for_each_in(author, from, mark, [&](const Statement& st) {
        const auto k = st.kind();
        plan_moved =
            plan_moved || k == StatementKind::kSourceVersion || k == StatementKind::kPipeline;
      });
    }
  }
  if (config.check_horizons && checked && !plan_moved) {
    ensure_plan();
    if (plan_dirty) {
      // Put off while this agent catches up (ensure_plan): the check reads the plan its
      // ledger gives now, not the one made before the pull brought the newer versions.
      for (const auto& [job, pj] : plan_now().jobs) planned.insert(job);
    } else {
      for (const auto& [job, pj] : plan->jobs) planned.insert(job);
    }
  }
  // The jobs it settles or retires statements of, and their canonical result before.
  // Before a plan was made (a restart restoring its horizons) there is nothing the plan
  // knows to bring up to date: the first plan reads them all (reading each job's
  // canonical result before and after each horizon was two fifths of restoring 60).
  std::map<Digest, std::optional<StatementKey>> touched;
  auto note_job = [&](const Digest& job) {
    if (!plan || touched.count(job)) return;
    const Statement* c = book.canonical(job);
    touched[job] = c != nullptr ? std::optional<StatementKey>({c->author, c->seq}) : std::nullopt;
  };
  auto note_touched = [&](const AgentKey& author, std::uint64_t seq) {
    if (!plan) return;
    const Statement* st = ledger.get(author, seq);
    if (auto job = st != nullptr ? st->job() : std::nullopt) note_job(*job);
  };
  for (const auto& r : h.settled) {  // a checkpoint names those settled before too
    if (r.cut < h.cuts.size() && !ledger.settled(h.cuts[r.cut].author, r.seq)) {
      note_touched(h.cuts[r.cut].author, r.seq);
    }
  }
  if (plan) each_retired_held([&](const Statement& st) { note_touched(st.author, st.seq); });
  // Jobs with a claim whose predecessor is not held: the horizon may retire it, which
  // earns the claim its epoch, and a result it binds may be canonical then.
  for (const Digest& job : book.missing_predecessor()) note_job(job);
  // The current version of every dataset, which retiring old ones must not change; and
  // the results whose every input is an output held or in a source version held, which
  // must stay so (docs/storage.md, "Old source versions").
  std::map<Ledger::Dataset, StatementKey> sources_before;
  std::vector<StatementKey> kept;
  std::set<Digest> from_sources;
  if (config.check_horizons && checked) {
    for (const auto& [dataset, st] : ledger.sources())
      sources_before[dataset] = {st->author, st->seq};
    from_sources = lineage_digests(ledger, /*sources_only=*/true);
    const VersionVector cut = cut_of(h);
    ledger.for_each([&](const Statement& st) {
      const auto* r = std::get_if<JobResult>(&st.body);
      auto at = cut.find(st.author);
      // Behind the cut: a result above it (a late run of a superseded job) is not one the
      // horizon decided on.
      if (r != nullptr && r->ok && at != cut.end() && st.seq <= at->second) {
        kept.push_back({st.author, st.seq});
      }
    });
  }
  const std::uint64_t retired_before = ledger.retired_count();
  std::set<Digest> changed = ledger.apply_horizon(h);
  const std::uint64_t retired_now = ledger.retired_count() - retired_before;
  // Source versions it retired (old ones, or an equivocator's) leave the counts of
  // source bindings: they are made again (vow status, /metrics).
  if (retired_now > 0) job_index.sources_dirty = true;
  if (h.checkpoint) {
    horizon_entries_since_checkpoint = 0;
  } else {
    horizon_entries_since_checkpoint += h.retired.size() + h.settled.size() + h.bases.size();
  }
  // Those summaries point at statements now gone; a claim whose predecessor was not
  // held may have earned its epoch (its predecessor retired): its job is looked at again
  // too (the job index counted the claim unearned; at a third of seeds' horizons until
  // an advert or source version made the index look at every job).
  for (const Digest& job : book.invalidate(changed)) changed.insert(job);
  if (config.check_horizons && checked) {
    std::map<Ledger::Dataset, StatementKey> sources_after;
    for (const auto& [dataset, st] : ledger.sources())
      sources_after[dataset] = {st->author, st->seq};
    VOW_ASSERT(sources_after == sources_before,
               "horizon %llu changed the current version of a source",
               static_cast<unsigned long long>(h.number));
    // What a result behind the cut that stays read from a source version held before
    // has a maker still (the same version, a newer one holding it, or a result).
    const std::set<Digest> known = lineage_digests(ledger);
    for (const auto& [author, seq] : kept) {
      const Statement* st = ledger.get(author, seq);
      VOW_ASSERT(st == nullptr || reads_known(std::get<JobResult>(st->body), from_sources, known),
                 "horizon %llu retired the source version a result it kept read (job %s)",
                 static_cast<unsigned long long>(h.number),
                 st ? std::get<JobResult>(st->body).job.job.short_hex().c_str() : "");
    }
  }
  if (config.check_horizons) {
    for (const auto& [job, ref] : canonical_before) {
      const Statement* c = book.canonical(job);
      // A superseded job's statements behind the cut went; one published after the cut
      // (a run that had not ended there) may be its canonical result now.
      if (h.superseded && ledger.is_retired(ref.first, ref.second)) {
        VOW_ASSERT(!planned.count(job),
                   "horizon %llu retired the canonical result of job %s, which is planned",
                   static_cast<unsigned long long>(h.number), job.short_hex().c_str());
        continue;
      }
      VOW_ASSERT(c != nullptr && c->author == ref.first && c->seq == ref.second,
                 "horizon %llu changed the canonical result of job %s",
                 static_cast<unsigned long long>(h.number), job.short_hex().c_str());
    }
  }
  for (const Digest& job : changed) {
    rerank(job);
    job_index.dirty.insert(job);
    results_changed.insert(job);
  }
  // A settled result may be canonical here only now (its claim never reached this
  // agent): what the plan knows of each job the horizon touched is brought up to date
  // (the plan is made again only if that needs it). One that retires superseded jobs
  // makes the plan again.
  if (h.superseded) {
    replan("horizon_superseded");
    // Superseded jobs whose runs were still open at its cut wait for the next plan that
    // drops a job; those superseded only since the last horizon's cut, for the next
    // horizon, which retires superseded jobs too.
    auto w = superseded_waiting.find(h.number);
    superseded_pending = w != superseded_waiting.end() && w->second;
  }
  for (const auto& [job, was] : touched) {
    const Statement* c = book.canonical(job);
    std::optional<StatementKey> now;
    if (c != nullptr) now = StatementKey{c->author, c->seq};
    if (now == was) continue;
    if (!was) {
      note_canonical_result(job);
    } else {
      replan("horizon_changed");
    }
  }
  decisions_due = true;
  horizon_by_number.erase(horizon_by_number.begin(),
                          horizon_by_number.upper_bound(ledger.horizon_number()));
  superseded_waiting.erase(superseded_waiting.begin(),
                           superseded_waiting.upper_bound(ledger.horizon_number()));
  event(EventKind::kHorizon, EventLevel::kInfo,
        "horizon " + std::to_string(h.number) + (h.checkpoint ? " (a checkpoint)" : "") +
            " applied: " + std::to_string(retired_now) + " statement(s) retired, " +
            std::to_string(h.settled.size()) + " result(s) " +
            (h.checkpoint ? "settled in all" : "settled"));
}

const Statement* Core::Impl::next_in_force(bool verify) {
  const std::uint64_t n = ledger.horizon_number() + 1;
  if (auto at = horizon_by_number.find(n); at != horizon_by_number.end()) {
    const std::vector<const Statement*> candidates = at->second;  // publish() appends
    for (const Statement* p : candidates) {
      const auto& h = std::get<Horizon>(p->body);
      if (h.previous != ledger.horizon_content() || !well_formed_proposal(h)) continue;
      if (!verify) {
        if (horizon_in_force(*p, at->second)) return p;
        continue;
      }
      StatementKey key{p->author, p->seq};
      // A proposal that differed is computed again once this agent learns of another
      // equivocator (who is a member, and which results count, depend on it).
      if (auto was = horizon_verified.find(key);
          was != horizon_verified.end() && !was->second &&
          horizon_verified_proofs[key] != ledger.proofs().size()) {
        horizon_verified.erase(was);
      }
      if (!horizon_verified.count(key)) {
        bool holds = std::all_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
          return ledger.mark(c.author) >= c.seq;
        });
        if (holds) {
          // Only a policy this agent allows: one that retires superseded jobs is
          // endorsed only by an agent configured to retire them.
          auto mine = h.superseded && !config.retire_superseded
                          ? std::nullopt
                          : compute_horizon(ledger, cut_of(h), n, h.previous, h.superseded,
                                            &superseded_waiting[n]);
          // A checkpoint states the same as the horizon it stands for, in full.
          if (mine && h.checkpoint) mine = checkpoint_of(ledger, *mine);
          bool same = mine && mine->content == h.content;
          horizon_verified[key] = same;
          horizon_verified_proofs[key] = ledger.proofs().size();
          if (!same && h.superseded && !config.retire_superseded) {
            event(EventKind::kHorizon, EventLevel::kWarn,
                  "horizon " + std::to_string(n) + " proposed by " +
                      p->author.hex().substr(0, 12) +
                      " retires superseded jobs, which this agent's [agent] "
                      "retire_superseded = false does not allow: not endorsed",
                  p->author);
          } else if (!same) {
            event(EventKind::kHorizon, EventLevel::kWarn,
                  "horizon " + std::to_string(n) + " proposed by " +
                      p->author.hex().substr(0, 12) +
                      " differs from what this agent's ledger gives: not endorsed (for as "
                      "long as it knows of no other equivocator)",
                  p->author);
          }
        }
      }
      auto v = horizon_verified.find(key);
      bool verified = v != horizon_verified.end() && v->second;
      if (verified && p->author != config.key && !horizon_endorsed.count(n) &&
          designated(h) == p->author) {
        std::vector<AgentKey> mine = horizon_members();
        bool known = std::all_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
          return !c.member || std::binary_search(mine.begin(), mine.end(), c.author);
        });
        if (known && knows_every_advert() && heard_from_most_configured()) {
          horizon_endorsed.insert(n);
          Horizon e;
          e.number = n;
          e.previous = h.previous;
          e.endorses = StatementRef{p->author, p->seq};
          e.content = h.content;
          publish(std::move(e));
        }
      }
      if (!horizon_in_force(*p, horizon_by_number[n])) continue;
      if (v != horizon_verified.end() && !v->second) {
        // Ours differs. A member never applies it (nor endorsed it, so it is in force
        // only if this agent is no member). An agent that is no member has no say: it
        // follows the members, or it would stay behind the chain for good (say, it
        // knew of an equivocator they did not when they agreed).
        const bool member = std::any_of(h.cuts.begin(), h.cuts.end(), [&](const HorizonCut& c) {
          return c.member && c.author == config.key;
        });
        if (member) continue;
        event(EventKind::kHorizon, EventLevel::kWarn,
              "horizon " + std::to_string(n) + " differs from what this agent's ledger "
              "gives; applied on its members' word (this agent is not one of them)");
      }
      return p;
    }
  }
  // A checkpoint further on needs no horizon before it: a joiner, an agent back from
  // away whose peers retired the horizons it lacks, a restart whose ledger holds none
  // before it. Never one this agent is a member of without having endorsed it (in force
  // needs its endorsement).
  for (auto it = horizon_by_number.rbegin(); it != horizon_by_number.rend() && it->first > n;
       ++it) {
    for (const Statement* p : it->second) {
      const auto& h = std::get<Horizon>(p->body);
      if (h.checkpoint && well_formed_proposal(h) && horizon_in_force(*p, it->second)) return p;
    }
  }
  return nullptr;
}

void Core::Impl::apply_horizons_in_force() {
  while (const Statement* next = next_in_force(/*verify=*/true)) apply_horizon(*next);
}

void Core::Impl::horizon_step() {
  apply_horizons_in_force();
  // Propose the next one, if this agent is the one to.
  const std::uint64_t n = ledger.horizon_number() + 1;
  if (config.horizon_every == 0 || withdrawn || horizon_endorsed.count(n)) return;
  // Every decision pass comes here: what it reads first costs nothing per author. A
  // horizon reads the jobs active since the last one (Ledger::active_jobs), so one every
  // horizon_every statements costs the same however large the ledger. One that retires
  // superseded jobs reads every job held (and makes the plan at its cut): this agent
  // proposes one only when jobs may have become superseded since it last did
  // (superseded_pending; docs/storage.md).
  const std::uint64_t every = config.horizon_every;
  if (ledger.vv_sum() < ledger.floor_sum() + every) return;
  if (horizon_tried_at != 0 && ledger.vv_sum() < horizon_tried_at + every / 2) return;
  // Not before most peers its files name were heard (cheap: asked again each pass, so
  // the first horizon comes as soon as they are, not after more statements).
  if (!heard_from_most_configured()) return;
  // Each author is cut at its last statement held that is not an advert: whether an
  // advert is void depends on the seq after it, which agents may not all hold yet, and
  // so does the prefix digest there.
  VersionVector cut;
  for (const auto& [author, mark] : ledger.version_vector()) {
    for (std::uint64_t seq = mark; seq > ledger.floor(author); --seq) {
      const Statement* st = ledger.get(author, seq);
      if (st != nullptr && st->kind() != StatementKind::kAdvert) {
        cut[author] = seq;
        break;
      }
    }
  }
  // Only the member ranked first proposes: the others need not compute it now (each
  // computes it when the proposal arrives, to endorse it).
  Horizon members;
  members.number = n;
  for (const auto& [author, seq] : cut) {
    bool member = ledger.advert_at(author, seq + 1) != nullptr && !ledger.equivocating(author);
    members.cuts.push_back(HorizonCut{author, seq, {}, member});
  }
  if (designated(members) != config.key || !knows_every_advert()) {
    horizon_tried_at = ledger.vv_sum();
    return;
  }
  const bool superseded = config.retire_superseded && superseded_pending;
  auto h = compute_horizon(ledger, cut, n, ledger.horizon_content(), superseded,
                           &superseded_waiting[n]);
  if (!h || designated(*h) != config.key || h->retired.empty() ||
      h->retired.size() > kMaxHorizonEntries || h->settled.size() > kMaxHorizonEntries ||
      h->cuts.size() > kMaxHorizonCuts) {
    horizon_tried_at = ledger.vv_sum();
    return;
  }
  horizon_tried_at = 0;
  horizon_endorsed.insert(n);
  std::size_t retired = horizon_retired_statements(*h);
  // A checkpoint in its place once the horizons since the last one listed about as many
  // entries as it would (the settled results and the statements kept; by default): the
  // horizon statements held then stay within twice a checkpoint (docs/storage.md,
  // "Checkpoints").
  const std::uint64_t entries = h->retired.size() + h->settled.size() + h->bases.size();
  if (config.checkpoint_percent != 0 &&
      (horizon_entries_since_checkpoint + entries) * 100 >=
          (ledger.size() + ledger.settled_count()) * config.checkpoint_percent) {
    VersionVector whole = cut;  // every author with a floor is cut: at it, if nothing since
    for (const auto& [author, fl] : ledger.floors()) {
      if (fl != 0) whole.emplace(author, fl);
    }
    auto delta = compute_horizon(ledger, whole, n, ledger.horizon_content(), superseded);
    auto cp = delta ? checkpoint_of(ledger, *delta) : std::nullopt;
    // About 24 bytes a range, 56 a settled result, 80 a cut, 64 a line base.
    const std::uint64_t bytes = cp ? 24 * cp->retired.size() + 56 * cp->settled.size() +
                                         80 * cp->cuts.size() + 64 * cp->bases.size()
                                   : 0;
    if (cp && designated(*cp) == config.key && bytes < kMaxCheckpointBytes) h = std::move(cp);
  }
  const bool checkpoint = h->checkpoint;
  const Statement& st = publish(std::move(*h));
  horizon_verified[{st.author, st.seq}] = true;
  event(EventKind::kHorizon, EventLevel::kInfo,
        "horizon " + std::to_string(n) + (checkpoint ? " (a checkpoint)" : "") +
            " proposed: " + std::to_string(retired) + " statement(s) to retire");
  apply_horizons_in_force();
}

void Core::Impl::restore_horizons() {
  while (const Statement* next = next_in_force(/*verify=*/false)) apply_horizon(*next);
}

}  // namespace vow::promises
