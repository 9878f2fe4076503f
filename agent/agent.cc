// The agent's input queue and how it carries out the core's outputs (agent.h).
#include "agent/agent.h"

#include <chrono>
#include <unordered_set>
#include <utility>

#include "promises/batch_proof.h"
#include "promises/limits.h"
#include "transport/identity.h"

namespace vow::agent {
namespace {

// The form the log prefix and `vow` use for an agent (its id), shortened.
std::string short_key(const AgentKey& key) { return transport::agent_id(key).substr(0, 12); }

// Calls FN with each file a statement names that may travel with it: a result's outputs
// that are files of at most kMaxAttachedBytes, a source version's file (if that small)
// or its tree's file entries (their sizes are not in the version: the codec bounds each
// attachment).
template <typename Fn>
void for_small_files(const Statement& st, Fn&& fn) {
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    for (const auto& o : r->outputs) {
      if (!o.artifact.is_tree && o.artifact.size_bytes <= promises::kMaxAttachedBytes) {
        fn(o.artifact.digest);
      }
    }
  } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
    if (!v->artifact.is_tree) {
      if (v->artifact.size_bytes <= promises::kMaxAttachedBytes) fn(v->artifact.digest);
      return;
    }
    for (const auto& e : v->artifact.entries) {
      if (e.kind == EntryKind::kFile) fn(e.digest);
    }
  }
}

}  // namespace

Agent::Agent(promises::CoreConfig config, promises::RestoredState restored,
             std::vector<store::RunningJob> recovered, Effects effects,
             std::shared_ptr<spdlog::logger> log)
    : fx_(effects), log_(std::move(log)) {
  for (const auto& st : restored.statements) remember_refs(st);
  for (auto& row : recovered) recovered_.emplace(row.job, std::move(row));
  // Each output's statements are signed here (pump), after the starts it lets go.
  config.sign_on_take = false;
  core_ =
      std::make_unique<promises::Core>(std::move(config), std::move(restored), fx_.clock->now_ms());
}

Agent::~Agent() = default;

// ---- inputs ----

void Agent::start() {
  // Own statements carry a wall time: tick first.
  queue("tick", [this] { return core_->tick(fx_.clock->now_ms(), fx_.clock->wall_ms()); });
  queue("start", [this] { return core_->start(); });
  pump();
}

void Agent::message(const AgentKey& from, promises::Message message) {
  if (auto* b = std::get_if<promises::StatementBatch>(&message.body)) {
    counters_.statements_in += b->statements.size();
    if (!b->attached.empty()) keep_attached(*b);
  }
  static constexpr const char* kNames[] = {"hello",        "heartbeat", "sync-request",
                                           "statements",   "have-request", "have",
                                           "probe"};
  static_assert(std::size(kNames) == std::variant_size_v<promises::MessageBody>);
  queue(kNames[message.body.index()],
        [this, from, m = std::move(message)] { return core_->on_message(from, m); });
  pump();
}

void Agent::peer_connected(const AgentKey& peer) {
  queue("peer-connected", [this, peer] { return core_->peer_connected(peer); });
  pump();
}

void Agent::source_snapshot(const std::string& pipeline, const std::string& source,
                            const ArtifactRef& artifact, std::vector<promises::Attached> attached) {
  for (auto& a : attached) own_attached_.put(a.digest, std::move(a.bytes));
  is_tree_[artifact.digest] = artifact.is_tree;
  for (const auto& e : artifact.entries) is_tree_[e.digest] = e.kind == EntryKind::kTree;
  queue("source-snapshot", [this, pipeline, source, artifact] {
    return core_->source_snapshot(pipeline, source, artifact);
  });
  pump();
}

void Agent::artifact_lost(const Digest& digest) {
  queue("artifact-lost", [this, digest] { return core_->artifact_lost(digest); });
  pump();
}

void Agent::artifacts_removed(std::vector<Digest> digests) {
  queue("artifacts-removed", [this, d = std::move(digests)] { return core_->artifacts_removed(d); });
  pump();
}

void Agent::reconfigure(std::vector<promises::CorePromise> promises,
                        std::vector<promises::Pipeline> pipelines,
                        std::vector<AdvertSource> sources) {
  queue(
      "reconfigure", [this, p = std::move(promises), pl = std::move(pipelines), s = std::move(sources)]() mutable {
        return core_->reconfigure(std::move(p), std::move(pl), std::move(s));
      });
  pump();
}

