#include "promises/core.h"

#include <algorithm>

#include "promises/assert.h"
#include "promises/config.h"
#include "promises/core_internal.h"
#include "promises/swim.h"

namespace vow::promises {

const char* event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::kPeerState:
      return "peer-state";
    case EventKind::kClaimed:
      return "claimed";
    case EventKind::kStarted:
      return "started";
    case EventKind::kFenced:
      return "fenced";
    case EventKind::kReleased:
      return "released";
    case EventKind::kResult:
      return "result";
    case EventKind::kNonDeterministic:
      return "non-deterministic";
    case EventKind::kSuperseded:
      return "superseded";
    case EventKind::kRetry:
      return "retry";
    case EventKind::kFailed:
      return "failed";
    case EventKind::kRegenerate:
      return "regenerate";
    case EventKind::kReplicate:
      return "replicate";
    case EventKind::kConflict:
      return "conflict";
    case EventKind::kDefinitionConflict:
      return "definition-conflict";
    case EventKind::kEquivocation:
      return "equivocation";
    case EventKind::kUnbound:
      return "unbound";
    case EventKind::kRefused:
      return "refused";
    case EventKind::kHorizon:
      return "horizon";
  }
  return "unknown";
}

void Output::append(Output&& other) {
  for (auto& x : other.persist) persist.push_back(std::move(x));
  for (auto& x : other.proofs) proofs.push_back(std::move(x));
  for (auto& x : other.voided) voided.push_back(x);
  for (auto& x : other.messages) messages.push_back(std::move(x));
  for (auto& x : other.actions) actions.push_back(std::move(x));
  for (auto& x : other.events) events.push_back(std::move(x));
}

Digest rendezvous_score(const Digest& key, const AgentKey& agent) {
  Hasher h;
  h.update_field("vow-rank-v1");
  h.update(key.bytes);
  h.update(agent.bytes);
  return h.finish();
}

namespace {
// The failure detector the timing asks for; SWIM's PRNG is seeded from the agent key, so
// a run replays from its inputs.
std::unique_ptr<FailureDetector> make_detector(const CoreConfig& config) {
  if (config.timing.membership == MembershipProfile::kAllToAll) {
    return std::make_unique<HeartbeatDetector>(config.timing);
  }
  std::uint64_t seed = 0;
  for (int i = 0; i < 8; ++i) seed = (seed << 8) | config.key.bytes[static_cast<std::size_t>(i)];
  return std::make_unique<SwimDetector>(config.key, config.timing.swim, seed);
}
}  // namespace

Core::Impl::Impl(CoreConfig cfg, std::int64_t now)
    : config(std::move(cfg)),
      members(config.key, make_detector(config)),
      book(ledger, config.key),
      holdings(members),
      replication(config.key, config.replicas, ledger, book, holdings, members),
      now_ms(now),
      started_ms(now) {
  apply_promises();
}

void Core::Impl::apply_promises() {
  own_pipelines.clear();
  capacity_by_stage.clear();
  total_capacity = 0;
  for (const auto& p : config.pipelines)
    own_pipelines.push_back(std::make_shared<const Pipeline>(p));
  for (const auto& pr : config.promises) {
    for (const auto& p : config.pipelines) {
      if (p.name != pr.pipeline) continue;
      if (const Stage* s = p.find_stage(pr.stage)) {
        capacity_by_stage[s->digest] += pr.capacity;
        total_capacity += static_cast<std::uint32_t>(pr.capacity);
      }
    }
  }
  replan("config");
}

void Core::Impl::publish_advert_and_pipelines() {
  Advert adv;
  adv.name = config.name;
  adv.endpoints = config.endpoints;
  for (const auto& pr : config.promises) {
    for (const auto& p : config.pipelines) {
      if (p.name != pr.pipeline) continue;
      if (const Stage* st = p.find_stage(pr.stage)) {
        adv.promises.push_back(AdvertPromise{pr.pipeline, pr.stage, st->digest, pr.capacity});
      }
    }
  }
  adv.sources = config.sources;
  // Republished on every start: its seq names this incarnation of our holdings.
  const Statement& a = publish(std::move(adv));
  holdings.set_incarnation(a.seq);
  for (const auto& p : config.pipelines) {
    bool known = ledger.pipelines().count(p.digest) != 0;
    if (!known) publish(PipelineDef{p.name, p.digest, canonical_pipeline(p)});
  }
}

// Signs what this input published, at once, and gives every copy of those statements
// their signature: the ledger's, `persist`'s (which has each of them, in the order
// published) and those in messages (sent to all, or in an answer made since).
void Core::Impl::sign_published(Output& out) {
  signing_due = false;
  out.unsigned_statements = false;
  if (unsigned_seqs.empty()) return;
  const std::uint64_t first = unsigned_seqs.front();
  const std::uint64_t last = unsigned_seqs.back();
  unsigned_seqs.clear();
  auto ours = [&](const Statement& st) {
    return st.author == config.key && st.seq >= first && st.seq <= last && !st.signed_form.empty();
  };
  std::vector<SignedForm*> forms;
  std::map<std::uint64_t, const SignedForm*> by_seq;
  for (auto& st : out.persist) {
    if (!ours(st)) continue;
    forms.push_back(&st.signed_form);
    by_seq.emplace(st.seq, &st.signed_form);
  }
  if (forms.empty()) return;
  config.sign_together(forms);
  for (const auto& [seq, form] : by_seq) ledger.set_signature(config.key, seq, *form);
  for (auto& m : out.messages) {
    auto* b = std::get_if<StatementBatch>(&m.message.body);
    if (b == nullptr) continue;
    for (auto& st : b->statements) {
      if (!ours(st)) continue;
      auto f = by_seq.find(st.seq);
      if (f != by_seq.end()) st.signed_form = *f->second;
    }
  }
}

Output Core::Impl::take() {
  if (config.sign_on_take) {
    sign_published(out);
  } else if (!unsigned_seqs.empty()) {
    signing_due = true;
    out.unsigned_statements = true;
  }
  for (const auto& v : ledger.take_voided()) out.voided.push_back(v);
  for (const auto& r : ledger.take_retired()) out.retired.push_back(r);
  Output o = std::move(out);
  out = Output{};
  return o;
}

