// MemoryLedger, FaultyLedger and the helpers both LedgerStore implementations share.
#include "store/ledger.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "store/statement_check.h"

namespace vow::store {

const char* artifact_kind_name(ArtifactKind kind) {
  return kind == ArtifactKind::kTree ? "tree" : "file";
}

Status validate_stored_statement(const StoredStatement& s) {
  std::string where = "statement " + s.author.hex().substr(0, 16) + "/" + std::to_string(s.seq);
  if (s.seq == 0) return Status::invalid(where + ": seq must start at 1");
  if (s.seq > static_cast<std::uint64_t>(INT64_MAX))
    return Status::invalid(where + ": seq too large");
  if (s.bytes.size() > kMaxStatementBytes) {
    return Status::invalid(where + ": " + std::to_string(s.bytes.size()) +
                           " bytes, more than the limit " + std::to_string(kMaxStatementBytes));
  }
  if (s.kind == StatementKind::kResult && !s.ok.has_value()) {
    return Status::invalid(where + ": a result without ok");
  }
  if (s.ok.value_or(false) && !s.outputs_digest.has_value()) {
    return Status::invalid(where + ": an ok result without outputs_digest");
  }
  return Status::ok();
}

Status LedgerStore::write_together(const std::function<Status()>& fn, VersionVector* moved) {
  VOW_RETURN_IF_ERROR(fn());
  if (moved == nullptr) return Status::ok();
  auto vv = version_vector();
  if (!vv.is_ok()) return vv.status();
  *moved = std::move(vv).value();
  return Status::ok();
}

Status equivocation_status(const StoredStatement& s) {
  return Status::invalid("equivocation: author " + s.author.hex() + " seq " +
                         std::to_string(s.seq) +
                         " is already stored with different bytes; refusing the second one");
}

Digest statement_row_check(const StoredStatement& s) {
  Hasher h;
  h.update("vow-ledger-row-v1\n");
  h.update(s.author.bytes);
  h.update_u64(s.seq);
  h.update_u64(static_cast<std::uint64_t>(s.kind));
  h.update_u64(s.job ? 1 : 0);
  if (s.job) h.update(s.job->bytes);
  h.update_u64(s.epoch);
  h.update_u64(s.outputs_digest ? 1 : 0);
  if (s.outputs_digest) h.update(s.outputs_digest->bytes);
  h.update_u64(s.ok ? (*s.ok ? 2 : 1) : 0);
  h.update_field(s.bytes);
  h.update(s.signature);
  // A statement signed alone keeps the check it had before batches existed.
  if (!s.path.empty()) h.update_field(s.path);
  return h.finish();
}

namespace {

class MemoryLedger final : public LedgerStore {
 public:
  Status insert(const StoredStatement& s) override {
    VOW_RETURN_IF_ERROR(check_insert(s));
    statements_.emplace(Key{s.author, s.seq}, s);
    return Status::ok();
  }
  Status insert_batch(std::span<const StoredStatement> batch) override {
    // Check the whole batch first (against the ledger and itself): all or nothing.
    std::map<Key, const StoredStatement*> pending;
    for (const auto& s : batch) {
      VOW_RETURN_IF_ERROR(check_insert(s));
      auto [it, fresh] = pending.emplace(Key{s.author, s.seq}, &s);
      if (!fresh && it->second->bytes != s.bytes) return equivocation_status(s);
    }
    for (const auto& s : batch) statements_.emplace(Key{s.author, s.seq}, s);
    return Status::ok();
  }
  Status append_own(const StoredStatement& s) override {
    if (s.seq != own_last_ + 1) {
      return Status::invalid("own statement seq " + std::to_string(s.seq) +
                             " is not the next own seq " + std::to_string(own_last_ + 1));
    }
    VOW_RETURN_IF_ERROR(insert(s));
    own_last_ = s.seq;
    return Status::ok();
  }
  Result<std::uint64_t> own_last_seq() override { return own_last_; }
  Result<std::optional<StoredStatement>> get(const AgentKey& author, std::uint64_t seq) override {
    auto it = statements_.find(Key{author, seq});
    if (it == statements_.end()) return std::optional<StoredStatement>();
    return std::optional<StoredStatement>(it->second);
  }
  Result<std::vector<StoredStatement>> by_author_after(const AgentKey& author,
                                                       std::uint64_t after_seq,
                                                       std::size_t limit) override {
    limit = std::min(limit, kMaxQueryRows);
    std::vector<StoredStatement> out;
    for (auto it = statements_.upper_bound(Key{author, after_seq});
         it != statements_.end() && it->first.author == author && out.size() < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  Result<VersionVector> version_vector() override {
    std::map<AgentKey, std::set<std::uint64_t>> held;
    for (const auto& [k, s] : statements_) held[k.author].insert(k.seq);
    for (const auto& k : voids_) held[k.author].insert(k.seq);
    for (const auto& k : retired_) held[k.author].insert(k.seq);
    VersionVector vv;
    for (const auto& [author, seqs] : held) {
      std::uint64_t expect = 1;
      for (std::uint64_t seq : seqs) {
        if (seq != expect) break;
        ++expect;
      }
      if (expect > 1) vv[author] = expect - 1;
    }
    return vv;
  }
  Status put_voids(std::span<const StatementRef> slots) override {
    for (const auto& r : slots) {
      auto it = statements_.find(Key{r.author, r.seq});
      if (it != statements_.end() && it->second.kind == StatementKind::kAdvert) statements_.erase(it);
      voids_.insert(Key{r.author, r.seq});
    }
    return Status::ok();
  }
  Status forget(std::span<const StatementRef> retired) override {
    for (const auto& r : retired) {
      // The slot stays stored for the version vector, as a void one does.
      if (statements_.erase(Key{r.author, r.seq}) != 0) retired_.insert(Key{r.author, r.seq});
    }
    return Status::ok();
  }
  Result<std::vector<VoidRange>> voids() override {
    std::vector<VoidRange> out;
    for (const auto& k : voids_) {
      if (!out.empty() && out.back().author == k.author && out.back().last + 1 == k.seq) {
        out.back().last = k.seq;
      } else {
        out.push_back({k.author, k.seq, k.seq});
      }
    }
    return out;
  }
  Status scan_statements(
      const std::function<Status(StoredStatement&, const Status&)>& fn) override {
    for (const auto& [k, s] : statements_) {
      StoredStatement copy = s;
      VOW_RETURN_IF_ERROR(fn(copy, Status::ok()));
    }
    return Status::ok();
  }
  Result<std::uint64_t> statement_count() override { return statements_.size(); }
  Status put_proof(const StoredStatement& second) override {
    proofs_.emplace(second.author, second);
    return Status::ok();
  }
  Result<std::vector<StoredStatement>> proofs() override {
    std::vector<StoredStatement> out;
    for (const auto& [author, s] : proofs_) out.push_back(s);
    return out;
  }

  Status put_running_job(const RunningJob& job) override {
    running_[job.job] = job;
    return Status::ok();
  }
  Status remove_running_job(const Digest& job) override {
    running_.erase(job);
    return Status::ok();
  }
  Result<std::vector<RunningJob>> running_jobs() override {
    std::vector<RunningJob> out;
    for (const auto& [k, j] : running_) out.push_back(j);
    std::sort(out.begin(), out.end(), [](const RunningJob& a, const RunningJob& b) {
      return std::tie(a.started_unix_ms, a.job) < std::tie(b.started_unix_ms, b.job);
    });
    return out;
  }

  Status put_peer(const PeerRecord& peer) override {
    for (const auto& e : peer.endpoints) {
      if (e.empty() || e.find('\n') != std::string::npos) {
        return Status::invalid("peer endpoint empty or with a newline: '" + e + "'");
      }
    }
    peers_[peer.id] = peer;
    return Status::ok();
  }
  Status remove_peer(const AgentKey& id) override {
    peers_.erase(id);
    return Status::ok();
  }
  Result<std::vector<PeerRecord>> peers() override {
    std::vector<PeerRecord> out;
    for (const auto& [k, p] : peers_) out.push_back(p);
    return out;
  }

  Status index_put(std::span<const ArtifactRecord> records) override {
    for (const auto& r : records) {
      auto [it, fresh] = artifacts_.emplace(r.digest, r);
      if (!fresh) {
        it->second.last_used = std::max(it->second.last_used, r.last_used);
        it->second.size_bytes = r.size_bytes;
        it->second.kind = r.kind;
      }
    }
    return Status::ok();
  }
  Status index_remove(const Digest& digest) override {
    artifacts_.erase(digest);
    return Status::ok();
  }
  Result<std::optional<ArtifactRecord>> index_get(const Digest& digest) override {
    auto it = artifacts_.find(digest);
    if (it == artifacts_.end()) return std::optional<ArtifactRecord>();
    return std::optional<ArtifactRecord>(it->second);
  }
  Result<std::vector<ArtifactRecord>> index_list() override {
    std::vector<ArtifactRecord> out;
    for (const auto& [k, r] : artifacts_) out.push_back(r);
    std::sort(out.begin(), out.end(), [](const ArtifactRecord& a, const ArtifactRecord& b) {
      return std::tie(a.last_used, a.digest) < std::tie(b.last_used, b.digest);
    });
    return out;
  }
  Status index_set_pinned(const Digest& digest, bool pinned) override {
    auto it = artifacts_.find(digest);
    if (it == artifacts_.end()) return Status::not_found("artifact " + digest.hex());
    it->second.pinned = pinned;
    return Status::ok();
  }
  Status index_touch(std::span<const std::pair<Digest, std::uint64_t>> ticks) override {
    for (const auto& [digest, tick] : ticks) {
      auto it = artifacts_.find(digest);
      if (it != artifacts_.end()) it->second.last_used = std::max(it->second.last_used, tick);
    }
    return Status::ok();
  }
  Result<std::uint64_t> index_max_tick() override {
    std::uint64_t m = 0;
    for (const auto& [k, r] : artifacts_) m = std::max(m, r.last_used);
    return m;
  }

 private:
  struct Key {
    AgentKey author;
    std::uint64_t seq;
    auto operator<=>(const Key&) const = default;
  };

  Status check_insert(const StoredStatement& s) {
    VOW_RETURN_IF_ERROR(validate_stored_statement(s));
    auto it = statements_.find(Key{s.author, s.seq});
    if (it != statements_.end() && it->second.bytes != s.bytes) return equivocation_status(s);
    return Status::ok();
  }

  std::map<Key, StoredStatement> statements_;
  std::set<Key> voids_;
  std::set<Key> retired_;
  std::uint64_t own_last_ = 0;
  std::map<Digest, RunningJob> running_;
  std::map<AgentKey, PeerRecord> peers_;
  std::map<Digest, ArtifactRecord> artifacts_;
  std::map<AgentKey, StoredStatement> proofs_;
};

}  // namespace

std::unique_ptr<LedgerStore> make_memory_ledger() { return std::make_unique<MemoryLedger>(); }

Status FaultyLedger::before_write(const char* op) {
  ++writes_;
  if (plan_.disk_full) {
    return Status::unavailable(std::string("ledger ") + op + ": disk full (injected)");
  }
  if (plan_.fail_write_n != 0 && writes_ == plan_.fail_write_n) {
    return Status::io(std::string("ledger ") + op + ": write failed (injected)");
  }
  return Status::ok();
}

Status FaultyLedger::insert(const StoredStatement& s) {
  VOW_RETURN_IF_ERROR(before_write("insert statement"));
  return base_.insert(s);
}
Status FaultyLedger::insert_batch(std::span<const StoredStatement> batch) {
  VOW_RETURN_IF_ERROR(before_write("insert statement batch"));
  return base_.insert_batch(batch);
}
Status FaultyLedger::append_own(const StoredStatement& s) {
  VOW_RETURN_IF_ERROR(before_write("append own statement"));
  return base_.append_own(s);
}
Status FaultyLedger::put_voids(std::span<const StatementRef> slots) {
  VOW_RETURN_IF_ERROR(before_write("put voids"));
  return base_.put_voids(slots);
}
Status FaultyLedger::forget(std::span<const StatementRef> retired) {
  VOW_RETURN_IF_ERROR(before_write("forget retired statements"));
  return base_.forget(retired);
}
Status FaultyLedger::put_running_job(const RunningJob& job) {
  VOW_RETURN_IF_ERROR(before_write("put running job"));
  return base_.put_running_job(job);
}
Status FaultyLedger::remove_running_job(const Digest& job) {
  VOW_RETURN_IF_ERROR(before_write("remove running job"));
  return base_.remove_running_job(job);
}
Status FaultyLedger::put_peer(const PeerRecord& peer) {
  VOW_RETURN_IF_ERROR(before_write("put peer"));
  return base_.put_peer(peer);
}
Status FaultyLedger::remove_peer(const AgentKey& id) {
  VOW_RETURN_IF_ERROR(before_write("remove peer"));
  return base_.remove_peer(id);
}
Status FaultyLedger::index_put(std::span<const ArtifactRecord> records) {
  VOW_RETURN_IF_ERROR(before_write("insert artifacts"));
  return base_.index_put(records);
}
Status FaultyLedger::index_remove(const Digest& digest) {
  VOW_RETURN_IF_ERROR(before_write("remove artifact"));
  return base_.index_remove(digest);
}
Status FaultyLedger::index_set_pinned(const Digest& digest, bool pinned) {
  VOW_RETURN_IF_ERROR(before_write("pin artifact"));
  return base_.index_set_pinned(digest, pinned);
}
Status FaultyLedger::index_touch(std::span<const std::pair<Digest, std::uint64_t>> ticks) {
  VOW_RETURN_IF_ERROR(before_write("touch artifacts"));
  return base_.index_touch(ticks);
}

}  // namespace vow::store