void Agent::retry(std::vector<Digest> jobs, std::string reason) {
  queue("retry", [this, j = std::move(jobs), r = std::move(reason)] { return core_->retry(j, r); });
  pump();
}

void Agent::tick() {
  std::int64_t now = fx_.clock->now_ms();
  check_deadlines();
  flush_backlog();
  if (!fetch_queue_.empty()) start_queued_fetches();
  queue("tick", [this, now] { return core_->tick(now, fx_.clock->wall_ms()); });
  pump();
}

void Agent::withdraw() {
  queue("withdraw", [this] { return core_->withdraw(); });
  pump();
  commit_held();  // what the releases did not take along
}

void Agent::commit_held() {
  // Also between hold() and release(): the core took these in an earlier pass, and
  // the inputs queued since are not fed.
  if (held_statements_.empty() || pumping_ || failed_) return;
  commit_held_now_ = true;
  std::vector<promises::Output> none;
  carry_out(none);
}

bool Agent::fetch_for_client(const Digest& digest) {
  auto holders = core_->holders(digest);
  if (holders.empty()) return false;
  fetch(digest, std::move(holders), /*for_core=*/true);
  pump();
  return true;
}

void Agent::complete(const std::function<void()>& completion) {
  completion();
  flush_backlog();
  if (!fetch_queue_.empty() && !storing_behind()) start_queued_fetches();
  pump();
}

std::optional<bool> Agent::is_tree(const Digest& digest) const {
  auto it = is_tree_.find(digest);
  if (it == is_tree_.end()) return std::nullopt;
  return it->second;
}

// ---- the queue ----

void Agent::queue(const char* what, std::function<promises::Output()> input) {
  inputs_.emplace_back(what, std::move(input));
}

std::int64_t real_time_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Agent::release() {
  held_ = false;
  pump();
}

// Group commit: every input queued (up to kMaxInputsPerCommit) goes through the core
// first, then all their outputs are persisted in one commit and carried out in order.
// The core's state may run ahead of the disk meanwhile: nothing leaves the agent (a
// message, an action) before the commit that holds what it depends on.
void Agent::pump() {
  if (held_) return;     // release() pumps
  if (pumping_) return;  // an input queued while carrying out: fed by the loop below
  pumping_ = true;
  std::vector<promises::Output> outs;
  while (!inputs_.empty() && !failed_) {
    outs.clear();
    while (!inputs_.empty() && outs.size() < kMaxInputsPerCommit) {
      auto [what, input] = std::move(inputs_.front());
      inputs_.pop_front();
      std::int64_t t0 = real_time_us();
      promises::Output out = input();
      std::int64_t took = real_time_us() - t0;
      turn_.core_us += took;
      ++turn_.inputs;
      if (took > turn_.slowest_us) {
        turn_.slowest_us = took;
        turn_.slowest = what;
      }
      if (!out.empty()) {
        fetch_attached_now(out);
        start_placed_now(out);
        core_->sign(out);  // before anything reads its statements, or the core is called
        outs.push_back(std::move(out));
      }
    }
    carry_out(outs);
  }
  store_placed();
  // Index rows a worker handed back with no core input behind them (fetched objects no
  // job waits for, such as replicas): committed now, not left for whenever a pass next
  // persists something.
  if ((!index_rows_.empty() || !rows_ended_.empty() || !rows_started_.empty()) && !failed_) {
    outs.clear();
    carry_out(outs);
  }
  pumping_ = false;
}

// A fetch whose bytes came with their result is done on the spot (they are placed in the
// store, Agent::fetch), so it is acted as soon as the core asks for it rather than in
// carry_out: its "fetched" input then joins the same batch, and the start it lets go is
// decided in the pass that claims the job, shares its commit and goes before it (a
// start whose inputs are all placed may, where commits are synced later). carry_out
// would act it before the batch's commit anyway (a fetch writes no statement).
void Agent::fetch_attached_now(promises::Output& out) {
  if (!fx_.state->defers_sync() || peers_attached_.empty()) return;
  std::erase_if(out.actions, [&](promises::Action& a) {
    const auto* f = std::get_if<promises::FetchArtifact>(&a);
    if (f == nullptr || !peers_attached_.has(f->digest) || fetches_.count(f->digest) != 0) {
      return false;
    }
    act(a);
    return true;
  });
}