void Core::Impl::event(EventKind kind, EventLevel level, std::string text,
                       std::optional<AgentKey> peer) {
  out.events.push_back(Event{kind, level, std::move(text), peer});
}

void Core::Impl::send(const std::optional<AgentKey>& to, MessageBody body) {
  out.messages.push_back(Outbound{to, Message{std::move(body)}});
}

const Statement& Core::Impl::publish(StatementBody body) {
  Statement st;
  st.author = config.key;
  st.seq = ++last_seq;
  st.wall_unix_ms = wall_unix_ms;
  st.body = std::move(body);
  if (config.attest) config.attest(st);
  if (config.encode && config.sign_together) {
    st.signed_form.bytes = config.encode(st);
    if (!st.signed_form.empty()) unsigned_seqs.push_back(st.seq);
  } else if (config.sign) {
    st.signed_form = config.sign(st);
  }
  auto r = ledger.add(st);
  VOW_ASSERT(r == Ledger::AddResult::kNew, "own seq %llu reused",
             static_cast<unsigned long long>(st.seq));
  out.persist.push_back(st);
  send(std::nullopt, StatementBatch{{st}});
  ingest(*ledger.get(st.author, st.seq), /*restored=*/false);
  return *ledger.get(config.key, st.seq);
}

void Core::Impl::heard(const AgentKey& from) { members.heard(from, now_ms); }

// Applies the effects of a statement already in the ledger (index side effects).
void Core::Impl::ingest(const Statement& st, bool restored) {
  job_index.note(st);
  switch (st.kind()) {
    case StatementKind::kAdvert:
      on_advert(st);
      break;
    case StatementKind::kPipeline:
    case StatementKind::kSourceVersion:
      // A definition already held, a version that is not the current one: the same plan.
      if (!plan || promises::plan_basis(plan->known, ledger) != plan_basis) {
        replan("pipeline_or_source");
      }
      holdings.note(st, now_ms);
      break;
    case StatementKind::kClaim: {
      const Digest& job = std::get<Claim>(st.body).job.job;
      // A claim can bind results that arrived before it (rule 3): the canonical result
      // or the failures of its job may change.
      const Statement* canon = book.canonical(job);
      int failures = book.failed_attempts(job);
      book.note(st);
      // It may bind a failed result that arrived before it.
      if (std::any_of(book.results(job).begin(), book.results(job).end(),
                      [](const Statement* r) { return !std::get<JobResult>(r->body).ok; })) {
        rerank(job);
      } else {
        touch(job);
      }
      tie_break_check.insert(job);
      const Statement* now_canon = book.canonical(job);
      if (now_canon != canon || book.failed_attempts(job) != failures) {
        results_changed.insert(job);
        note_nondeterminism(job);
        if (canon == nullptr && now_canon != nullptr && book.failed_attempts(job) == failures) {
          // Its first canonical result (it arrived before its claim, as a sync may bring
          // them): as a result that binds at once. Making the plan again for each of
          // those cost seconds per pass at 100,000 jobs.
          note_canonical_result(job);
        } else {
          replan("claim_binds");
        }
      }
      break;
    }
    case StatementKind::kRelease: {
      book.note(st);
      touch(std::get<Release>(st.body).job.job);
      results_changed.insert(std::get<Release>(st.body).job.job);
      break;
    }
    case StatementKind::kResult: {
      const auto& r = std::get<JobResult>(st.body);
      book.note(st);
      if (r.ok) {
        touch(r.job.job);
      } else {
        rerank(r.job.job);
      }
      results_changed.insert(r.job.job);
      // Our own claim closed: a claim of its epoch that outranks it, which arrived while
      // the run was finishing (its outputs being stored), now calls for a release.
      if (st.author == config.key) tie_break_check.insert(r.job.job);
      if (restored && !plan) {
        // Read back at a restart: whether it binds is known once the horizons are applied
        // again (one whose claim a horizon retired is bound by it), and the first plan
        // reads every job. Core::Core notes non-determinism then: the job's summary is
        // made once, not once here and again after the horizons dropped it.
        holdings.note(st, now_ms);
        break;
      }
      if (const ResultBinding binding = book.result_binding(r.job.job, st);
          binding != ResultBinding::kBound) {
        // Evidence only (rule 3); it may bind later if its claim arrives after it. Not
        // news when the ledger is read back (a result whose claim a horizon retired is
        // bound again when that horizon is).
        if (!restored) {
          event(EventKind::kUnbound, EventLevel::kDebug,
                "result of job " + r.job.job.short_hex() + " epoch " + std::to_string(r.epoch) +
                    " by " + st.author.hex().substr(0, 12) +
                    " is not bound: " + result_binding_name(binding),
                st.author);
        }
      } else if (!r.ok) {
        // Only a new canonical result or a failure can change what is planned.
        replan("failure");
      } else if (book.canonical(r.job.job) == &st) {
        note_canonical_result(r.job.job);
      }
      holdings.note(st, now_ms);
      note_nondeterminism(r.job.job);
      break;
    }
    case StatementKind::kAccept:
      holdings.note(st, now_ms);
      break;
    case StatementKind::kCheckpoint:
      break;
    case StatementKind::kHorizon:
      note_horizon(st);
      break;
    case StatementKind::kRetry: {
      const Digest& job = std::get<Retry>(st.body).job.job;
      book.note(st);
      rerank(job);
      // Its failures are counted afresh: backoff, and the failed event if it fails again.
      local.erase(job);
      replan("retry");  // its stage and the dependents are no longer blocked
      break;
    }
  }
}

// Conflicting current definitions of a stage (planner.h), logged once per set of digests.
void Core::Impl::report_conflicts() {
  for (const auto& c : plan->conflicts) {
    std::string key = c.pipeline + "/" + c.stage;
    for (const auto& [digest, agents] : c.promised_by) key += " " + digest.hex();
    if (!reported_conflicts.insert(key).second) continue;
    std::string text = "stage " + c.pipeline + "/" + c.stage + " has conflicting definitions:";
    for (const auto& [digest, agents] : c.promised_by) {
      text += " " + digest.short_hex() + " promised by";
      for (const auto& a : agents) {
        auto adv = ledger.adverts().find(a);
        std::string name = adv == ledger.adverts().end() ? std::string()
                                                         : std::get<Advert>(adv->second->body).name;
        text += " " + (name.empty() ? a.hex().substr(0, 12) : name);
      }
      text += ";";
    }
    text += " planning " + c.planned.short_hex();
    event(EventKind::kDefinitionConflict, EventLevel::kWarn, std::move(text));
  }
}

