// The hostile host of the simulator (world.h, docs/coordination.md section 11): a host
// with a trusted key (its statements are validly signed, so the network delivers them)
// that is not an Agent and keeps no rule. During the fault window it hijacks sources
// (versions of a dataset it does not provide, huge or jumping versions, a provider that
// lies in line), publishes results without claims and at epoch 0, claims at epochs it
// did not earn (2^32-1, 0), equivocates (two statements with one seq, one to each half
// of the mesh, and one behind an advert that becomes void), floods (statements that do
// not count, superseding adverts), lies about void slots of honest agents and sends
// fields over their limits (a 1 MiB name, a 64 KiB error text). It draws from a random source of its own, and sends without
// loss or partition, so every agent hears it. Its invariants are checked at the end.
#include <algorithm>
#include <limits>

#include "promises/limits.h"

#include "tests/sim/world.h"

namespace vow::sim {
namespace {

constexpr int kHostileActsMin = 6;            // actions per seed: at least this many,
constexpr int kHostileActsMax = 12;           // at most this many
constexpr int kHostileFloodStatements = 100;  // statements in one flood
// Claims one honest agent set may make of one job in a run (retries, takeovers after
// crashes and partitions, regeneration, fences): more means claiming loops.
constexpr std::size_t kMaxClaimsPerJob = 24;
// Statements a ledger may hold at the end of a run: a base (adverts, definitions, source
// versions, and the hostile host's at most about 1 300) and so many per planned job
// (claims, accepts, results of its attempts, takeovers and regenerations).
constexpr std::size_t kLedgerBudgetBase = 2'000;
constexpr std::size_t kLedgerBudgetPerJob = 40;
constexpr int kHostileAdvertFlood = 60;  // superseding adverts in one flood
// Hostile statements that can count (its first advert, a lying provider's line of at
// most 3, an equivocation proof): everything else it holds was paid from its budget.
constexpr std::size_t kHostileCountable = 10;

std::uint64_t draw(std::mt19937_64& rng, std::uint64_t n) { return n == 0 ? 0 : rng() % n; }

}  // namespace

void World::make_hostile() {
  Digest k = hash_of({"hostile", u64s(opt_.seed)});
  std::copy(k.bytes.begin(), k.bytes.end(), hostile_key_.bytes.begin());
  int acts =
      kHostileActsMin + static_cast<int>(draw(hostile_rng_, kHostileActsMax - kHostileActsMin + 1));
  // The first act publishes its advert (it provides cfg, promises no stage).
  schedule(1, Ev{EvType::kHostile});
  for (int k = 0; k < acts; ++k) {
    schedule(50 + static_cast<std::int64_t>(draw(hostile_rng_, kFaultWindowMs - 100)),
             Ev{EvType::kHostile});
  }
}

Statement World::hostile_statement(StatementBody body) {
  Statement st;
  st.author = hostile_key_;
  st.seq = ++hostile_seq_;
  st.wall_unix_ms = wall();
  st.body = std::move(body);
  st.signed_form = sim_sign(st);
  ++result_.hostile_statements;
  return st;
}

void World::hostile_send(const std::vector<Statement>& statements, int to,
                         std::vector<VoidRange> voids) {
  auto m = std::make_shared<promises::Message>();
  m->body = promises::StatementBatch{statements, std::move(voids)};
  for (int j = 0; j < opt_.agents; ++j) {
    if (to >= 0 && j != to) continue;
    Ev ev{EvType::kDeliver};
    ev.agent = j;
    ev.from = -1;
    ev.message = m;
    schedule(now_ + 1 + static_cast<std::int64_t>(draw(hostile_rng_, 5)), ev);
  }
}

void World::hostile_act() {
  if (hostile_seq_ == 0) {
    Advert adv{"hostile", {}, {}, {AdvertSource{pipeline_.name, "cfg"}}};
    hostile_send({hostile_statement(std::move(adv))}, -1);
    trace("hostile advert");
    return;
  }
  // A job to aim at: one some agent plans now.
  std::vector<JobRef> jobs;
  for (auto& h : hosts_) {
    if (!h.up) continue;
    for (const auto& [id, job] : h.agent->core().plan().jobs) jobs.push_back(job.ref);
    break;
  }
  JobRef target;
  if (!jobs.empty()) target = jobs[draw(hostile_rng_, jobs.size())];
  auto bogus = [&](std::string_view what) {
    ArtifactRef r;
    r.digest = hash_of({"hostile", what, u64s(hostile_seq_)});
    r.size_bytes = 1;
    return r;
  };
  auto result = [&](std::uint32_t epoch, std::string_view what) {
    JobResult r;
    r.job = target;
    r.epoch = epoch;
    r.ok = true;
    r.outputs = {NamedArtifact{"o0", bogus(what)}};
    return r;
  };
  std::uint64_t attack = draw(hostile_rng_, 12);
  if (attack == 10 && (hostile_bomb_ || jobs.empty())) attack = 7;
  if (attack == 3 && hostile_equivocated_) attack = 4;
  switch (attack) {
    case 0: {  // source hijack: a dataset it does not provide, and a jump in its own
      std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
      hostile_send({hostile_statement(SourceVersion{pipeline_.name, "src",
                                                    top - draw(hostile_rng_, 3), bogus("src")}),
                    hostile_statement(SourceVersion{pipeline_.name, "cfg",
                                                    2 + draw(hostile_rng_, 1'000), bogus("cfg")})},
                   -1);
      trace("hostile source hijack");
      return;
    }
    case 1:  // results without a claim, at epoch 0 (first in the min-register) and 1
      hostile_send({hostile_statement(result(0, "r0")), hostile_statement(result(1, "r1"))}, -1);
      trace("hostile results without claims");
      return;
    case 2: {  // claims at epochs it did not earn
      Claim top{target, std::numeric_limits<std::uint32_t>::max(), 0, std::nullopt};
      Claim zero{target, 0, 0, std::nullopt};
      hostile_send({hostile_statement(top), hostile_statement(zero)}, -1);
      trace("hostile claims at epochs 2^32-1 and 0");
      return;
    }
    case 3: {  // equivocation: one seq, two statements, one to each half of the mesh
      Statement a = hostile_statement(result(0, "left"));
      Statement b = a;
      b.body = result(0, "right");
      b.signed_form = sim_sign(b);
      ++result_.hostile_statements;
      for (int j = 0; j < opt_.agents; ++j) hostile_send({j % 2 == 0 ? a : b}, j);
      hostile_equivocated_ = true;
      hostile_equivocation_seq_ = a.seq;
      trace("hostile equivocation at seq " + u64s(a.seq));
      return;
    }
    case 4: {  // a flood of claims of jobs that do not exist and of datasets nobody has
      std::vector<Statement> flood;
      for (int k = 0; k < kHostileFloodStatements; ++k) {
        if (k % 2 == 0) {
          JobRef fake = target;
          fake.job = hash_of({"hostile-job", u64s(hostile_seq_)});
          flood.push_back(hostile_statement(Claim{fake, 1, 0, std::nullopt}));
        } else {
          flood.push_back(hostile_statement(
              SourceVersion{pipeline_.name, "flood-" + u64s(hostile_seq_), 1, bogus("flood")}));
        }
      }
      hostile_send(flood, -1);
      trace("hostile flood");
      return;
    }
    case 6: {  // fields over their limits: refused by every agent, never stored
      Advert big{std::string(std::size_t{1} << 20, 'n'), {}, {}, {}};
      JobResult r = result(1, "long error");
      r.ok = false;
      r.outputs.clear();
      r.error = std::string(std::size_t{64} << 10, 'e');
      hostile_send({hostile_statement(std::move(big)), hostile_statement(std::move(r))}, -1);
      trace("hostile fields over their limits");
      return;
    }
    case 8: {  // lies about void slots: an honest agent's statements below its advert
      const promises::Ledger* ledger = hosts_[0].up ? &hosts_[0].agent->core().ledger() : nullptr;
      int victim = static_cast<int>(draw(hostile_rng_, static_cast<std::uint64_t>(opt_.agents)));
      if (ledger == nullptr) return;
      auto adv = ledger->adverts().find(host(victim).key);
      if (adv == ledger->adverts().end() || adv->second->seq < 2) return;
      std::uint64_t top = adv->second->seq - 1;
      std::uint64_t first = top > 5 ? top - 5 : 1;
      hostile_send({}, -1, {VoidRange{host(victim).key, first, top}});
      trace("hostile void hint for a" + std::to_string(victim) + " " + u64s(first) + "-" +
            u64s(top));
      return;
    }
    case 9: {  // equivocation behind a void advert: advert s, advert s + 1 (s is void
               // where both arrive first), and a result at s to half of the mesh
      Statement a = hostile_statement(Advert{"hostile", {}, {}, {AdvertSource{pipeline_.name, "cfg"}}});
      Statement b = hostile_statement(Advert{"hostile+", {}, {}, {AdvertSource{pipeline_.name, "cfg"}}});
      Statement c = a;
      c.body = result(0, "behind-void");
      c.signed_form = sim_sign(c);
      ++result_.hostile_statements;
      hostile_send({a, b}, -1);
      for (int j = 1; j < opt_.agents; j += 2) hostile_send({c}, j);
      trace("hostile equivocation behind a void advert at seq " + u64s(a.seq));
      return;
    }
    case 10: {  // a tree bomb: it promises the target's stage, claims the job at epoch 1
                // and gives a result whose output is a tree that expands to 2^24 entries
                // (each level names the one below twice); it serves the bytes itself
      ArtifactRef level = bogus("bomb-leaf");
      add_ref(level);
      hostile_store_.insert(level.digest);
      for (int depth = 0; depth < 24; ++depth) {
        EntryKind kind = depth == 0 ? EntryKind::kFile : EntryKind::kTree;
        ArtifactRef up;
        up.digest = hash_of({"hostile-bomb", u64s(hostile_seq_), u64s(static_cast<std::uint64_t>(depth))});
        up.is_tree = true;
        up.size_bytes = 2 * level.size_bytes;
        up.entries = {TreeEntry{"a", kind, level.digest}, TreeEntry{"b", kind, level.digest}};
        add_ref(up);
        hostile_store_.insert(up.digest);
        level = up;
      }
      hostile_bomb_ = level.digest;
      hostile_stage_ = target.stage;
      Advert adv{"hostile",
                 {},
                 {AdvertPromise{target.pipeline, target.stage, target.stage_digest, 1}},
                 {AdvertSource{pipeline_.name, "cfg"}}};
      Statement a = hostile_statement(std::move(adv));
      Statement c = hostile_statement(Claim{target, 1, 0, std::nullopt});
      JobResult r = result(1, "bomb");
      r.outputs = {NamedArtifact{"o0", level}};
      hostile_send({a, c, hostile_statement(std::move(r))}, -1);
      trace("hostile tree bomb " + level.digest.short_hex() + " for job " + target.job.short_hex());
      return;
    }
    case 11: {  // honest results relayed with forged bytes attached for their small
                // outputs: every agent drops the bytes, and fetches the outputs from
                // their holders when it needs them
      const promises::Core* core = hosts_[0].up ? &hosts_[0].agent->core() : nullptr;
      if (core == nullptr) return;
      promises::StatementBatch batch;
      for (const auto& [id, js] : core->ledger().jobs()) {
        const Statement* canon = core->canonical(id);
        if (canon == nullptr || canon->author == hostile_key_) continue;
        const auto& r = std::get<JobResult>(canon->body);
        bool forged = false;
        for (const auto& o : r.outputs) {
          if (o.artifact.is_tree || o.artifact.size_bytes > promises::kMaxAttachedBytes) continue;
          // Aimed where it can bite: an output some live agent does not hold yet.
          bool missing = false;
          for (const auto& h : hosts_) missing = missing || (h.up && !h.store.count(o.artifact.digest));
          if (!missing) continue;
          batch.attached.push_back(promises::Attached{o.artifact.digest, "forged"});
          forged = true;
        }
        if (forged) batch.statements.push_back(*canon);
        if (batch.statements.size() >= 4) break;
      }
      if (batch.statements.empty()) return;
      result_.hostile_attachments += batch.attached.size();
      auto m = std::make_shared<promises::Message>();
      m->body = std::move(batch);
      for (int j = 0; j < opt_.agents; ++j) {
        Ev ev{EvType::kDeliver};
        ev.agent = j;
        ev.from = -1;
        ev.message = m;
        schedule(now_ + 1 + static_cast<std::int64_t>(draw(hostile_rng_, 5)), ev);
      }
      trace("hostile forged attachments");
      return;
    }
    case 7: {  // superseding adverts: none counts but the latest, each one costs
      std::vector<Statement> flood;
      for (int k = 0; k < kHostileAdvertFlood; ++k) {
        flood.push_back(hostile_statement(Advert{"hostile-" + u64s(hostile_seq_), {}, {},
                                                 {AdvertSource{pipeline_.name, "cfg"}}}));
      }
      hostile_send(flood, -1);
      trace("hostile advert flood");
      return;
    }
    default: {  // a provider that lies, in its own line: outvoted by the honest two
      std::uint64_t next = 1;
      const promises::Ledger* ledger = hosts_[0].up ? &hosts_[0].agent->core().ledger() : nullptr;
      if (ledger != nullptr) {
        next = ledger->own_source_version(hostile_key_, pipeline_.name, "cfg") + 1;
      }
      if (next > 3) next = 3;  // a repeat once in a while: does not count either
      hostile_send({hostile_statement(SourceVersion{pipeline_.name, "cfg", next, bogus("lie")})},
                   -1);
      trace("hostile lying provider, version " + u64s(next));
      return;
    }
  }
}

std::set<std::string> World::poisoned_stages() {
  std::set<std::string> out;
  if (!hostile_bomb_ || !hosts_[0].up) return out;
  promises::Core& c = hosts_[0].agent->core();
  for (const auto& [id, js] : c.ledger().jobs()) {
    const Statement* canon = c.canonical(id);
    if (canon == nullptr || canon->author != hostile_key_) continue;
    out.insert(std::get<JobResult>(canon->body).job.stage);
  }
  // Stages only read earlier ones: one pass in order finds every one downstream.
  for (const auto& s : pipeline_.stages) {
    for (const auto& in : s.inputs) {
      if (out.count(in.stage)) out.insert(s.name);
    }
    if (s.foreach && out.count(s.foreach->stage)) out.insert(s.name);
  }
  return out;
}

// What the hostile host (or any agent) cannot have caused, checked in every seed.
void World::check_hostile_end() {
  promises::Core& ref = hosts_[0].agent->core();
  auto honest = [&](const AgentKey& k) { return index_of(k) >= 0; };
  std::vector<AgentKey> equivocators = ref.binding_report().equivocators;
  std::map<promises::Ledger::Dataset, std::pair<AgentKey, std::uint64_t>> sources;
  for (const auto& [dataset, st] : ref.ledger().sources()) sources[dataset] = {st->author, st->seq};
  const std::size_t budget = kLedgerBudgetBase + kLedgerBudgetPerJob * ref.plan().jobs.size();
  // Both statements of the equivocation are still held somewhere (an agent that got one
  // may have lost it with a full disk before persisting it): every agent holds the proof.
  std::set<Digest> variants;
  for (auto& h : hosts_) {
    const promises::Ledger& l = h.agent->core().ledger();
    if (const Statement* st = l.get(hostile_key_, hostile_equivocation_seq_)) {
      variants.insert(promises::statement_digest(*st));
    }
    if (auto p = l.proofs().find(hostile_key_); p != l.proofs().end()) {
      variants.insert(promises::statement_digest(p->second.second));
    }
  }
  bool proven = hostile_equivocation_seq_ != 0 && variants.size() >= 2;
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    promises::Core& c = hosts_[i].agent->core();
    std::string who = "a" + std::to_string(i);
    if (proven && !c.equivocating(hostile_key_)) {
      fail(who + " does not know that the hostile host equivocated");
    }
    // Converged: the same equivocators and the same source versions.
    if (c.binding_report().equivocators != equivocators) {
      fail(who + " disagrees with a0 on who equivocated");
    }
    std::map<promises::Ledger::Dataset, std::pair<AgentKey, std::uint64_t>> mine;
    for (const auto& [dataset, st] : c.ledger().sources()) mine[dataset] = {st->author, st->seq};
    if (mine != sources) fail(who + " disagrees with a0 on the source versions");
    // Nothing canonical comes from an unbound statement or from the hostile host.
    for (const auto& [dataset, st] : c.ledger().sources()) {
      if (!honest(st->author) ||
          c.ledger().source_binding(*st) != promises::SourceBinding::kCounted) {
        fail(who + " counts source " + dataset.first + "/" + dataset.second +
             " from an unbound "
             "or hostile statement");
      }
    }
    for (const auto& [id, js] : c.ledger().jobs()) {
      const Statement* canon = c.canonical(id);
      if (canon == nullptr || honest(canon->author)) continue;
      // Only in the stage it promised with the tree bomb: there its claims and results
      // bind (the bomb's, or a later one at an epoch it claimed).
      if (!hostile_bomb_ || std::get<JobResult>(canon->body).job.stage != hostile_stage_) {
        fail(who + " takes a hostile result as canonical for " + id.short_hex());
      }
    }
    // Nobody stores the bomb (nor could materialize it).
    if (hostile_bomb_ && hosts_[i].store.count(*hostile_bomb_)) {
      fail(who + " stored the tree bomb " + hostile_bomb_->short_hex());
    }
    // What the hostile host got kept is bounded by its budget, and nothing over a limit.
    std::size_t held = 0;
    std::size_t superseded = 0;
    bool over_limit = false;
    const promises::Ledger& l = c.ledger();
    c.ledger().for_each([&](const Statement& st) {
      if (st.author == hostile_key_) ++held;
      over_limit = over_limit || promises::check_limits(st).has_value();
      // Superseded adverts do not accumulate: none held whose next seq is an advert.
      const Statement* next = l.get(st.author, st.seq + 1);
      if (st.kind() == StatementKind::kAdvert &&
          ((next != nullptr && next->kind() == StatementKind::kAdvert) ||
           l.is_void(st.author, st.seq + 1))) {
        ++superseded;
      }
    });
    if (superseded != 0) {
      fail(who + " holds " + std::to_string(superseded) + " adverts superseded at once");
    }
    const auto& idle = hosts_[i].config.idle_budget;
    // Each start of the agent begins with a full bucket (budgets are not persisted).
    auto idle_bound = static_cast<std::size_t>(
        kHostileCountable + idle.burst * static_cast<std::uint64_t>(hosts_[i].boots) +
        idle.tokens_per_second * static_cast<std::uint64_t>(now_) / 1000);
    if (held > idle_bound) {
      fail(who + " holds " + std::to_string(held) + " statements of the hostile host (its budget " +
           std::to_string(idle_bound) + ")");
    }
    if (over_limit) fail(who + " holds a statement with a field over its limit");
    if (c.ledger().size() > budget) {
      fail(who + " holds " + std::to_string(c.ledger().size()) + " statements (budget " +
           std::to_string(budget) + ")");
    }
  }
  // No job loops: honest claims per job stay within a bound.
  for (const auto& [id, js] : ref.ledger().jobs()) {
    std::size_t claims = static_cast<std::size_t>(
        std::count_if(js.claims.begin(), js.claims.end(),
                      [&](const Statement* st) { return honest(st->author); }));
    if (claims > kMaxClaimsPerJob) {
      fail("job " + id.short_hex() + " was claimed " + std::to_string(claims) + " times (bound " +
           std::to_string(kMaxClaimsPerJob) + ")");
    }
  }
}

}  // namespace vow::sim