// A start whose inputs are all placed (so the loop links them, and it waits for nothing
// of the worker) goes as the core decides it, before the output's statements are signed
// (the core leaves that to the agent, CoreConfig::sign_on_take) and before the batch's
// other inputs: where commits are synced later a start may go before its claim's commit
// (carry_out), and so before its claim's signature, which only the commit and the
// peers read (docs/agent.md, "Starts before the signature").
void Agent::start_placed_now(promises::Output& out) {
  if (failed_ || !fx_.state->defers_sync()) return;
  std::erase_if(out.actions, [&](promises::Action& a) {
    const auto* sj = std::get_if<promises::StartJob>(&a);
    if (sj == nullptr || !inputs_placed(*sj)) return false;
    act(a);
    ++counters_.started_before_sync;
    return true;
  });
}

// Placed artifacts (Fetch::placed) are stored once no job here is preparing: the jobs
// they let start have been spawned, so the store's syncs neither hold their inputs back
// on the worker nor share the file system's journal with their start (the job's log
// files). Past kMaxStoreGroup waiting, at once.
void Agent::store_placed() {
  if (placed_.empty()) return;
  if (placed_.size() < kMaxStoreGroup) {
    for (const auto& [id, job] : jobs_) {
      if (job.phase == Job::Phase::kPreparing) return;
    }
  }
  std::vector<Digest> placed;
  placed.swap(placed_);
  for (const auto& d : placed) fetch_received(d);
}

// ---- carrying out the core's outputs (the order is the contract on promises::Output) ----