// Non-determinism: two bound successful results with different outputs (logged once).
void Core::Impl::note_nondeterminism(const Digest& job) {
  if (nondet.count(job) || !book.nondeterministic(job)) return;
  nondet.insert(job);
  const auto& r = std::get<JobResult>(book.canonical(job)->body);
  event(EventKind::kNonDeterministic, EventLevel::kWarn,
        "job " + job.short_hex() + " (" + r.job.pipeline + "/" + r.job.stage +
            ") produced different outputs");
}

// A statement from a peer (verified): kept, and applied if new; a second statement for
// a held (author, seq) is proof of equivocation.
void Core::Impl::receive(const Statement& st, bool proof) {
  if (!admit(st, proof)) return;
  if (const auto* c = std::get_if<Claim>(&st.body)) {
    // What ingest() compares with must be read before the claim is in the ledger: a
    // summary of its job dropped by an earlier statement would otherwise be made again
    // with the claim in it, and a result it binds would not count as a change.
    (void)book.canonical(c->job.job);
  }
  switch (ledger.add(st)) {
    case Ledger::AddResult::kNew:
      out.persist.push_back(st);
      ingest(*ledger.get(st.author, st.seq), false);
      break;
    case Ledger::AddResult::kEquivocation:
      out.proofs.push_back(st);
      on_equivocation(st.author);
      break;
    case Ledger::AddResult::kConflict:
      event(EventKind::kConflict, EventLevel::kDebug,
            "author " + st.author.hex().substr(0, 12) + " (equivocating) signed another seq " +
                std::to_string(st.seq),
            st.author);
      break;
    case Ledger::AddResult::kDuplicate:
    case Ledger::AddResult::kVoid:  // superseded at once: its slot is void (take())
      break;
  }
}

// Rule 5: the author's statements stop counting everywhere here, and the proof goes to
// every peer at once (and with every later sync answer, for those this push misses).
// The shell persists the proof (Output::proofs) beside the first statement.
void Core::Impl::on_equivocation(const AgentKey& author) {
  event(EventKind::kEquivocation, EventLevel::kWarn,
        "author " + author.hex().substr(0, 12) + " signed two different statements with seq " +
            std::to_string(ledger.proofs().at(author).second.seq) +
            ": none of its statements counts any more",
        author);
  book.invalidate();
  replan("equivocation");
  candidates_dirty = true;
  decisions_due = true;
  const auto& proof = ledger.proofs().at(author);
  send(std::nullopt, StatementBatch{{proof.first, proof.second}});
}

// The answer to a hello or sync request: what the peer lacks, the statements it holds
// differently (an equivocation its version vector cannot show), and every proof.
void Core::Impl::answer_sync(const AgentKey& to, const VersionVector& have,
                             const std::map<AgentKey, Digest>& digests,
                             std::uint64_t their_horizon) {
  auto rotation = static_cast<std::uint64_t>(now_ms / config.timing.sync_interval_ms);
  const std::size_t limit = config.sync_answer_statements;
  auto batch = ledger.missing_for(have, limit, rotation, their_horizon);
  // Whether the answer leaves out statements the peer lacks: it then asks again.
  bool cut = batch.size() >= limit;
  if (batch.size() < limit) {
    // One window of a diverging prefix per answer, a different one each sync round.
    auto diverging =
        ledger.diverging_for(have, digests, kMaxDivergingPerAuthor, limit - batch.size(), rotation);
    batch.insert(batch.end(), diverging.begin(), diverging.end());
  }
  // A large statement (over half the answer's bytes) that is the next the peer needs of
  // its author goes in a batch of its own: cut where it would pass the limit, an answer
  // carried it only when it came first, and a joiner whose next statement of one author
  // was a source version of 100,000 entries (8.8 MB) pulled two statements per round
  // trip, for an hour, with no job planned. Only the next needed: one the peer may hold
  // already (above its mark) would be sent again with every answer.
  auto large = std::find_if(batch.begin(), batch.end(), [&](const Statement& st) {
    auto t = have.find(st.author);
    return st.seq == (t == have.end() ? 0 : t->second) + 1 &&
           wire_size(st) > kMaxSyncAnswerBytes / 2;
  });
  if (large != batch.end()) {
    send(to, StatementBatch{{std::move(*large)}, {}});
    batch.erase(large);
    cut = true;  // what follows it of its author may be missing still
  }
  // Within one frame: cut where the next statement would pass kMaxSyncAnswerBytes (the
  // peer asks again for the rest).
  std::size_t bytes = 0;
  std::size_t keep = 0;
  while (keep < batch.size()) {
    std::size_t size = wire_size(batch[keep]);
    if (keep > 0 && bytes + size > kMaxSyncAnswerBytes) break;
    bytes += size;
    ++keep;
  }
  cut = cut || keep < batch.size();
  batch.resize(keep);
  // Void slots above the peer's marks: it takes each once it holds the advert above.
  auto voids = ledger.voids_for(have, kMaxVoidRangesPerSync);
  // Horizons the peer lacks lead the answer, in a batch of their own: it takes them
  // before the rest is checked, so the results they settle are taken on their word
  // (their digests) instead of by checking each signature again. (missing_for puts
  // them first in each author's tail, but takes the authors' tails in turns.)
  auto lacked = [&](const Statement& st) {
    const auto* h = std::get_if<Horizon>(&st.body);
    return h != nullptr && h->number > their_horizon;
  };
  auto rest = std::stable_partition(batch.begin(), batch.end(), lacked);
  const auto leading = static_cast<std::size_t>(rest - batch.begin());
  if (leading > 0) {
    send(to, StatementBatch{{std::make_move_iterator(batch.begin()),
                             std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(leading))},
                            {}});
    batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(leading));
  }
  // The rest, marked as the answer's last batch, even empty: the asker's pull
  // (continue_pull) learns that this peer has nothing more for it at once, not when
  // its request times out (kPullAnswerWindowMs), which held a joiner's plan back by 2 s
  // after it had everything.
  send(to, StatementBatch{std::move(batch), std::move(voids), /*answer=*/true, cut});
  // Each proof in a batch of its own: the pair travels together (it is admitted as a
  // proof only so, limits.h), and large statements cannot push a frame past its limit.
  auto proofs = ledger.proof_statements(kMaxProofStatementsPerSync);
  for (std::size_t i = 0; i + 1 < proofs.size(); i += 2) {
    send(to, StatementBatch{{proofs[i], proofs[i + 1]}});
  }
}

