// Carrying out FetchArtifact and ReplicateArtifact (docs/coordination.md): a transfer from the
// first holder that can send, the next one when a transfer fails, a queue while the
// network has no place for another transfer, and a tree fetched as its encoding and
// then each child not held, stored once all its children are.
#include <algorithm>

#include "agent/agent.h"

namespace vow::agent {

void Agent::fetch(const Digest& digest, std::vector<AgentKey> holders, bool for_core,
                  std::optional<Digest> parent, bool bulk) {
  if (auto it = fetches_.find(digest); it != fetches_.end()) {
    // Already on its way (e.g. as a child of a tree): the core must still hear when it
    // arrives, or a job waiting for it waits forever. So must a core that asks again for
    // an object placed for it and lost since, while the store of the placed bytes is
    // under way: that store brings it back, and the core hears of it then (it heard of
    // the placed copy, which is gone).
    if (for_core) {
      it->second.for_core = true;
      it->second.placed = false;
    }
    if (parent) it->second.parents.push_back(*parent);
    if (!bulk && it->second.bulk) {
      // A job needs what replication was fetching: no longer background work.
      it->second.bulk = false;
      release_bulk(digest);
      if (it->second.bulk_waiting) {
        it->second.bulk_waiting = false;
        try_next_holder(it->second, Status::ok());
      }
    }
    return;
  }
  Fetch f;
  f.digest = digest;
  std::erase(holders, core_->key());
  f.holders = std::move(holders);
  f.for_core = for_core;
  f.bulk = bulk;
  if (parent) f.parents.push_back(*parent);
  if (auto it = is_tree_.find(digest); it != is_tree_.end()) f.is_tree = it->second;
  auto [it, inserted] = fetches_.emplace(digest, std::move(f));
  // It came with its result: stored from memory, no transfer (docs/coordination.md,
  // "Small outputs travel with their result").
  if (auto bytes = peers_attached_.take(digest)) {
    ++counters_.attached_used;
    Fetch& f = it->second;
    f.is_tree = false;
    // A job waiting for it starts from the bytes in place; the worker's store, which
    // syncs them and makes their index row, goes after the job's inputs are materialized
    // (Agent::store_placed), so the start waits for no sync.
    f.placed = f.for_core && fx_.sink->place(digest, *bytes).is_ok();
    log_->debug("artifact {} came with its result: {}", digest.short_hex(),
                f.placed ? "placed" : "storing");
    fx_.sink->hold(digest, std::move(*bytes));
    if (f.placed) {
      placed_.push_back(digest);
      fetched_for_core(digest);
    } else {
      fetch_received(digest);
    }
    return;
  }
  try_next_holder(it->second, Status::ok());
}

void Agent::try_next_holder(Fetch& f, const Status& why) {
  if (!why.is_ok()) log_->info("fetch of {}: {}", f.digest.short_hex(), why.to_string());
  f.transfer = 0;
  f.from.reset();
  if (f.bulk && f.holder < f.holders.size() && !bulk_busy_.count(f.digest)) {
    if (bulk_busy_.size() >= kMaxBulkFetches) {
      f.bulk_waiting = true;
      bulk_queue_.push_back(f.digest);
      return;
    }
    bulk_busy_.insert(f.digest);
  }
  if (f.holder < f.holders.size() && storing_behind()) {
    // Each fetched object is stored by the worker: while its backlog is long, new
    // transfers wait (a tree of 100,000 files would otherwise fill it, and refuse the
    // jobs' own work behind it). The worker's completions start them again.
    fetch_queue_.push_back(f.digest);
    return;
  }
  while (f.holder < f.holders.size()) {
    AgentKey peer = f.holders[f.holder++];
    auto id = fx_.network->fetch(peer, f.digest);
    if (id.is_ok()) {
      f.transfer = *id;
      f.from = peer;
      fetch_by_transfer_[*id] = f.digest;
      return;
    }
    if (id.status().code() == StatusCode::kOverloaded) {
      // This agent's own limit of concurrent transfers (a refusal by the peer arrives
      // later, as an outcome): wait for a place instead of failing, so that a tree of
      // many files is fetched a few at a time, not failed for its 65th child.
      --f.holder;
      fetch_queue_.push_back(f.digest);
      return;
    }
    log_->info("fetch of {} from {}: {}", f.digest.short_hex(), peer.hex().substr(0, 12),
               id.status().to_string());
  }
  fetch_done(f.digest, Status::unavailable("no holder could send artifact " + f.digest.hex()));
}

void Agent::start_queued_fetches() {
  // A fetch that finds no place goes back in the queue: stop there.
  std::size_t n = fetch_queue_.size();
  while (n-- > 0 && !fetch_queue_.empty()) {
    Digest d = fetch_queue_.front();
    fetch_queue_.pop_front();
    auto it = fetches_.find(d);
    if (it == fetches_.end() || it->second.transfer != 0) continue;
    if (storing_behind()) {
      fetch_queue_.push_front(d);
      break;
    }
    std::size_t before = fetch_queue_.size();
    try_next_holder(it->second, Status::ok());
    if (fetch_queue_.size() > before) break;
  }
}

// The core declared a peer dead: a transfer from it would wait for the stream's idle
// timeout before trying another holder, and a job waiting for that input (often the one
// being failed over) as long. Cancel each (its outcome moves the fetch on) and skip the
// peer where it is still to be tried.
void Agent::abandon_transfers_from(const AgentKey& peer) {
  std::vector<std::uint64_t> cancel;
  for (auto& [digest, f] : fetches_) {
    for (std::size_t k = f.holder; k < f.holders.size();) {
      if (f.holders[k] == peer) {
        f.holders.erase(f.holders.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        ++k;
      }
    }
    if (f.transfer != 0 && f.from == peer) {
      log_->info("fetch of {} from {}: the peer is dead, trying another holder", digest.short_hex(),
                 peer.hex().substr(0, 12));
      cancel.push_back(f.transfer);
    }
  }
  for (auto t : cancel) fx_.network->cancel_fetch(t);
}

void Agent::fetch_outcome(std::uint64_t transfer, const Status& status) {
  auto sit = fetch_by_transfer_.find(transfer);
  if (sit != fetch_by_transfer_.end()) {
    Digest digest = sit->second;
    fetch_by_transfer_.erase(sit);
    auto it = fetches_.find(digest);
    if (it != fetches_.end()) {
      it->second.transfer = 0;
      if (!status.is_ok()) {
        try_next_holder(it->second, status);
      } else {
        fetch_received(digest);
      }
    }
  }
  if (!fetch_queue_.empty()) start_queued_fetches();  // a place is free
  pump();
}

// Verified by the transfer; now into the store, off the loop, with the others that end
// while the worker stores the groups it has (one round of syncs and no commit of their
// own for the small ones: their index rows go with the next pass's statements).
void Agent::fetch_received(const Digest& digest) {
  log_->debug("artifact {} received: storing", digest.short_hex());
  to_store_.push_back(digest);
  if (storing_ < kMaxStoreGroupsQueued) store_received();
}

void Agent::store_received() {
  std::vector<std::pair<Digest, std::optional<bool>>> items;
  // A tree is stored once its children are indexed (ArtifactStore::put_tree): a group
  // with a tree's child in it is indexed by the worker, in one commit of its own.
  bool index_now = false;
  std::size_t taken = 0;
  for (; taken < to_store_.size() && items.size() < kMaxStoreGroup; ++taken) {
    auto it = fetches_.find(to_store_[taken]);
    if (it == fetches_.end()) continue;
    items.emplace_back(it->first, it->second.is_tree);
    index_now = index_now || !it->second.parents.empty();
  }
  to_store_.erase(to_store_.begin(), to_store_.begin() + static_cast<std::ptrdiff_t>(taken));
  if (items.empty()) return;
  ++storing_;
  ArtifactSink* sink = fx_.sink;
  submit(
      [this, sink, items, index_now]() -> std::function<void()> {
        std::vector<store::ArtifactRecord> rows;
        auto results = sink->store_received_together(items, index_now ? nullptr : &rows);
        return [this, items, results = std::move(results), rows = std::move(rows)]() mutable {
          --storing_;
          // Committed with the next pass's statements (the core hears of each object in
          // that pass, and nothing it then does leaves before the commit is synced).
          index_rows_.insert(index_rows_.end(), rows.begin(), rows.end());
          for (std::size_t k = 0; k < items.size(); ++k) {
            received_stored(items[k].first, k < results.size()
                                                ? std::move(results[k])
                                                : Result<Received>(Status::io("not stored")));
          }
          store_received();
        };
      },
      [this, items](const Status& s) {
        --storing_;
        for (const auto& [digest, is_tree] : items) fetch_done(digest, s);
        store_received();
      });
}

void Agent::received_stored(const Digest& digest, Result<Received> r) {
  auto it = fetches_.find(digest);
  if (it == fetches_.end()) return;
  if (!r.is_ok()) {
    fetch_done(digest, r.status());
    return;
  }
  if (!r->tree) {
    fetch_done(digest, Status::ok());
    return;
  }
  it->second.tree_entries = r->tree;
  for (const auto& [child, child_is_tree] : r->missing) {
    it->second.waiting_children.insert(child);
    is_tree_[child] = child_is_tree;
  }
  if (r->missing.empty()) {
    store_tree(digest);
    return;
  }
  // Children come from the holders of the tree; the tree itself now only waits.
  std::vector<AgentKey> holders = it->second.holders;
  const bool bulk = it->second.bulk;
  release_bulk(digest);
  for (const auto& [child, child_is_tree] : r->missing) {
    fetch(child, holders, /*for_core=*/false, digest, bulk);
  }
}

bool Agent::storing_behind() const {
  return backlog_.size() >= kFetchPauseBacklog || to_store_.size() >= kFetchPauseBacklog;
}

std::set<Digest> Agent::in_flight() const {
  std::set<Digest> out;
  for (const auto& [digest, f] : fetches_) {
    out.insert(digest);
    if (f.tree_entries) {
      for (const auto& e : *f.tree_entries) out.insert(e.digest);
    }
  }
  return out;
}

// A tree whose children are all held: store its encoding.
void Agent::store_tree(const Digest& digest) {
  auto it = fetches_.find(digest);
  if (it == fetches_.end() || !it->second.tree_entries) return;
  ArtifactSink* sink = fx_.sink;
  auto entries = *it->second.tree_entries;
  submit(
      [this, sink, digest, entries]() -> std::function<void()> {
        Status s = sink->store_tree(digest, entries);
        return [this, digest, s] {
          // A tree that would expand past the limits (promises/tree.h) is refused.
          if (s.code() == StatusCode::kInvalid) ++counters_.trees_refused;
          fetch_done(digest, s);
        };
      },
      [this, digest](const Status& s) { fetch_done(digest, s); });
}

// A bulk place freed: the next bulk fetches waiting start.
void Agent::release_bulk(const Digest& digest) {
  if (bulk_busy_.erase(digest) == 0) return;
  while (bulk_busy_.size() < kMaxBulkFetches && !bulk_queue_.empty()) {
    Digest next = bulk_queue_.front();
    bulk_queue_.pop_front();
    auto it = fetches_.find(next);
    if (it == fetches_.end() || !it->second.bulk_waiting) continue;
    it->second.bulk_waiting = false;
    try_next_holder(it->second, Status::ok());
  }
}

void Agent::fetch_done(Digest digest, const Status& status) {
  auto it = fetches_.find(digest);
  if (it == fetches_.end()) return;
  Fetch f = std::move(it->second);
  fetches_.erase(it);
  release_bulk(digest);
  if (f.transfer != 0) fetch_by_transfer_.erase(f.transfer);
  for (const auto& parent : f.parents) {
    auto pit = fetches_.find(parent);
    if (pit == fetches_.end()) continue;
    if (!status.is_ok()) {
      fetch_done(parent, status);
      continue;
    }
    pit->second.waiting_children.erase(digest);
    if (pit->second.waiting_children.empty()) store_tree(parent);
  }
  if (f.placed) {
    // The core heard of it when it was placed: storing it made it durable, or could not
    // (left in place, unindexed: verified and indexed by the store's next open).
    if (!status.is_ok()) {
      log_->warn("artifact {} placed for a job, not stored: {}", digest.short_hex(),
                 status.to_string());
    }
    return;
  }
  if (!f.for_core) return;
  if (status.is_ok()) {
    log_->debug("artifact {} fetched", digest.short_hex());
    fetched_for_core(digest);
  } else if (status.code() == StatusCode::kInvalid) {
    // Refused for what it is (a tree past the expansion limits): fetching it again, from
    // anyone, ends the same way. The runs waiting for it fail with the reason.
    log_->warn("artifact {} refused: {}", digest.short_hex(), status.message());
    queue("artifact-refused", [this, digest, why = status.message()] { return core_->artifact_refused(digest, why); });
  } else {
    log_->warn("artifact {} not fetched: {}", digest.short_hex(), status.to_string());
    queue("artifact-fetch-failed", [this, digest] { return core_->artifact_fetch_failed(digest); });
  }
}

void Agent::fetched_for_core(const Digest& digest) {
  arriving_.insert(digest);
  queue("artifact-fetched", [this, digest] {
    arriving_.erase(digest);
    return core_->artifact_fetched(digest);
  });
}

}  // namespace vow::agent