void Agent::carry_out(std::vector<promises::Output>& outs) {
  if (failed_) return;
  if (outs.empty() && index_rows_.empty() && rows_ended_.empty() && rows_started_.empty() &&
      !held_statements_due()) {
    return;
  }
  hold_peer_statements(outs);
  coalesce_broadcasts(outs);
  if (!own_attached_.empty()) attach_outputs(outs);
  bool statements = false;  // anything but fetched objects' index rows
  for (const auto& out : outs) {
    statements = statements || !out.persist.empty() || !out.proofs.empty() || !out.voided.empty() ||
                 !out.retired.empty();
  }
  // Held peers' statements go with any commit of statements (first: they came first),
  // or on their own once due; not with a commit of index rows only, which nothing waits
  // for.
  const bool with_held = !held_statements_.empty() && (statements || held_statements_due());
  statements = statements || with_held;
  bool to_persist =
      statements || !index_rows_.empty() || !rows_ended_.empty() || !rows_started_.empty();
  // Requests for statements go before the commit: a sync request carries no statement,
  // only what this agent holds in memory, and one sent for statements a crash then loses
  // asks for less than the agent lacks after its restart, where it asks again with what
  // it holds. A catch-up's next request leaves as the answer it follows is written, and
  // the peer makes the next answer meanwhile (docs/agent.md, "Inputs, one commit per
  // pass").
  // So do fetches: a transfer brings bytes and writes no statement, and an artifact a
  // crash then leaves unreferenced is collected as any other; a claimed job's inputs are
  // on their way while its claim is committed and synced (the core names as holders
  // only peers it holds live, so a link or a death later in the pass changes nothing
  // for them).
  // So do starts, where commits are synced later (below): a claim committed but not
  // synced is no more durable than one not committed yet, so a start that may go before
  // the sync may go before the commit, and its work directory and inputs are made while
  // the commit is written. Not a start the worker materializes while this commit holds
  // fetched objects' index rows: the worker finds an input by its row.
  const bool early_ok = to_persist && fx_.state->defers_sync();
  if (to_persist) {
    for (auto& out : outs) {
      std::erase_if(out.messages, [&](const promises::Outbound& m) {
        if (!std::holds_alternative<promises::SyncRequest>(m.message.body)) return false;
        send(m);
        return true;
      });
      std::erase_if(out.actions, [&](promises::Action& a) {
        const auto* sj = std::get_if<promises::StartJob>(&a);
        const bool start = sj && early_ok && (index_rows_.empty() || inputs_placed(*sj));
        if (!start && !std::holds_alternative<promises::FetchArtifact>(a) &&
            !std::holds_alternative<promises::ReplicateArtifact>(a)) {
          return false;
        }
        act(a);
        if (start) ++counters_.started_before_sync;
        return true;
      });
    }
  }
  // A pass with nothing to persist (heartbeats, events) does not touch the ledger.
  std::int64_t t0 = real_time_us();
  Status s = !to_persist ? Status::ok() : fx_.state->persist_together([&]() -> Status {
    VOW_RETURN_IF_ERROR(fx_.state->persist_index(index_rows_));
    for (const Digest& id : rows_ended_) {
      VOW_RETURN_IF_ERROR(fx_.state->remove_running_job(id));
    }
    // Rows of the runs this pass started too (the early starts above, and any since the
    // last commit): noted already, committed here.
    for (const auto& [id, row] : rows_started_) {
      VOW_RETURN_IF_ERROR(fx_.state->put_running_job(row));
    }
    if (with_held) VOW_RETURN_IF_ERROR(persist(held_statements_));
    for (const auto& out : outs) {
      VOW_RETURN_IF_ERROR(persist(out.persist));
      if (!out.proofs.empty()) VOW_RETURN_IF_ERROR(fx_.state->persist_proofs(out.proofs));
      if (!out.voided.empty()) VOW_RETURN_IF_ERROR(fx_.state->persist_voids(out.voided));
      if (!out.retired.empty()) VOW_RETURN_IF_ERROR(fx_.state->persist_retired(out.retired));
    }
    return Status::ok();
  });
  if (!s.is_ok()) {
    // Nothing may be sent or done that is not on disk: stop, the operator must act.
    log_->error("cannot persist statements: {}; shutting down", s.to_string());
    failed_ = true;
    return;
  }
  index_rows_.clear();
  rows_ended_.clear();
  // Every run noted so far has its row committed now, or has ended.
  if (to_persist) fx_.state->running_rows_settled();
  rows_started_.clear();
  if (with_held) held_statements_.clear();
  commit_held_now_ = false;
  std::int64_t t1 = real_time_us();
  turn_.persist_us += t1 - t0;
  if (fx_.state->defers_sync()) {
    // Committed, not yet durable: what follows from these outputs waits for the sync
    // (and so does every later output, in order). Probes go at once: they say only
    // that this agent is there, which a slow disk must not make untrue.
    // What a pass does waits for the sync of the last pass that persisted statements,
    // not for one that committed only fetched objects' index rows: nothing it sends or
    // does depends on those rows being durable (the objects' bytes are; the rows are
    // committed, so this process reads them; a crash before their sync leaves objects
    // in place unindexed, which the store's next open indexes again, as after a crash
    // during the store itself). So a job whose last input just arrived starts without
    // waiting for a sync of its own.
    // Where a sync costs less than handing it to another thread (tmpfs, a disk whose
    // cache survives power loss), it is made here, and the pass goes on as if nothing
    // waited: only with nothing parked, which would otherwise be overtaken.
    if (to_persist) {
      ++tickets_;
      if (parked_.empty() && fx_.state->sync_if_cheap(tickets_)) {
        synced_ = tickets_;
        ++counters_.synced_in_pass;
      } else {
        fx_.state->request_sync(tickets_);
      }
      if (statements) needed_ = tickets_;
    }
    bool park = needed_ > synced_ || !parked_.empty();
    if (!park && tickets_ > synced_) ++counters_.carried_before_sync;
    if (park) {
      for (auto& out : outs) {
        std::erase_if(out.messages, [&](const promises::Outbound& m) {
          if (!std::holds_alternative<promises::Probe>(m.message.body)) return false;
          send(m);
          return true;
        });
        // Starts do not wait either: a process sends nothing and no peer learns of the
        // run before its result, a statement of a later pass and so of a later sync. A
        // crash before this sync leaves a run the restart finds no claim for (its
        // running-job row, if committed, is killed; docs/agent.md "Starts before the
        // sync"), so the claim is on disk before anything that depends on it leaves.
        std::erase_if(out.actions, [&](promises::Action& a) {
          if (!std::holds_alternative<promises::StartJob>(a)) return false;
          act(a);
          ++counters_.started_before_sync;
          return true;
        });
        parked_.emplace_back(needed_, std::move(out));
      }
      turn_.carry_us += real_time_us() - t1;
      return;
    }
  }
  for (auto& out : outs) dispatch(out);
  turn_.carry_us += real_time_us() - t1;
}