void Core::Impl::receive_proof(const Statement& first, const Statement& second) {
  if (!admit(first, true) || !admit(second, true)) return;
  // Not persisted (the shell keeps a proof beside a held first statement): after a
  // restart, peers send it again with their sync answers.
  if (ledger.add_proof(first, second) == Ledger::AddResult::kEquivocation) {
    on_equivocation(first.author);
  }
}

void Core::Impl::on_advert(const Statement& st) {
  // The newest advert of its author, promising and providing what the one before it
  // did (a restart with the same configuration): what counts and which definitions
  // are current are the same, so nothing is planned again (at 1,000 agents, each
  // restart re-planned on every agent).
  const auto& adv = std::get<Advert>(st.body);
  const Statement* before = ledger.advert_at(st.author, st.seq);
  auto newest = ledger.adverts().find(st.author);
  bool same = newest != ledger.adverts().end() && newest->second == &st && before != nullptr &&
              std::get<Advert>(before->body).promises == adv.promises &&
              std::get<Advert>(before->body).sources == adv.sources;
  if (!same) {
    candidates_dirty = true;
    // What its author promised and provides changed: claims, results and sources it
    // binds may count differently, and which definitions are current (planner.h).
    // A plan is made again only if the advert changes what the plan read (planner.h):
    // an agent joining to promise what others promise changes no job.
    const bool bindings_kept = book.note(st);
    if (!bindings_kept) job_index.all_dirty = true;
    if (!bindings_kept || !plan || promises::plan_basis(plan->known, ledger) != plan_basis) {
      replan("advert");
    }
    // A claim of its author that did not bind may bind now, and outrank one of ours
    // at its epoch: each job it claimed is looked at again.
    if (st.author != config.key) {
      ledger.for_each_of(st.author, [&](const Statement& other) {
        if (const auto* c = std::get_if<Claim>(&other.body)) tie_break_check.insert(c->job.job);
      });
    }
  }
  if (st.author == config.key) return;
  Membership::Peer* p = members.peer(st.author, now_ms);
  if (newest == ledger.adverts().end() || newest->second != &st) return;  // an older advert
  p->name = adv.name;
  // Every start publishes an advert, whose seq names the incarnation of its author's
  // holdings (publish_advert_and_pipelines): the ledger brings it to every agent even
  // when the load messages of a restart were lost (SWIM probes reach a given peer about
  // once a round of N periods), and a newer incarnation than the one applied is asked.
  if (p->holdings_told.first < st.seq) {
    p->holdings_told = {st.seq, 0};
    if (holdings.seen(st.author) < p->holdings_told) have_wanted.insert(st.author);
  }
  if (!adv.endpoints.empty() && p->connect_sent_for_seq < st.seq &&
      (!p->heard || members.liveness(st.author, now_ms) == Liveness::kDead)) {
    p->connect_sent_for_seq = st.seq;
    out.actions.push_back(Connect{st.author, adv.endpoints});
  }
}

