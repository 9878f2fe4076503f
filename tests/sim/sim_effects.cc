// The simulated effects of each host (world.h).
#include <algorithm>

#include "promises/batch_proof.h"
#include "tests/sim/world.h"
#include "transport/codec.h"

namespace vow::sim {
namespace {

constexpr int kWorkerQueue = 64;         // the worker's queue, as a real one's limit
constexpr int kSqueezedWorkerQueue = 1;  // while the fault "worker queue full" holds
constexpr int kMaxTransfers = 4;         // transfers in flight per agent
constexpr double kSpawnFailure = 0.1;    // while the fault "spawn fails" holds
constexpr double kSlowKill = 0.15;       // a process that takes its time to die
constexpr std::int64_t kWallBaseMs = 1'800'000'000'000;

std::string dstr(const Digest& d) {
  return std::string(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
}

int env_int(const promises::Stage& s, const std::string& k) {
  auto it = s.env.find(k);
  return it == s.env.end() ? 0 : std::atoi(it->second.c_str());
}

}  // namespace

// ---- signatures ----

namespace {

// The simulator's stand-in for an Ed25519 signature by AUTHOR over MESSAGE: a digest of
// both (the simulated network checks it; no hostile host knows another's "key" by rule).
transport::Signature fake_signature(const AgentKey& author, std::string_view message) {
  Hasher h;
  h.update_field("vow-sim-signature");
  h.update_field(std::string_view(reinterpret_cast<const char*>(author.bytes.data()),
                                  author.bytes.size()));
  h.update_field(message);
  Digest d = h.finish();
  transport::Signature sig{};
  std::copy(d.bytes.begin(), d.bytes.end(), sig.begin());
  std::copy(d.bytes.begin(), d.bytes.end(), sig.begin() + 32);
  return sig;
}

}  // namespace

SignedForm sim_sign(const Statement& st) {
  SignedForm f;
  auto bytes = transport::encode_statement(st);
  if (!bytes.is_ok()) return f;
  f.signature = fake_signature(st.author, *bytes);
  f.bytes = std::move(bytes).value();
  return f;
}

std::string sim_encode(const Statement& st) {
  auto bytes = transport::encode_statement(st);
  return bytes.is_ok() ? std::move(bytes).value() : std::string();
}

// As transport::sign_together, with the simulator's signature.
void sim_sign_together(const AgentKey& author, const std::vector<SignedForm*>& forms) {
  sign_forms_together(forms, [&](std::string_view m) { return fake_signature(author, m); });
}

bool sim_verify(const Statement& st) {
  const SignedForm& f = st.signed_form;
  if (f.empty()) return false;
  auto bytes = transport::encode_statement(st);
  if (!bytes.is_ok() || *bytes != f.bytes) return false;
  std::string storage;
  auto message = signed_message(f.bytes, f.path, storage);
  return message && f.signature == fake_signature(st.author, *message);
}

// ---- clock ----

std::int64_t SimClock::now_ms() const { return w_->now(); }
std::int64_t SimClock::wall_ms() const { return w_->wall(); }
std::int64_t World::wall() const { return kWallBaseMs + now_; }

// ---- network ----

void SimNetwork::send(const AgentKey& to, const promises::Message& message) {
  int j = w_->index_of(to);
  if (j >= 0 && j != i_) w_->send(i_, j, std::make_shared<promises::Message>(message));
}

void SimNetwork::broadcast(const promises::Message& message) {
  w_->note_broadcast(message);
  auto m = std::make_shared<promises::Message>(message);
  for (int j = 0; j < w_->options().agents; ++j) {
    if (j != i_) w_->send(i_, j, m);
  }
}

void SimNetwork::connect(const AgentKey& peer, const std::vector<std::string>&) {
  int j = w_->index_of(peer);
  if (j >= 0 && j != i_) w_->connect_pair(i_, j);
}

Result<std::uint64_t> SimNetwork::fetch(const AgentKey& from, const Digest& digest) {
  Host& h = w_->host(i_);
  int j = w_->index_of(from);
  // The hostile host serves its own artifacts (-1), without loss or partition.
  if (j < 0 && from != w_->hostile_key()) return Status::not_found("no such peer");
  if (h.transfers >= kMaxTransfers) return Status::overloaded("no place for another transfer");
  ++h.transfers;
  ++w_->result().transfers;
  std::uint64_t id = w_->next_token();
  h.cancelled[id] = false;
  Ev ev{EvType::kFetchDone};
  ev.agent = i_;
  ev.from = j;
  ev.id = digest;
  ev.token = id;
  ev.incarnation = h.incarnation;
  w_->schedule(w_->now() + 3 + static_cast<std::int64_t>(w_->rnd(20)), ev);
  return id;
}

void SimNetwork::cancel_fetch(std::uint64_t id) {
  Host& h = w_->host(i_);
  auto it = h.cancelled.find(id);
  if (it == h.cancelled.end() || it->second) return;
  it->second = true;
  // The outcome (an error) follows soon, as the transport's would.
  Ev ev{EvType::kFetchDone};
  ev.agent = i_;
  ev.token = id;
  ev.incarnation = h.incarnation;
  w_->schedule(w_->now() + 1, ev);
}

// ---- disk ----

bool SimDisk::defers_sync() const { return w_->deferred_sync(); }

void SimDisk::write(std::function<void()> op) {
  if (!w_->deferred_sync()) {
    op();
    return;
  }
  w_->host(i_).unsynced.push_back(std::move(op));
}

void SimDisk::request_sync(std::uint64_t ticket) {
  Host& h = w_->host(i_);
  auto& batch = h.sync_batches[ticket];
  for (auto& op : h.unsynced) batch.push_back(std::move(op));
  h.unsynced.clear();
  h.sync_requested = std::max(h.sync_requested, ticket);
  if (!h.sync_inflight) w_->start_sync(i_);
}

// A fast disk, in half of the passes that ask: the writes so far are durable at once,
// as vowd's syncer makes them on the loop where a sync costs a few microseconds. Never
// while a sync is under way (vowd's is not made on the loop then either).
bool SimDisk::sync_if_cheap(std::uint64_t ticket) {
  Host& h = w_->host(i_);
  if (!w_->deferred_sync() || w_->slow_disk() || h.sync_inflight || w_->rnd(2) == 0) return false;
  for (auto& [t, batch] : h.sync_batches) {
    for (auto& op : batch) op();
  }
  h.sync_batches.clear();
  for (auto& op : h.unsynced) op();
  h.unsynced.clear();
  h.sync_requested = std::max(h.sync_requested, ticket);
  return true;
}

Status SimDisk::persist(const std::vector<Statement>& statements) {
  std::string who = "a" + std::to_string(i_);
  if (w_->disk_full(i_)) {
    w_->trace(who + " persist failed: disk full");
    return Status::io("no space left on device (simulated)");
  }
  for (const auto& st : statements) {
    if (const auto* c = std::get_if<Claim>(&st.body); c && st.author == w_->host(i_).key) {
      w_->host(i_).committed_claims.insert({c->job.job, c->epoch});
    }
  }
  write([w = w_, i = i_, who, statements] {
    Host& h = w->host(i);
    for (const auto& st : statements) {
      if (st.author == h.key) {
        if (st.seq <= h.persisted_seq) w->fail(who + " reused own seq " + u64s(st.seq));
        h.persisted_seq = std::max(h.persisted_seq, st.seq);
        w->trace(who + " persist own " + u64s(st.seq) + " " + statement_kind_name(st.kind()));
        if (const auto* c = std::get_if<Claim>(&st.body)) {
          auto& crashed = w->crashed_claims();
          auto it = crashed.find(c->job.job);
          if (it != crashed.end() && it->second.second != i &&
              w->claim_recorded().insert(c->job.job).second) {
            w->result().failover_claim_ms.push_back(w->now() - it->second.first);
          }
        }
      }
      h.persisted.push_back(st);
    }
  });
  return Status::ok();
}

Status SimDisk::persist_proofs(const std::vector<Statement>& proofs) {
  if (w_->disk_full(i_)) return Status::io("no space left on device (simulated)");
  write([w = w_, i = i_, proofs] {
    Host& h = w->host(i);
    for (const auto& st : proofs) h.persisted_proofs.push_back(st);
  });
  return Status::ok();
}

Status SimDisk::persist_voids(const std::vector<StatementRef>& slots) {
  if (w_->disk_full(i_)) return Status::io("no space left on device (simulated)");
  write([w = w_, i = i_, slots] {
    Host& h = w->host(i);
    for (const auto& r : slots) {
      std::erase_if(h.persisted, [&](const Statement& st) {
        return st.author == r.author && st.seq == r.seq && st.kind() == StatementKind::kAdvert;
      });
      h.persisted_voids.push_back({r.author, r.seq, r.seq});
    }
  });
  return Status::ok();
}

Status SimDisk::persist_retired(const std::vector<StatementRef>& retired) {
  if (w_->disk_full(i_)) return Status::io("no space left on device (simulated)");
  write([w = w_, i = i_, retired] {
    Host& h = w->host(i);
    std::set<std::pair<AgentKey, std::uint64_t>> gone;
    for (const auto& r : retired) gone.insert({r.author, r.seq});
    std::erase_if(h.persisted,
                  [&](const Statement& st) { return gone.count({st.author, st.seq}); });
  });
  return Status::ok();
}

Status SimDisk::persist_index(const std::vector<store::ArtifactRecord>& rows) {
  // Committed: what the check at the end asks (a commit's durability is the ledger's
  // part, modelled by write()).
  Host& h = w_->host(i_);
  for (const auto& r : rows) h.unindexed.erase(r.digest);
  return Status::ok();
}

Status SimDisk::put_running_job(const store::RunningJob& row) {
  w_->host(i_).running_table[row.job] = row;
  return Status::ok();
}

Status SimDisk::remove_running_job(const Digest& job) {
  w_->host(i_).running_table.erase(job);
  return Status::ok();
}

// ---- worker ----

Status SimWorker::submit(Task task) {
  Host& h = w_->host(i_);
  int limit = w_->worker_squeezed() ? kSqueezedWorkerQueue : kWorkerQueue;
  if (h.worker_pending >= limit) {
    ++w_->result().worker_refusals;
    return Status::overloaded("worker queue full (simulated)");
  }
  ++h.worker_pending;
  // One worker thread: tasks run one after another; a slow disk makes each slow.
  std::int64_t cost = w_->slow_disk() ? 20 + static_cast<std::int64_t>(w_->rnd(200))
                                      : 1 + static_cast<std::int64_t>(w_->rnd(3));
  std::int64_t at = std::max(w_->now(), h.worker_free_at) + cost;
  h.worker_free_at = at;
  Ev ev{EvType::kWorkerDone};
  ev.agent = i_;
  ev.incarnation = h.incarnation;
  ev.task = std::move(task);
  w_->schedule(at, ev);
  return Status::ok();
}

// ---- processes ----

std::string SimExecutor::work_dir(const promises::StartJob& start) const {
  return "sim/" + start.job.job.short_hex() + "-" + std::to_string(start.epoch);
}

Status SimExecutor::create_work_dir(const promises::StartJob& s) {
  Host& h = w_->host(i_);
  std::string who = "a" + std::to_string(i_);
  // Invariant 2: no job with a canonical result here is started (except to regenerate).
  // Starts wait for no sync (docs/agent.md, "Starts before the sync"), so the core that
  // decided one is the core that carries it out.
  if (!s.regenerate && h.agent->core().canonical(s.job.job) != nullptr) {
    w_->fail(who + " started job " + s.job.job.short_hex() +
             " that already had a canonical result");
  }
  auto& unindexed = h.unindexed_at_start[s.job.job];
  unindexed.clear();
  for (const auto& in : s.inputs) {
    if (h.unindexed.count(in.artifact.digest)) unindexed.insert(in.artifact.digest);
  }
  // Where commits are synced later, a start goes before its claim's commit too.
  if (!h.committed_claims.count({s.job.job, s.epoch})) ++w_->result().started_before_commit;
  for (const auto& in : s.inputs) {
    bool here = h.store.count(in.artifact.digest) != 0;
    if (!here && in.artifact.is_tree) {
      here = std::all_of(in.artifact.entries.begin(), in.artifact.entries.end(),
                         [&](const TreeEntry& e) { return h.store.count(e.digest) != 0; });
    }
    if (!here) w_->fail(who + " started " + s.job.job.short_hex() + " without input " + in.name);
  }
  w_->trace(who + " start " + s.job.job.short_hex() + " e" + std::to_string(s.epoch) +
            (s.regenerate ? " regen" : ""));
  return Status::ok();
}

Status SimExecutor::materialize_inputs(const promises::StartJob& s) {
  Host& h = w_->host(i_);
  // The worker may run as soon as the loop hands it the task: an input it finds by its
  // row must have had the row committed by then (a placed one needs none).
  for (const auto& d : h.unindexed_at_start[s.job.job]) {
    if (!h.placed.count(d)) {
      w_->fail("a" + std::to_string(i_) + " started " + s.job.job.short_hex() +
               " before the index row of its input " + d.short_hex() + " was committed");
    }
  }
  h.unindexed_at_start.erase(s.job.job);
  for (const auto& in : s.inputs) {
    if (h.store.count(in.artifact.digest)) continue;
    bool composed = in.artifact.is_tree && !in.artifact.entries.empty() &&
                    std::all_of(in.artifact.entries.begin(), in.artifact.entries.end(),
                                [&](const TreeEntry& e) { return h.store.count(e.digest) != 0; });
    // Lost meanwhile (a fault): the run fails, as a real one would.
    if (!composed) return Status::not_found("input '" + in.name + "' is not held");
    h.store.insert(in.artifact.digest);
  }
  return Status::ok();
}

// The agent's loop links inputs it placed and has not stored since: each must be a
// small file held here (placed, or stored meanwhile by a fetch of the same bytes).
Status SimExecutor::link_placed_inputs(const promises::StartJob& s, const PlacedSource& source) {
  (void)source;  // the simulated store holds placed objects by digest
  Host& h = w_->host(i_);
  for (const auto& in : s.inputs) {
    const ArtifactRef* ref = w_->ref(in.artifact.digest);
    if (in.artifact.is_tree || (ref && ref->size_bytes > promises::kMaxAttachedBytes)) {
      w_->fail("a" + std::to_string(i_) + " linked input '" + in.name + "' of " +
               s.job.job.short_hex() + ", which it cannot have placed");
      return Status::unavailable("not placed");
    }
    // Lost meanwhile (a fault): the worker's materialize is tried, and fails the run.
    if (!h.store.count(in.artifact.digest)) return Status::not_found("input '" + in.name + "'");
  }
  if (!h.committed_claims.count({s.job.job, s.epoch})) ++w_->result().linked_before_commit;
  return Status::ok();
}

Result<std::int64_t> SimExecutor::spawn(const promises::StartJob& s) {
  Host& h = w_->host(i_);
  std::string who = "a" + std::to_string(i_);
  if (w_->spawn_faults() && w_->chance(kSpawnFailure)) {
    w_->trace(who + " spawn failed " + s.job.job.short_hex());
    return Status::io("fork: resource temporarily unavailable (simulated)");
  }
  auto old = h.procs.find(s.job.job);
  if (old != h.procs.end() && !old->second.exited) {
    w_->fail(who + " runs two processes of job " + s.job.job.short_hex() + " at once (epochs " +
             std::to_string(old->second.epoch) + " and " + std::to_string(s.epoch) + ")");
  }
  Proc p;
  p.job = s.job.job;
  p.epoch = s.epoch;
  p.token = w_->next_token();
  p.fail_pct = env_int(s.stage, "SIM_FAIL");
  p.always_fails = env_int(s.stage, "SIM_ALWAYS_FAIL") != 0;
  h.procs[s.job.job] = p;
  auto& crashed = w_->crashed_claims();
  if (auto it = crashed.find(s.job.job); it != crashed.end()) {
    // A takeover by another agent; the crashed agent resuming its own claim is not one.
    if (it->second.second != i_) w_->result().failover_ms.push_back(w_->now() - it->second.first);
    crashed.erase(it);
    w_->claim_recorded().erase(s.job.job);
  }
  w_->trace(who + " spawn " + s.job.job.short_hex() + " e" + std::to_string(s.epoch));
  Ev ev{EvType::kProcExit};
  ev.agent = i_;
  ev.id = s.job.job;
  ev.token = p.token;
  std::int64_t ms = env_int(s.stage, "SIM_MS");
  w_->schedule(
      w_->now() + ms + static_cast<std::int64_t>(w_->rnd(static_cast<std::uint64_t>(ms / 4 + 1))),
      ev);
  return static_cast<std::int64_t>(p.token);
}

void SimExecutor::kill(const Digest& job) {
  Host& h = w_->host(i_);
  auto it = h.procs.find(job);
  if (it == h.procs.end() || it->second.exited || it->second.killed) return;
  it->second.killed = true;
  // Most die at once; some take their time (a command that ignores SIGTERM, a process
  // in uninterruptible sleep): the agent must wait for the exit, whatever it is doing.
  std::int64_t delay = w_->options().slow_kills || w_->chance(kSlowKill)
                           ? 200 + static_cast<std::int64_t>(w_->rnd(1300))
                           : 1 + static_cast<std::int64_t>(w_->rnd(10));
  if (delay >= 200) ++w_->result().slow_kills;
  Ev ev{EvType::kProcExit};
  ev.agent = i_;
  ev.id = job;
  ev.token = it->second.token;
  ev.from = 1;  // killed
  w_->schedule(w_->now() + delay, ev);
}

agent::Adoption SimExecutor::adopt(const store::RunningJob& row, const promises::StartJob& s) {
  Host& h = w_->host(i_);
  agent::Adoption a;
  auto it = h.procs.find(row.job);
  if (it == h.procs.end() || it->second.token != static_cast<std::uint64_t>(row.pid) ||
      it->second.epoch != s.epoch) {
    return a;
  }
  a.started_unix_ms = row.started_unix_ms;
  if (it->second.exited) {
    a.kind = agent::Adoption::Kind::kFinished;
    a.exit_status = it->second.exit.exit_status;
    a.signaled = it->second.exit.signaled;
  } else {
    a.kind = agent::Adoption::Kind::kRunning;
    it->second.watched = true;
  }
  ++w_->result().adoptions;
  w_->trace("a" + std::to_string(i_) + " adopt " + row.job.short_hex());
  return a;
}

void SimExecutor::discard_leftover(const store::RunningJob& row) {
  Host& h = w_->host(i_);
  auto it = h.procs.find(row.job);
  if (it != h.procs.end() && it->second.token == static_cast<std::uint64_t>(row.pid)) {
    h.procs.erase(it);
    w_->trace("a" + std::to_string(i_) + " discard " + row.job.short_hex());
  }
}

promises::JobOutcome SimExecutor::collect(const promises::StartJob& s,
                                          const agent::ProcessExit& exit,
                                          const std::string& error,
                                          std::vector<store::ArtifactRecord>* /*index_rows*/) {
  Host& h = w_->host(i_);
  promises::JobOutcome out;
  out.exit_status = exit.exit_status;
  ++w_->result().jobs_done;
  if (!error.empty()) {
    out.error = error;
    return out;
  }
  const promises::Stage& stage = s.stage;
  std::string salt =
      env_int(stage, "SIM_NONDET") ? h.config.name + "/" + std::to_string(s.epoch) : "";
  out.ok = true;
  for (const auto& name : stage.outputs) {
    ArtifactRef ref;
    int n = stage.foreach ? 0 : env_int(stage, "SIM_TREE");
    if (n > 0) {
      std::vector<TreeEntry> entries;
      for (int e = 0; e < n; ++e) {
        Digest d = hash_of({"entry", dstr(s.job.job), name, std::to_string(e), salt});
        entries.push_back(TreeEntry{"e" + std::to_string(e), EntryKind::kFile, d});
        w_->add_ref(ArtifactRef{d, false, 5, {}});
      }
      ref.digest = *tree_digest(entries);
      ref.is_tree = true;
      ref.size_bytes = static_cast<std::uint64_t>(n) * 5;
      ref.entries = entries;
    } else {
      ref.digest = hash_of({"file", dstr(s.job.job), name, salt});
      // Half of them small enough to go with their result, half fetched.
      ref.size_bytes = (ref.digest.bytes[0] & 1) != 0 ? 5 : 2 * promises::kMaxAttachedBytes;
    }
    w_->add_ref(ref);
    w_->add_to_store(h, ref.digest);
    out.outputs.push_back(NamedArtifact{name, ref});
  }
  return out;
}

void SimExecutor::remove_work_dir(const promises::StartJob& s) {
  Host& h = w_->host(i_);
  auto it = h.procs.find(s.job.job);
  if (it != h.procs.end() && it->second.exited && it->second.epoch == s.epoch) h.procs.erase(it);
}

// ---- fetched bytes ----

Result<agent::Received> SimSink::store_received(const Digest& digest, std::optional<bool>) {
  Host& h = w_->host(i_);
  if (!h.incoming.erase(digest)) return Status::corrupt("no bytes of " + digest.hex() + " arrived");
  h.placed.erase(digest);  // stored: durable
  agent::Received r;
  const ArtifactRef* ref = w_->ref(digest);
  if (ref && ref->is_tree && !ref->entries.empty()) {
    for (const auto& e : ref->entries) {
      if (!h.store.count(e.digest)) r.missing.emplace_back(e.digest, e.kind == EntryKind::kTree);
    }
    r.tree = ref->entries;
    return r;
  }
  h.store.insert(digest);
  return r;
}

std::vector<Result<agent::Received>> SimSink::store_received_together(
    const std::vector<std::pair<Digest, std::optional<bool>>>& items,
    std::vector<store::ArtifactRecord>* rows) {
  Host& h = w_->host(i_);
  std::vector<Result<agent::Received>> out;
  for (const auto& [digest, is_tree] : items) {
    out.push_back(store_received(digest, is_tree));
    if (rows != nullptr && out.back().is_ok() && !out.back()->tree) {
      store::ArtifactRecord rec;
      rec.digest = digest;
      rows->push_back(rec);
      h.unindexed.insert(digest);
    }
  }
  return out;
}

std::string sim_bytes(const Digest& digest) { return "sim-file:" + dstr(digest); }

bool SimSink::bytes_match(const Digest& digest, std::string_view bytes) {
  return bytes == sim_bytes(digest);
}

void SimSink::hold(const Digest& digest, std::string bytes) {
  // The agent checks attached bytes on arrival: others reaching the store are a bug.
  if (bytes != sim_bytes(digest)) {
    w_->fail("a" + std::to_string(i_) + " stored attached bytes that are not " + digest.hex() + "'s");
    return;
  }
  w_->host(i_).incoming.insert(digest);
}

Status SimSink::place(const Digest& digest, std::string_view bytes) {
  if (bytes != sim_bytes(digest)) {
    w_->fail("a" + std::to_string(i_) + " placed attached bytes that are not " + digest.hex() + "'s");
    return Status::corrupt("not its bytes");
  }
  Host& h = w_->host(i_);
  if (!h.store.count(digest)) {
    h.store.insert(digest);
    h.placed.insert(digest);
    if (w_->options().lose_placed && w_->rnd(4) == 0) {
      Ev ev{EvType::kLose};
      ev.agent = i_;
      ev.id = digest;
      ev.token = 1;  // this object, not one drawn at random
      w_->schedule(w_->now() + 1, ev);
    }
  }
  return Status::ok();
}

std::optional<std::string> SimSink::held_bytes(const Digest& digest, std::size_t max_bytes) {
  const Host& h = w_->host(i_);
  const ArtifactRef* ref = w_->ref(digest);
  if (!h.store.count(digest) || ref == nullptr || ref->is_tree || ref->size_bytes > max_bytes) {
    return std::nullopt;
  }
  return sim_bytes(digest);
}

Status SimSink::store_tree(const Digest& digest, const std::vector<TreeEntry>& entries) {
  Host& h = w_->host(i_);
  for (const auto& e : entries) {
    if (!h.store.count(e.digest))
      return Status::not_found("tree child " + e.digest.hex() + " lost");
  }
  // As the artifact store does: a tree past the expansion limits is refused (kInvalid).
  TreeReader reader{
      [&](const Digest& d) -> Result<std::vector<TreeEntry>> {
        const ArtifactRef* r = w_->ref(d);
        if (r == nullptr) return Status::not_found("no tree " + d.hex());
        return r->entries;
      },
      [&](const Digest& d) -> Result<std::uint64_t> {
        const ArtifactRef* r = w_->ref(d);
        return r == nullptr ? 0 : r->size_bytes;
      }};
  std::map<Digest, TreeExpansion> memo;
  auto x = expand_tree(digest, reader, &memo);
  if (!x.is_ok()) return x.status();
  Status limits = check_expansion(digest, *x);
  if (!limits.is_ok()) {
    w_->note_tree_refused();
    return limits;
  }
  h.store.insert(digest);
  return Status::ok();
}

}  // namespace vow::sim