// A pass whose outputs persist only peers' statements, and otherwise send only what
// goes before a commit anyway (sync requests, probes), start only transfers (which
// write no statement) and log, needs no commit of its own: nothing leaves the agent
// that depends on those statements. They are held, and committed with the next commit
// of statements (of any pass that sends or does anything else, so before it is sent or
// done), or once kMaxHeldPeerStatements are held or the first has waited
// kMaxHeldPeerStatementsMs. A crash meanwhile loses only statements their authors hold
// and peers hand over again in the restarted agent's first sync, as if they had not
// arrived yet; the agent's frontier on disk never names one it lost.
void Agent::hold_peer_statements(std::vector<promises::Output>& outs) {
  if (outs.empty() || commit_held_now_) return;
  std::size_t peers = 0;
  for (const auto& out : outs) {
    if (!out.proofs.empty() || !out.voided.empty() || !out.retired.empty()) return;
    for (const auto& st : out.persist) {
      if (st.author == core_->key()) return;
      ++peers;
    }
    for (const auto& m : out.messages) {
      if (!std::holds_alternative<promises::SyncRequest>(m.message.body) &&
          !std::holds_alternative<promises::Probe>(m.message.body)) {
        return;
      }
    }
    for (const auto& a : out.actions) {
      if (!std::holds_alternative<promises::FetchArtifact>(a) &&
          !std::holds_alternative<promises::ReplicateArtifact>(a)) {
        return;
      }
    }
  }
  if (peers == 0) return;
  if (held_statements_.empty()) held_since_ms_ = fx_.clock->now_ms();
  for (auto& out : outs) {
    for (auto& st : out.persist) held_statements_.push_back(std::move(st));
    out.persist.clear();
  }
  ++counters_.held_passes;
}

// The core sends each statement it publishes to every peer in a message of its own, and
// a pass often publishes two or more: a run's result and the claim of the next job its
// place is now free for, a burst of claims. Every peer pays for each message (its
// transport's I/O thread, a wake-up of its loop, a pass), so the pass's own statements
// go out together: the same statements in the same order, sent at the same moment (all
// of a pass's outputs are sent together, after the same sync).
void Agent::coalesce_broadcasts(std::vector<promises::Output>& outs) {
  auto joinable = [&](const promises::Outbound& m) -> bool {
    if (m.to) return false;
    const auto* b = std::get_if<promises::StatementBatch>(&m.message.body);
    if (b == nullptr || b->statements.empty() || !b->voids.empty() || b->answer || b->cut) {
      return false;
    }
    for (const auto& st : b->statements) {
      if (st.author != core_->key()) return false;
    }
    return true;
  };
  auto size_of = [](const promises::StatementBatch& b) {
    std::size_t n = 0;
    for (const auto& st : b.statements) {
      n += st.signed_form.bytes.size() + 64 + st.signed_form.path.size();
    }
    return n;
  };
  std::optional<std::pair<std::size_t, std::size_t>> open;  // (output, message) joined into
  std::size_t open_bytes = 0;
  for (std::size_t o = 0; o < outs.size(); ++o) {
    std::vector<promises::Outbound> kept;
    kept.reserve(outs[o].messages.size());
    for (auto& m : outs[o].messages) {
      if (!joinable(m)) {
        kept.push_back(std::move(m));
        continue;
      }
      auto& batch = std::get<promises::StatementBatch>(m.message.body);
      const std::size_t bytes = size_of(batch);
      if (open) {
        auto& into = std::get<promises::StatementBatch>(
            (open->first == o ? kept : outs[open->first].messages)[open->second].message.body);
        if (into.statements.size() + batch.statements.size() <= kMaxCoalescedStatements &&
            open_bytes + bytes <= kMaxCoalescedBytes) {
          for (auto& st : batch.statements) into.statements.push_back(std::move(st));
          open_bytes += bytes;
          continue;
        }
      }
      open = std::make_pair(o, kept.size());
      open_bytes = bytes;
      kept.push_back(std::move(m));
    }
    outs[o].messages = std::move(kept);
  }
}

// A result's small outputs go with it to every peer (docs/coordination.md, "Small outputs
// travel with their result"): the one that runs the next job, or keeps a copy, then
// stores them without asking for them.
void Agent::attach_outputs(std::vector<promises::Output>& outs) {
  for (auto& out : outs) {
    for (auto& m : out.messages) {
      auto* b = std::get_if<promises::StatementBatch>(&m.message.body);
      if (m.to || b == nullptr || b->answer || b->cut) continue;
      std::size_t total = 0;
      for (const auto& a : b->attached) total += a.bytes.size();
      for (const auto& st : b->statements) {
        if (st.author != core_->key()) continue;
        for_small_files(st, [&](const Digest& d) {
          auto bytes = own_attached_.take(d);
          if (!bytes || total + bytes->size() > promises::kMaxAttachedBatchBytes) return;
          total += bytes->size();
          b->attached.push_back(promises::Attached{d, std::move(*bytes)});
          ++counters_.attached_sent;
        });
      }
    }
  }
}