void Core::Impl::handle_message(const AgentKey& from, const Message& msg) {
  heard(from);
  Membership::Peer* p = members.peer(from, now_ms);
  if (p == nullptr) return;  // a message from ourselves: ignore
  p->spoke = true;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Hello>) {
          // A name for humans: only an identifier within the limit (rule 6).
          if (!m.name.empty() && m.name.size() <= kMaxStatementNameBytes &&
              is_identifier(m.name)) {
            p->name = m.name;
          }
          // Every peer gets a Hello from an agent that starts or reconnects: one that
          // holds less (a smaller sum) asks the sender, within the budget of unasked
          // requests, so that a joining agent pulls from one or two peers, not from
          // every one. Where the sender holds less, it is the one that asks.
          p->vv_sum = m.vv_sum;
          note_peer_vv_sum(m.vv_sum);
          if (m.vv_sum > ledger.vv_sum() && worth_asking(*p, m.vv_sum)) {
            if (!unasked_pending() && may_request_sync()) request_unasked(from, *p);
          } else {
            synced = true;
          }
        } else if constexpr (std::is_same_v<T, Probe>) {
          for (auto& s : members.on_probe(from, m, now_ms)) {
            s.probe.load = load();
            send(s.to, std::move(s.probe));
          }
          // Its load and change signals, as a heartbeat carries them.
          handle_message(from, Message{m.load});
        } else if constexpr (std::is_same_v<T, Heartbeat>) {
          p->running = m.running;
          p->capacity = m.capacity;
          p->vv_sum = m.vv_sum;
          note_peer_vv_sum(m.vv_sum);
          if (m.vv_sum > ledger.vv_sum() && worth_asking(*p, m.vv_sum)) {
            // Not while a pull goes on: its answers bring the same statements, and a
            // second request to the peer pulled from (its answer still being taken)
            // was answered twice (at 100,000 jobs a joiner took 4 statements per one held).
            if (!pull_active() && !unasked_pending() &&
                now_ms - p->last_sync_request_ms >= config.timing.heartbeat_ms &&
                may_request_sync()) {
              request_unasked(from, *p);
            }
          } else {
            synced = true;
          }
          std::pair<std::uint64_t, std::uint64_t> v{m.holdings_incarnation, m.holdings_version};
          // The newest told (a late heartbeat says less than one before, or an advert).
          p->holdings_told = std::max(p->holdings_told, v);
          if (holdings.seen(from) < p->holdings_told) have_wanted.insert(from);
          if (v != holdings.seen(from)) ask_have(from, *p);
        } else if constexpr (std::is_same_v<T, SyncRequest>) {
          if (m.summary) {
            // Summary only (the periodic anti-entropy): the same ledger, nothing to do;
            // else pull from it, and it asks back when it gets the request.
            if (!pull_active() && now_ms - p->last_sync_request_ms >= config.timing.heartbeat_ms &&
                *m.summary != ledger.summary()) {
              request_sync(from, *p);
            }
            return;
          }
          answer_sync(from, m.have, m.digests, m.horizon);
          // The answer to a summary of ours that differed: what it holds that we lack
          // comes only if we ask (once per summary).
          if (now_ms - p->summary_sent_ms < kPullAnswerWindowMs) {
            p->summary_sent_ms = -1'000'000;
            request_sync(from, *p);
          }
        } else if constexpr (std::is_same_v<T, StatementBatch>) {
          std::size_t ledger_before = ledger.size();
          // Two statements of one (author, seq) in one batch: a proof of equivocation.
          std::map<std::pair<AgentKey, std::uint64_t>, int> names;
          for (const auto& st : m.statements) ++names[{st.author, st.seq}];
          bool horizons = false;
          for (std::size_t i = 0; i < m.statements.size(); ++i) {
            const Statement& st = m.statements[i];
            // Horizons go first in an answer to an agent behind them: applied before
            // the rest is taken, what they settled counts as it arrives (admission.cc).
            if (st.kind() == StatementKind::kHorizon) {
              horizons = true;
            } else if (horizons) {
              horizons = false;
              apply_horizons_in_force();
            }
            bool pair = names[{st.author, st.seq}] > 1;
            // A proof about a void slot, or one a horizon retired (a joiner's, an agent's
            // back from away, whose peers retired the slot after they found the
            // equivocation): neither statement is held, so the pair is.
            if (pair && i + 1 < m.statements.size() &&
                (ledger.is_void(st.author, st.seq) || ledger.is_retired(st.author, st.seq)) &&
                m.statements[i + 1].author == st.author && m.statements[i + 1].seq == st.seq) {
              receive_proof(st, m.statements[i + 1]);
              ++i;
              continue;
            }
            receive(st, pair);
          }
          if (horizons) apply_horizons_in_force();  // a batch of horizons alone
          for (const auto& v : m.voids) receive_void(v);
          // Our own statements relayed back after a restart lost their tail.
          last_seq = std::max(last_seq, ledger.max_seq(config.key));
          if (ledger.size() > ledger_before) p->answer_news = true;
          // Its last batch ends an answer (horizons and a large statement go before it,
          // in batches of their own; pushes and proofs are no answer).
          if (m.answer) {
            p->marks_answers = true;
            if (unasked_peer == from) unasked_peer.reset();
            continue_pull(from, *p, m.cut);
          } else if (!p->marks_answers && !horizons_alone(m)) {
            // A peer of an earlier version marks no answer: any batch but one of
            // horizons alone (an empty one too) may be its answer, cut if it is at
            // least half full.
            continue_pull(from, *p, half_full(m));
          }
        } else if constexpr (std::is_same_v<T, HaveRequest>) {
          send(from, holdings.have_since(m.incarnation, m.version));
          holdings_unasked.erase(from);  // it has the current version (unless lost)
        } else if constexpr (std::is_same_v<T, Have>) {
          p->have_asked = false;
          holdings.on_have(from, m, now_ms);
        }
      },
      msg.body);
}

// A HaveRequest to PEER, unless one went within a heartbeat, or one is unanswered and
// went within kHaveRetryMs.
void Core::Impl::ask_have(const AgentKey& peer, Membership::Peer& p) {
  const std::int64_t wait = p.have_asked ? kHaveRetryMs : config.timing.heartbeat_ms;
  if (now_ms - p.last_have_request_ms < wait) return;
  p.last_have_request_ms = now_ms;
  p.have_asked = true;
  send(peer, HaveRequest{holdings.seen(peer).first, holdings.seen(peer).second});
}

// Unasked sync requests (a Hello or a heartbeat showed a peer holds more): at most
// kMaxPullPeers per heartbeat_ms across all peers, so that an agent behind every peer
// (a restart, a join in a large mesh) does not draw the same statements from each.
bool Core::Impl::may_request_sync() {
  if (now_ms - sync_budget_since_ms >= config.timing.heartbeat_ms) {
    sync_budget_since_ms = now_ms;
    sync_budget_used = 0;
  }
  if (sync_budget_used >= kMaxPullPeers) return false;
  ++sync_budget_used;
  return true;
}

// Catching up (a start, a join, a healed partition): an answer that was cut (it left out
// statements this agent lacks) and brought news is followed at once by the next request
// to the same peer, instead of waiting for its next heartbeat or probe, so a behind
// agent pulls at the pace of round trips. The answer's last batch decides (marked by
// the sender: a pushed statement or a batch sent ahead in the same answer neither
// ends a pull nor asks again while the rest of the answer is on its way). One peer is
// pulled from at a time (kMaxPulling: answers to one version vector are mostly the
// same statements); a peer leaves the pull when an answer brings nothing new or was
// not cut. A peer that answers stays in the pull even if this agent holds it
// suspect or dead: the answer shows it is there, and an agent catching up is the one
// whose busy loop misses acks (the others leave once they are no longer live).
void Core::Impl::continue_pull(const AgentKey& from, Membership::Peer& p, bool cut) {
  bool asked = now_ms - p.last_sync_request_ms < kPullAnswerWindowMs;
  bool news = p.answer_news;
  // The answer left nothing out: the peer told all it held for this agent at the sum
  // it showed when asked (or more).
  if (asked && !cut) p.answered_vv_sum = std::max(p.answered_vv_sum, p.vv_sum_asked);
  if (asked && news) pull_news_ms = now_ms;
  if (!asked || !news || !cut) {
    // The pull may have ended: the plan put off while it went on is due now
    // (ensure_plan), not at the next wake-up.
    if (pulling.erase(from) != 0) decisions_due = true;
    return;
  }
  std::erase_if(pulling, [&](const AgentKey& k) { return k != from && !is_live(k); });
  if (!pulling.count(from) && pulling.size() >= kMaxPulling) return;
  pulling.insert(from);
  request_sync(from, p);
}

bool Core::Impl::horizons_alone(const StatementBatch& batch) {
  return !batch.statements.empty() &&
         std::all_of(batch.statements.begin(), batch.statements.end(),
                     [](const Statement& st) { return st.kind() == StatementKind::kHorizon; });
}

bool Core::Impl::half_full(const StatementBatch& batch) const {
  if (batch.statements.size() >= config.sync_answer_statements / 2) return true;
  std::size_t bytes = 0;
  for (const Statement& st : batch.statements) bytes += wire_size(st);
  return bytes >= kMaxSyncAnswerBytes / 2;
}

void Core::Impl::request_sync(const AgentKey& peer, Membership::Peer& p) {
  p.last_sync_request_ms = now_ms;
  p.vv_sum_asked = p.vv_sum;
  p.answer_news = false;
  send(peer, full_sync_request());
}

// Hellos and heartbeats of every peer show a joining agent that each holds more: it
// asks one, and no other while that answer is awaited (the first answers of two or three
// peers to the same empty version vector are the same statements: a joiner at 100,000
// jobs received 16% more statements than it kept, the peers' heartbeats asking again
// every heartbeat_ms until the first answer had been taken).
bool Core::Impl::unasked_pending() const {
  return unasked_peer && now_ms - unasked_ms < kPullAnswerWindowMs && is_live(*unasked_peer);
}

void Core::Impl::request_unasked(const AgentKey& peer, Membership::Peer& p) {
  unasked_peer = peer;
  unasked_ms = now_ms;
  request_sync(peer, p);
}

bool Core::Impl::pull_active() const {
  return std::any_of(pulling.begin(), pulling.end(), [&](const AgentKey& k) {
    const Membership::Peer* p = members.find(k);
    return p != nullptr && now_ms - p->last_sync_request_ms < kPullAnswerWindowMs;
  });
}

bool Core::Impl::catching_up() const {
  // Behind a peer far ahead, while answers bring news, until this agent holds about
  // what that peer held (a pull that ended is not waited out: the plan waits for it).
  if (now_ms - far_behind_ms < kPullAnswerWindowMs && now_ms - pull_news_ms < kPullAnswerWindowMs &&
      far_ahead_vv_sum > ledger.vv_sum() + config.sync_answer_statements / 2) {
    return true;
  }
  return pull_active();
}

SyncRequest Core::Impl::full_sync_request() const {
  return SyncRequest{ledger.version_vector(), ledger.prefix_digests(), ledger.horizon_number(),
                     std::nullopt};
}

Heartbeat Core::Impl::load() const {
  Heartbeat hb;
  hb.running = static_cast<std::uint32_t>(running.size() + restored.size() + stopping.size());
  hb.capacity = total_capacity;
  hb.vv_sum = ledger.vv_sum();
  hb.holdings_incarnation = holdings.incarnation();
  hb.holdings_version = holdings.version();
  return hb;
}

void Core::Impl::do_tick() {
  // A peer heard from for the first time (its first message reached this agent).
  for (const AgentKey& key : members.take_first_heard()) {
    const Membership::Peer* p = members.find(key);
    event(EventKind::kPeerState, EventLevel::kInfo,
          "peer " + (p == nullptr || p->name.empty() ? key.hex().substr(0, 12) : p->name) +
              " is alive (first message)",
          key);
  }
  // Liveness transitions, logged once each; a death is also the shell's to act on.
  for (const auto& [key, l] : members.transitions(now_ms)) {
    if (l == Liveness::kDead) out.actions.push_back(PeerDeclaredDead{key});
    const std::string& name = members.find(key)->name;
    event(EventKind::kPeerState, l == Liveness::kAlive ? EventLevel::kInfo : EventLevel::kWarn,
          "peer " + (name.empty() ? key.hex().substr(0, 12) : name) + " is " + liveness_name(l),
          key);
    decisions_due = true;
    // SWIM: a peer back from suspicion or death (a restart, a healed partition) may have
    // missed the load changes broadcast meanwhile, and probes reach it only once a
    // round: tell it now, so it asks for a sync or a Have at once if it lacks one.
    if (l == Liveness::kAlive && config.timing.membership != MembershipProfile::kAllToAll) {
      send(key, load());
    }
  }
  for (auto& s : members.probes(now_ms)) {
    s.probe.load = load();
    send(s.to, std::move(s.probe));
  }
  // SWIM carries load on probes, which reach a given peer about once per round (N - 1
  // periods): a change of this agent's load or holdings is told to every peer at once,
  // as one heartbeat, at most every heartbeat_ms. An idle agent sends none.
  if (config.timing.membership != MembershipProfile::kAllToAll && !members.peers().empty() &&
      now_ms - announced_ms >= config.timing.heartbeat_ms) {
    Heartbeat hb = load();
    std::array<std::uint64_t, 4> now_load{hb.running, hb.capacity, hb.holdings_incarnation,
                                          hb.holdings_version};
    // Sent again once, heartbeat_ms later: a peer that had just asked this agent for a
    // Have or a sync ignores the first (its requests are rate-limited per peer), and no
    // heartbeat follows every heartbeat_ms here to make up for it.
    if (announced_load != now_load || announce_again) {
      announce_again = announced_load != now_load;
      // A new holdings version: every peer is to ask for it (below).
      if (!announced_load || (*announced_load)[2] != now_load[2] ||
          (*announced_load)[3] != now_load[3]) {
        holdings_unasked.clear();
        for (const auto& [key, p] : members.peers()) holdings_unasked.insert(key);
        next_unasked_resend_ms = now_ms + kHoldingsResendMs;
      }
      announced_load = now_load;
      announced_ms = now_ms;
      send(std::nullopt, std::move(hb));
    }
  }
  // SWIM: the broadcast of a new holdings version (twice) can miss a peer, and probes
  // bring it about once a round of N periods (100 s at 1,000 agents): live peers that
  // have not asked for the current version since get the load again, a few at a time.
  if (config.timing.membership != MembershipProfile::kAllToAll && !holdings_unasked.empty() &&
      now_ms >= next_unasked_resend_ms) {
    next_unasked_resend_ms = now_ms + kHoldingsResendMs;
    Heartbeat hb = load();
    std::size_t sent = 0;
    for (auto it = holdings_unasked.begin();
         it != holdings_unasked.end() && sent < kMaxHoldingsResends;) {
      const Membership::Peer* p = members.find(*it);
      if (p == nullptr) {
        it = holdings_unasked.erase(it);
        continue;
      }
      if (members.is_live(*it, now_ms)) {
        send(*it, hb);
        ++sent;
      }
      ++it;
    }
  }
  // SWIM: a Have asked for but not received (the request was rate-limited, or lost) is
  // asked for again; heartbeats no longer arrive every heartbeat_ms to prompt it. Only
  // the peers told to hold a newer version than the one applied are looked at.
  if (config.timing.membership != MembershipProfile::kAllToAll && now_ms >= next_have_check_ms) {
    next_have_check_ms = now_ms + config.timing.heartbeat_ms;
    for (auto it = have_wanted.begin(); it != have_wanted.end();) {
      const AgentKey& key = *it;
      Membership::Peer* p = members.peer(key, now_ms);
      if (p == nullptr || !(holdings.seen(key) < p->holdings_told)) {
        it = have_wanted.erase(it);
        continue;
      }
      if (members.is_live(key, now_ms)) ask_have(key, *p);
      ++it;
    }
  }
  auto targets = members.heartbeat_targets(now_ms);
  if (!targets.empty()) {
    Heartbeat hb = load();
    if (targets.size() == members.peers().size()) {
      send(std::nullopt, std::move(hb));
    } else {
      for (const auto& t : targets) send(t, hb);
    }
  }
  // Periodic anti-entropy with one live peer at a time (round robin).
  if (now_ms >= next_sync_ms && !members.peers().empty()) {
    next_sync_ms = now_ms + config.timing.sync_interval_ms;
    std::vector<AgentKey> live = members.live_peers(now_ms);
    // Not while a pull goes on: its answers are the anti-entropy, and the summary (a walk
    // over every statement a joiner holds above a gap) would differ anyway.
    if (!live.empty() && !pull_active()) {
      const AgentKey& target = live[sync_rotor++ % live.size()];
      // Its summary first: a peer whose ledger is the same stays silent (an idle mesh's
      // anti-entropy is one constant-size message per agent and interval, whatever N).
      members.peer(target, now_ms)->summary_sent_ms = now_ms;
      SyncRequest summary;
      summary.horizon = ledger.horizon_number();
      summary.summary = ledger.summary();
      send(target, std::move(summary));
    }
  }
}