// Only what the batch's statements name as small files is kept (a peer cannot fill
// the memory with bytes nobody asked for), only if the bytes are their digest's (others
// are dropped and counted: forged bytes never displace true ones), and only until a
// fetch takes them (fetch) or newer bytes push them out.
void Agent::keep_attached(promises::StatementBatch& batch) {
  // A source version may name a million files: only those carried are looked up.
  std::unordered_set<Digest> carried, named;
  for (const auto& a : batch.attached) carried.insert(a.digest);
  for (const auto& st : batch.statements) {
    for_small_files(st, [&](const Digest& d) {
      if (carried.count(d)) named.insert(d);
    });
  }
  for (auto& a : batch.attached) {
    if (!named.count(a.digest) || fetches_.count(a.digest)) continue;
    if (!fx_.sink->bytes_match(a.digest, a.bytes)) {
      // Counted each time, logged the 1st, 2nd, 4th, 8th... time: a peer that sends them
      // by the thousand does not fill the log.
      const std::uint64_t n = ++counters_.attached_refused;
      if ((n & (n - 1)) == 0) {
        log_->warn("bytes attached for artifact {} are not its own: dropped ({} so far)",
                   a.digest.short_hex(), n);
      }
      continue;
    }
    peers_attached_.put(a.digest, std::move(a.bytes));
  }
  batch.attached.clear();
}

bool Agent::held_statements_due() const {
  if (held_statements_.empty()) return false;
  return commit_held_now_ || held_statements_.size() >= kMaxHeldPeerStatements ||
         fx_.clock->now_ms() - held_since_ms_ >= kMaxHeldPeerStatementsMs;
}

void Agent::dispatch(promises::Output& out) {
  for (const auto& m : out.messages) send(m);
  for (auto& a : out.actions) act(a);
  log_events(out.events);
}

void Agent::synced(std::uint64_t ticket) {
  synced_ = std::max(synced_, ticket);
  std::int64_t t0 = real_time_us();
  while (!parked_.empty() && parked_.front().first <= synced_ && !failed_) {
    promises::Output out = std::move(parked_.front().second);
    parked_.pop_front();
    dispatch(out);
  }
  turn_.carry_us += real_time_us() - t0;
  pump();  // what carrying out queued
}

void Agent::sync_failed(const Status& status) {
  // Nothing may be sent or done that is not on disk: stop, the operator must act.
  log_->error("cannot make statements durable: {}; shutting down", status.to_string());
  failed_ = true;
  parked_.clear();
}

Status Agent::persist(const std::vector<Statement>& statements) {
  if (statements.empty()) return Status::ok();
  std::vector<Statement> keep;
  keep.reserve(statements.size());
  for (const auto& st : statements) {
    bool own = st.author == core_->key();
    if (st.signed_form.empty()) {
      // An own statement the signer could not encode, or a peer's that was never
      // verified: neither may be stored or sent.
      if (own) return Status::invalid("own statement " + std::to_string(st.seq) + " is unsigned");
      log_->warn("statement {}/{} to persist has no signed form; dropped", short_key(st.author),
                 st.seq);
      continue;
    }
    if (own) {
      ++counters_.own_statements;
      if (first_of_batch(st.signed_form.path)) ++counters_.own_signatures;
      if (const auto* c = std::get_if<Claim>(&st.body)) {
        ++metrics_.claims;
        if (c->epoch > 1) ++metrics_.takeovers;
      } else if (const auto* r = std::get_if<JobResult>(&st.body)) {
        ++(r->ok ? metrics_.results_ok : metrics_.results_failed);
      }
    }
    remember_refs(st);
    keep.push_back(st);
  }
  VOW_RETURN_IF_ERROR(fx_.state->persist(keep));
  counters_.statements_persisted += keep.size();
  return Status::ok();
}