// ---- Core: the public face, forwarding to Impl ----

Core::Core(CoreConfig config, RestoredState restored, std::int64_t now_ms)
    : impl_(std::make_unique<Impl>(std::move(config), now_ms)) {
  Impl& s = *impl_;
  for (auto& st : restored.statements) {
    const AgentKey author = st.author;
    const std::uint64_t seq = st.seq;
    auto r = s.ledger.add(std::move(st));
    if (r == Ledger::AddResult::kNew) {
      s.ingest(*s.ledger.get(author, seq), true);
    } else if (r == Ledger::AddResult::kEquivocation) {
      s.on_equivocation(author);
    }
  }
  for (const auto& st : restored.proofs) {
    if (s.ledger.add(st) == Ledger::AddResult::kEquivocation) s.on_equivocation(st.author);
  }
  // Void slots on disk. Adverts restored that turn out void (kept by an older version)
  // are named in the first output, so the shell forgets them on disk too.
  for (const auto& v : restored.voids) s.ledger.restore_void(v);
  s.restore_horizons();
  for (const auto& [job, js] : s.ledger.jobs()) {
    if (!js.results.empty()) s.note_nondeterminism(job);
  }
  s.out.messages.clear();  // nothing is sent before start()
  s.last_seq = std::max(restored.last_seq, s.ledger.max_seq(s.config.key));
  for (const auto& d : restored.held) s.holdings.restore(d);
  // A running-job row without an open own claim (none in the ledger, or one with a result
  // or a release) is not resumable: kill it now. The others wait for a sync to be decided
  // (reconcile_open_claims), with the reference of their claim.
  for (const auto& r : restored.running) {
    VOW_ASSERT(!s.restored.count(r.job.job) && !s.stopping.count(r.job.job),
               "job %s restored twice", r.job.job.short_hex().c_str());
    const Statement* claim = nullptr;
    if (s.book.is_open(r.job.job, r.epoch)) {
      for (const Statement* st : s.ledger.job(r.job.job)->claims) {
        if (st->author == s.config.key && std::get<Claim>(st->body).epoch == r.epoch) claim = st;
      }
    }
    if (claim != nullptr) {
      s.restored[r.job.job] = OwnRun{std::get<Claim>(claim->body).job, r.epoch};
    } else {
      s.kill(r.job, r.epoch, "not resumable after restart: no open claim");
    }
  }
  s.out.events.clear();  // replaying the ledger is not news
}

Core::~Core() = default;

Core::Impl& Core::enter() {
  VOW_ASSERT(!impl_->signing_due, "the core was called before the last output was signed");
  return *impl_;
}

void Core::sign(Output& out) {
  if (out.unsigned_statements) impl_->sign_published(out);
}

Output Core::start() {
  Impl& s = enter();
  if (!s.started) {
    s.started = true;
    s.publish_advert_and_pipelines();
    s.reconcile();
  }
  return s.take();
}

Output Core::on_statement(const AgentKey& from, const Statement& statement) {
  Impl& s = enter();
  s.heard(from);
  std::size_t before = s.ledger.size();
  s.receive(statement);
  if (s.ledger.size() != before) {
    s.decisions_due = true;
    // Our own statement relayed back after a restart lost its tail.
    s.last_seq = std::max(s.last_seq, s.ledger.max_seq(s.config.key));
  }
  return s.take();
}

Output Core::on_message(const AgentKey& from, const Message& message) {
  Impl& s = enter();
  std::size_t before = s.ledger.size();
  s.handle_message(from, message);
  if (s.ledger.size() != before) s.decisions_due = true;
  return s.take();
}

Output Core::peer_connected(const AgentKey& peer) {
  Impl& s = enter();
  // Learned (its liveness followed from now), not heard: a link is dialed, and nothing
  // came from it yet. An agent that joins dials every agent whose advert it receives,
  // departed ones too, and took each for alive ("first message") until its detector
  // declared it dead.
  (void)s.members.peer(peer, s.now_ms);
  if (peer != s.config.key) {
    s.send(peer, Hello{s.config.key, s.config.name, s.config.endpoints, s.ledger.vv_sum()});
    // SWIM: a new link (either side restarted, or a partition healed) gets this agent's
    // load at once; an unchanged load is not broadcast again, and probes reach one peer
    // about once a round.
    if (s.config.timing.membership != MembershipProfile::kAllToAll) s.send(peer, s.load());
  }
  return s.take();
}

Output Core::tick(std::int64_t now_ms, std::int64_t wall_unix_ms) {
  Impl& s = enter();
  if (now_ms > s.now_ms) s.now_ms = now_ms;
  if (wall_unix_ms != 0) s.wall_unix_ms = wall_unix_ms;
  s.do_tick();
  if (s.decisions_due || s.now_ms >= s.wake_ms) {
    s.decisions_due = false;
    s.reconcile();
    s.horizon_step();
  }
  return s.take();
}

Output Core::job_exited(const Digest& job, std::uint32_t epoch, JobOutcome outcome) {
  Impl& s = enter();
  if (!s.stopped(job, epoch)) s.finish(job, epoch, std::move(outcome));
  s.reconcile();
  return s.take();
}

Output Core::job_stopped(const Digest& job, std::uint32_t epoch) {
  Impl& s = enter();
  if (s.stopped(job, epoch)) s.reconcile();
  return s.take();
}

Output Core::artifact_fetched(const Digest& digest) {
  Impl& s = enter();
  s.holdings.add(digest);
  s.replication.fetch_ended(digest);
  for (auto& [job, run] : s.running) run.fetch_retry_ms.erase(digest);
  s.holdings.changed();
  s.reconcile();
  return s.take();
}

Output Core::artifact_fetch_failed(const Digest& digest) {
  Impl& s = enter();
  s.replication.fetch_ended(digest);
  for (auto& [job, run] : s.running) {
    auto it = run.fetch_retry_ms.find(digest);
    if (it != run.fetch_retry_ms.end()) it->second = s.now_ms + kFetchRetryMs;
  }
  s.reconcile();
  return s.take();
}

Output Core::artifact_refused(const Digest& digest, const std::string& reason) {
  Impl& s = enter();
  s.replication.fetch_ended(digest);
  std::vector<std::pair<Digest, std::uint32_t>> waiting;
  for (const auto& [job, run] : s.running) {
    if (!run.executing && run.fetch_retry_ms.count(digest)) waiting.emplace_back(job, run.epoch);
  }
  for (const auto& [job, epoch] : waiting) {
    s.running.at(job).executing = true;  // it ends here, as a run that failed
    JobOutcome outcome;
    outcome.ok = false;
    outcome.error = "input " + digest.short_hex() + " refused: " + reason;
    s.finish(job, epoch, std::move(outcome));
  }
  s.reconcile();
  return s.take();
}

Output Core::artifact_lost(const Digest& digest) {
  Impl& s = enter();
  if (s.holdings.remove(digest)) s.holdings.changed();
  s.reconcile();
  return s.take();
}

Output Core::artifacts_removed(const std::vector<Digest>& digests) {
  Impl& s = enter();
  bool any = false;
  for (const auto& d : digests) any = s.holdings.remove(d) || any;
  if (any) s.holdings.changed();
  s.reconcile();
  return s.take();
}

Output Core::source_snapshot(const std::string& pipeline, const std::string& source,
                             const ArtifactRef& artifact) {
  Impl& s = enter();
  s.holdings.add(artifact.digest);
  for (const auto& e : artifact.entries) s.holdings.add(e.digest);
  s.holdings.changed();
  // Each provider keeps its own line (rule 2): a new version when its own latest differs
  // (the dataset's version is what most providers give, so every provider says what it
  // has, even when another already published the same).
  std::uint64_t own = s.ledger.own_source_version(s.config.key, pipeline, source);
  const Statement* latest = s.ledger.own_source(s.config.key, pipeline, source);
  bool unchanged =
      latest != nullptr && std::get<SourceVersion>(latest->body).artifact.digest == artifact.digest;
  if (!unchanged) s.publish(SourceVersion{pipeline, source, own + 1, artifact});
  s.reconcile();
  return s.take();
}

Output Core::reconfigure(std::vector<CorePromise> promises, std::vector<Pipeline> pipelines,
                         std::vector<AdvertSource> sources) {
  Impl& s = enter();
  s.config.promises = std::move(promises);
  s.config.pipelines = std::move(pipelines);
  s.config.sources = std::move(sources);
  s.apply_promises();
  // Jobs of stages no longer promised stop now and are released: others take them.
  std::vector<Digest> stop;
  for (const auto& [job, run] : s.running) {
    if (!s.capacity_by_stage.count(run.ref.stage_digest)) stop.push_back(job);
  }
  for (const auto& j : stop) s.stop(j, "promise withdrawn", /*release=*/true);
  stop.clear();
  for (const auto& [job, row] : s.restored) {
    if (!s.capacity_by_stage.count(row.job.stage_digest)) stop.push_back(job);
  }
  for (const auto& j : stop) s.drop_restored(j, "promise withdrawn");
  if (s.started && !s.withdrawn) {
    s.publish_advert_and_pipelines();
    s.decisions_due = true;
    s.reconcile();
  }
  return s.take();
}

Output Core::retry(const std::vector<Digest>& jobs, const std::string& reason) {
  Impl& s = enter();
  if (!s.started || s.withdrawn) return s.take();
  s.ensure_plan();
  std::vector<JobRef> failed;
  for (const Digest& id : jobs) {
    const PlannedJob* job = s.plan->find(id);
    if (job != nullptr && s.book.failed_for_good(id, job->retries)) failed.push_back(job->ref);
  }
  for (const JobRef& ref : failed) {
    std::uint32_t epoch = s.book.max_epoch(ref.job);
    s.publish(Retry{ref, epoch, truncated(reason)});
    s.event(EventKind::kRetry, EventLevel::kInfo,
            "job " + ref.job.short_hex() + " (" + ref.pipeline + "/" + ref.stage +
                ") retried on request: failures up to epoch " + std::to_string(epoch) +
                " forgiven");
  }
  s.reconcile();
  return s.take();
}

Output Core::withdraw() {
  Impl& s = enter();
  s.withdrawn = true;
  std::vector<Digest> jobs;
  for (const auto& [job, run] : s.running) jobs.push_back(job);
  for (const auto& j : jobs) s.stop(j, "withdrawn", /*release=*/true);
  jobs.clear();
  for (const auto& [job, row] : s.restored) jobs.push_back(job);
  for (const auto& j : jobs) s.drop_restored(j, "withdrawn");
  return s.take();
}

}  // namespace vow::promises