void Agent::remember_refs(const Statement& st) {
  auto note = [&](const ArtifactRef& r) {
    is_tree_[r.digest] = r.is_tree;
    for (const auto& e : r.entries) is_tree_[e.digest] = e.kind == EntryKind::kTree;
  };
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    for (const auto& o : r->outputs) note(o.artifact);
    for (const auto& i : r->inputs) note(i.artifact);
  } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
    note(v->artifact);
  }
}

void Agent::send(const promises::Outbound& out) {
  // An empty batch to one peer is an answer to its sync request with nothing new in it
  // (it ends that peer's pull at once); one to everybody carries nothing.
  if (const auto* b = std::get_if<promises::StatementBatch>(&out.message.body)) {
    if (!out.to && b->statements.empty() && b->voids.empty()) return;
    if (!out.to) {
      ++counters_.batches_broadcast;
      counters_.statements_broadcast += b->statements.size();
    }
  }
  if (out.to) {
    fx_.network->send(*out.to, out.message);
  } else {
    fx_.network->broadcast(out.message);
  }
}

void Agent::act(promises::Action& action) {
  std::visit(
      [&](auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, promises::StartJob>) {
          start_job(std::move(a));
        } else if constexpr (std::is_same_v<T, promises::KillJob>) {
          kill_job(a);
        } else if constexpr (std::is_same_v<T, promises::FetchArtifact>) {
          fetch(a.digest, a.holders, /*for_core=*/true);
        } else if constexpr (std::is_same_v<T, promises::ReplicateArtifact>) {
          fetch(a.digest, a.holders, /*for_core=*/true, std::nullopt, /*bulk=*/true);
        } else if constexpr (std::is_same_v<T, promises::Connect>) {
          if (!a.endpoints.empty()) fx_.network->connect(a.peer, a.endpoints);
        } else if constexpr (std::is_same_v<T, promises::PeerDeclaredDead>) {
          abandon_transfers_from(a.peer);
          fx_.network->peer_dead(a.peer);
        }
      },
      action);
}

void Agent::log_events(const std::vector<promises::Event>& events) {
  for (const auto& e : events) {
    const char* kind = promises::event_kind_name(e.kind);
    std::string peer = e.peer ? " [peer " + short_key(*e.peer) + "]" : "";
    switch (e.level) {
      case promises::EventLevel::kDebug:
        log_->debug("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kInfo:
        log_->info("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kWarn:
        log_->warn("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kError:
        log_->error("{}: {}{}", kind, e.text, peer);
        break;
    }
  }
}

// ---- the worker ----

void Agent::submit(Worker::Task task, std::function<void(const Status&)> refused) {
  // Placed objects are named in the store before the worker may look for one there
  // (the store of them that follows a start among others): their starts are made.
  fx_.sink->name_placed();
  // Completions come back through complete(), which pumps: never inside a batch.
  Worker::Task wrapped = [this, task = std::move(task)]() -> std::function<void()> {
    auto done = task();
    return [this, done = std::move(done)] { complete(done); };
  };
  if (backlog_.empty()) {
    Status s = fx_.worker->submit(wrapped);
    if (s.is_ok()) return;
    if (s.code() != StatusCode::kOverloaded) {
      refused(s);
      return;
    }
  }
  // The worker's queue is full (a burst of fetches or exits): keep the task, in order,
  // and hand it over as places free. Never dropped without its failure being handled.
  ++counters_.worker_backlogged;
  if (backlog_.size() >= kMaxWorkerBacklog) {
    ++counters_.worker_refused;
    log_->error("worker queue and backlog full ({} tasks): work refused", backlog_.size());
    refused(Status::overloaded("the agent's worker backlog is full"));
    return;
  }
  if (backlog_.empty()) log_->warn("worker queue full: tasks wait in the agent's backlog");
  backlog_.emplace_back(std::move(wrapped), std::move(refused));
}

void Agent::flush_backlog() {
  while (!backlog_.empty()) {
    Status s = fx_.worker->submit(backlog_.front().first);
    if (s.code() == StatusCode::kOverloaded) return;
    auto refused = std::move(backlog_.front().second);
    backlog_.pop_front();
    if (!s.is_ok()) refused(s);
  }
}

std::string Agent::job_name(const promises::StartJob& s) const {
  return s.job.job.short_hex() + " " + s.job.pipeline + "/" + s.job.stage +
         (s.job.shard.empty() ? "" : "[" + promises::printable(s.job.shard, 128) + "]");
}

}  // namespace vow::agent
