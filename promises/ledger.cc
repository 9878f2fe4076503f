#include "promises/ledger.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <variant>

#include "promises/assert.h"
#include "promises/core.h"

namespace vow::promises {

const char* source_binding_name(SourceBinding binding) {
  switch (binding) {
    case SourceBinding::kCounted:
      return "counted";
    case SourceBinding::kEquivocator:
      return "equivocator";
    case SourceBinding::kNotProvided:
      return "not provided";
    case SourceBinding::kOutOfLine:
      return "out of line";
  }
  return "unknown";
}

namespace {

using Ranges = std::map<std::uint64_t, std::uint64_t>;

Ranges::const_iterator range_of(const Ranges& r, std::uint64_t seq) {
  auto it = r.upper_bound(seq);
  if (it == r.begin()) return r.end();
  --it;
  return seq <= it->second ? it : r.end();
}

// Adds first..last (disjoint from what `r` holds), merged with its neighbours.
void insert_range(Ranges& r, std::uint64_t first, std::uint64_t last) {
  auto next = r.find(last + 1);
  if (next != r.end()) {
    last = next->second;
    r.erase(next);
  }
  auto it = r.upper_bound(first);
  if (it != r.begin()) {
    auto prev = std::prev(it);
    if (prev->second + 1 == first) {
      prev->second = last;
      return;
    }
  }
  r.emplace(first, last);
}

void erase_seq(Ranges& r, std::uint64_t seq) {
  auto it = range_of(r, seq);
  if (it == r.end()) return;
  auto [first, last] = *it;
  r.erase(it);
  if (first < seq) r.emplace(first, seq - 1);
  if (seq < last) r.emplace(seq + 1, last);
}

bool in(const std::map<AgentKey, Ranges>& m, const AgentKey& author, std::uint64_t seq) {
  auto a = m.find(author);
  return a != m.end() && range_of(a->second, seq) != a->second.end();
}

}  // namespace

Digest statement_digest(const Statement& st) {
  Hasher h;
  h.update_field("vow-statement-v1");
  if (!st.signed_form.empty()) {
    h.update_field(st.signed_form.bytes);
    return h.finish();
  }
  // Unsigned (tests of the core alone): the fields that tell statements apart there.
  h.update(st.author.bytes);
  h.update_field(std::to_string(st.seq));
  h.update_field(std::to_string(st.wall_unix_ms));
  h.update_field(std::to_string(static_cast<int>(st.kind())));
  if (auto j = st.job()) h.update(j->bytes);
  std::visit(
      [&](const auto& b) {
        if constexpr (requires { b.epoch; }) h.update_field(std::to_string(b.epoch));
        if constexpr (requires { b.version; }) h.update_field(std::to_string(b.version));
      },
      st.body);
  return h.finish();
}

Ledger::AddResult Ledger::add(const Statement& statement) { return add_any(statement); }
Ledger::AddResult Ledger::add(Statement&& statement) { return add_any(std::move(statement)); }

// Copied (or moved) only once it is kept: a duplicate, the common case of a sync, is not.
template <typename S>
Ledger::AddResult Ledger::add_any(S&& statement) {
  ++changes_;
  const AgentKey author = statement.author;
  const std::uint64_t seq = statement.seq;
  const bool advert = statement.kind() == StatementKind::kAdvert;
  auto& by_seq = by_author_[author];
  if (by_seq.count(seq) != 0) return add_held(statement);
  if (is_retired(author, seq)) return AddResult::kDuplicate;  // behind a horizon
  if (advert && (held_advert(author, seq + 1) || is_void(author, seq + 1))) {
    // Superseded at once: never in force for anything its author said.
    if (is_proven_void(author, seq)) return AddResult::kDuplicate;
    if (is_hinted_void(author, seq)) {
      erase_seq(hints_[author], seq);
      --void_count_;
    }
    prove_void(author, seq);
    return AddResult::kVoid;
  }
  // A void slot, and here is what its author signed there that is not void (a peer's
  // word was wrong, or the one above it was): the statement wins.
  const bool was_void = is_void(author, seq);
  if (was_void) {
    erase_seq(voids_[author], seq);
    erase_seq(hints_[author], seq);
    --void_count_;
  }
  auto [pos, inserted] = by_seq.emplace(seq, std::forward<S>(statement));
  (void)inserted;
  ++size_;
  if (!vouched_.empty()) vouched_.erase({author, seq});
  if (was_void) {
    rebuild_prefix(author, seq);  // the slot's digest changed
  } else {
    advance(author);
  }
  index(&pos->second);
  // The advert just below, if held, was superseded at once.
  if (advert && held_advert(author, seq - 1)) prove_void(author, seq - 1);
  return AddResult::kNew;
}

// A statement for an (author, seq) held already: the same, or a proof of equivocation.
Ledger::AddResult Ledger::add_held(const Statement& statement) {
  const Statement& held = by_author_.at(statement.author).at(statement.seq);
  if (held == statement) return AddResult::kDuplicate;
  return keep_proof(held, statement);
}

Ledger::AddResult Ledger::keep_proof(const Statement& first, const Statement& second) {
  if (equivocating(first.author)) {
    // Proven already: one proof per author is enough, and keeps the ledger bounded.
    ++conflicts_dropped_;
    return AddResult::kConflict;
  }
  proofs_[first.author] = Proof{first, second};
  // Its settled results may no longer count: a horizon looks at each job again (rare).
  for (const auto& [job, js] : jobs_) active_jobs_.insert(job);
  // Its source versions no longer count anywhere.
  for (const auto& [dataset, by_author] : source_lines_) dirty_sources_.insert(dataset);
  return AddResult::kEquivocation;
}

void Ledger::advance(const AgentKey& author) {
  auto& contiguous = contiguous_[author];
  const auto& by_seq = by_author_[author];
  const std::uint64_t before = contiguous;
  for (;;) {
    if (by_seq.count(contiguous + 1) != 0) {
      ++contiguous;
      continue;
    }
    std::uint64_t next = contiguous;
    for (const auto* m : {&voids_, &hints_, &pending_retired_}) {
      auto a = m->find(author);
      if (a == m->end()) continue;
      auto r = range_of(a->second, contiguous + 1);
      if (r != a->second.end()) next = std::max(next, r->second);
    }
    if (next == contiguous) break;
    contiguous = next;
  }
  vv_sum_ += contiguous - before;
  if (contiguous > before) {
    extend_prefix(author, before, contiguous);
    // Retired ranges at or below the mark are known by it now.
    if (auto p = pending_retired_.find(author); p != pending_retired_.end()) {
      auto& r = p->second;
      while (!r.empty() && r.begin()->second <= contiguous) r.erase(r.begin());
      if (r.empty()) pending_retired_.erase(p);
    }
  }
}

void Ledger::rebuild_prefix(const AgentKey& author, std::uint64_t seq) {
  auto c = contiguous_.find(author);
  if (c == contiguous_.end() || seq > c->second) {
    advance(author);
    return;
  }
  auto& chain = prefix_[author];
  if (seq <= chain.base || seq - 1 > chain.mark()) {
    advance(author);  // behind a horizon's cut (frozen there), or not chained yet
    return;
  }
  chain.d.resize(seq - 1 - chain.base);
  extend_prefix(author, seq - 1, c->second);
  advance(author);
}

bool Ledger::held_advert(const AgentKey& author, std::uint64_t seq) const {
  const Statement* st = seq == 0 ? nullptr : get(author, seq);
  return st != nullptr && st->kind() == StatementKind::kAdvert;
}

void Ledger::prove_void(const AgentKey& author, std::uint64_t seq) {
  std::uint64_t lowest = seq;
  for (std::uint64_t s = seq;; --s) {
    if (auto d = beyond_digests_.find(author); d != beyond_digests_.end()) d->second.erase(s);
    if (by_author_[author].erase(s) != 0) {
      // A held advert superseded at once: its body goes.
      advert_history_[author].erase(s);
      --size_;
    }
    insert_range(voids_[author], s, s);
    ++void_count_;
    voided_.push_back({author, s});
    lowest = s;
    if (s == 1 || !held_advert(author, s - 1)) break;
  }
  rebuild_prefix(author, lowest);
}

bool Ledger::is_proven_void(const AgentKey& author, std::uint64_t seq) const {
  return in(voids_, author, seq);
}

bool Ledger::is_hinted_void(const AgentKey& author, std::uint64_t seq) const {
  return in(hints_, author, seq);
}

Digest Ledger::void_digest(std::uint64_t seq) {
  Hasher h;
  h.update_field("vow-void-v1");
  h.update_field(std::to_string(seq));
  return h.finish();
}

bool Ledger::void_acceptable(const VoidRange& range) const {
  if (range.first == 0 || range.last < range.first ||
      range.last - range.first >= kMaxVoidRun || range.last == UINT64_MAX) {
    return false;
  }
  return held_advert(range.author, range.last + 1) || is_void(range.author, range.last + 1);
}

std::uint64_t Ledger::add_void(const VoidRange& range) {
  ++changes_;
  if (!void_acceptable(range)) return 0;
  const auto& by_seq = by_author_[range.author];
  auto& hints = hints_[range.author];
  std::uint64_t added = 0;
  for (std::uint64_t seq = range.last;; --seq) {
    if (by_seq.count(seq) == 0 && !is_void(range.author, seq)) {
      insert_range(hints, seq, seq);
      ++added;
    }
    if (seq == range.first) break;
  }
  void_count_ += added;
  if (added != 0) advance(range.author);
  // A held advert just below a void slot was superseded at once.
  for (std::uint64_t seq = range.last;; --seq) {
    if (held_advert(range.author, seq - 1) && is_void(range.author, seq)) {
      prove_void(range.author, seq - 1);
    }
    if (seq == range.first) break;
  }
  return added;
}

std::uint64_t Ledger::empty_slots(const VoidRange& range) const {
  if (range.first == 0 || range.last < range.first) return 0;
  std::uint64_t n = 0;
  for (std::uint64_t seq = range.first; seq <= range.last && seq != 0; ++seq) {
    if (!known(range.author, seq)) ++n;
    if (seq == range.last) break;
  }
  return n;
}

void Ledger::restore_void(const VoidRange& range) {
  ++changes_;
  if (range.first == 0 || range.last < range.first) return;
  auto& by_seq = by_author_[range.author];
  for (std::uint64_t seq = range.first;; ++seq) {
    if (by_seq.count(seq) == 0 && !is_void(range.author, seq)) {
      insert_range(voids_[range.author], seq, seq);
      ++void_count_;
    }
    if (seq == range.last) break;
  }
  rebuild_prefix(range.author, range.first);
}

std::vector<VoidRange> Ledger::voids_for(const VersionVector& theirs, std::size_t limit) const {
  std::vector<VoidRange> out;
  for (const auto& [author, ranges] : voids_) {
    std::uint64_t have = 0;
    if (auto t = theirs.find(author); t != theirs.end()) have = t->second;
    for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
      if (it->second <= have) break;
      std::uint64_t first = std::max(it->first, have + 1);
      // Highest chunk first: each is taken once the one above it is.
      for (std::uint64_t last = it->second;;) {
        if (out.size() >= limit) return out;
        std::uint64_t lo = last - first + 1 > kMaxVoidRun ? last - kMaxVoidRun + 1 : first;
        out.push_back({author, lo, last});
        if (lo == first) break;
        last = lo - 1;
      }
    }
  }
  return out;
}

std::vector<VoidRange> Ledger::void_ranges() const {
  std::vector<VoidRange> out;
  for (const auto& [author, ranges] : voids_) {
    for (const auto& [first, last] : ranges) out.push_back({author, first, last});
  }
  return out;
}

std::vector<StatementRef> Ledger::take_voided() {
  std::vector<StatementRef> out;
  out.swap(voided_);
  return out;
}

void Ledger::extend_prefix(const AgentKey& author, std::uint64_t from, std::uint64_t to) {
  auto& chain = prefix_[author];
  if (auto p = pending_base_.find(author); p != pending_base_.end() && p->second.seq <= to) {
    // A horizon's cut reached: the chain restarts there.
    if (p->second.seq > chain.mark() || p->second.seq < chain.base) {
      chain = Chain{p->second.seq, p->second.prefix, {}};
    } else if (p->second.seq > chain.base) {
      chain.d.erase(chain.d.begin(), chain.d.begin() + static_cast<std::ptrdiff_t>(
                                                           p->second.seq - chain.base));
      chain.base = p->second.seq;
      chain.base_digest = p->second.prefix;
    }
    pending_base_.erase(p);
  }
  if (from < chain.mark()) from = chain.mark();
  if (chain.mark() != from) return;  // frozen below a retired slot never held
  const auto& by_seq = by_author_.at(author);
  for (std::uint64_t seq = from + 1; seq <= to; ++seq) {
    auto st = by_seq.find(seq);
    Digest element;
    if (st != by_seq.end()) {
      element = statement_digest(st->second);
    } else if (is_void(author, seq)) {
      element = void_digest(seq);
    } else {
      return;  // retired, never held here: the horizon's cut restarts the chain
    }
    Hasher h;
    h.update_field("vow-prefix-v1");
    if (!chain.d.empty()) {
      h.update(chain.d.back().bytes);
    } else if (chain.base != 0) {
      h.update(chain.base_digest.bytes);
    }
    h.update(element.bytes);
    chain.d.push_back(h.finish());
  }
}

const Statement* Ledger::get(const AgentKey& author, std::uint64_t seq) const {
  auto a = by_author_.find(author);
  if (a == by_author_.end()) return nullptr;
  auto s = a->second.find(seq);
  return s == a->second.end() ? nullptr : &s->second;
}

void Ledger::set_signature(const AgentKey& author, std::uint64_t seq, const SignedForm& form) {
  auto a = by_author_.find(author);
  if (a == by_author_.end()) return;
  auto s = a->second.find(seq);
  if (s == a->second.end()) return;
  VOW_ASSERT(s->second.signed_form.bytes == form.bytes, "signing other bytes than held at %llu",
             static_cast<unsigned long long>(seq));
  s->second.signed_form.signature = form.signature;
  s->second.signed_form.path = form.path;
}

VersionVector Ledger::version_vector() const {
  VersionVector vv;
  for (const auto& [author, seq] : contiguous_) {
    if (seq > 0) vv[author] = seq;
  }
  return vv;
}

std::uint64_t Ledger::max_seq(const AgentKey& author) const {
  auto a = by_author_.find(author);
  if (a == by_author_.end() || a->second.empty()) return 0;
  return a->second.rbegin()->first;
}

std::vector<Statement> Ledger::missing_for(const VersionVector& theirs, std::size_t limit,
                                           std::uint64_t rotation,
                                           std::uint64_t their_horizon) const {
  // Each author's tail above the peer's mark, taken in turns (one statement of each
  // author per round): an author with a long tail the peer keeps refusing (rule 6)
  // cannot crowd the others out of a bounded answer. Where this ledger lacks the seq
  // after the peer's mark too (a gap both share: a statement refused everywhere), the
  // peer may hold the whole tail already, and an answer that always began at the gap
  // would repeat the same first statements for ever: such a tail goes newest first (its
  // kGapTailNewest newest always, the newest being the likeliest to be missing), then
  // the rest from a point that moves back kGapTailStride statements with each
  // `rotation`.
  constexpr std::size_t kGapTailNewest = 64;
  constexpr std::size_t kGapTailStride = 128;
  std::vector<std::vector<const Statement*>> tails;
  for (const auto& [author, by_seq] : by_author_) {
    std::uint64_t have = 0;
    if (auto t = theirs.find(author); t != theirs.end()) have = t->second;
    auto it = by_seq.upper_bound(have);
    if (it == by_seq.end()) continue;
    // Slots between the peer's mark and the first held above it that are not held here
    // but at or below this ledger's own mark are void or retired: no gap.
    const bool gap = it->second.seq != have + 1 && it->second.seq - 1 > mark(author);
    // Without a gap only the first `limit` of a tail can go (the turns take no more of
    // one author): a joiner's every request would otherwise walk every author's whole
    // ledger, once per answer.
    std::vector<const Statement*> tail;
    if (!gap) {
      if (have < floor(author)) {
        // A peer behind this ledger's horizon cannot count the slots it retired as held
        // before it has the horizons: they go first. Those it applied already it holds
        // (above its mark, where its version vector cannot show them): they go last, or
        // a joiner behind many horizons would be sent them again and again in answers
        // they fill, and never the statements the horizons kept.
        std::vector<const Statement*> applied;
        if (auto hs = horizon_seqs_.find(author); hs != horizon_seqs_.end()) {
          for (auto s = hs->second.upper_bound(have); s != hs->second.end(); ++s) {
            const Statement* st = &by_seq.at(*s);
            (std::get<Horizon>(st->body).number <= their_horizon ? applied : tail).push_back(st);
          }
        }
        for (; it != by_seq.end() && tail.size() < limit; ++it) {
          if (it->second.kind() != StatementKind::kHorizon) tail.push_back(&it->second);
        }
        if (it == by_seq.end()) tail.insert(tail.end(), applied.begin(), applied.end());
      } else {
        for (; it != by_seq.end() && tail.size() < limit; ++it) tail.push_back(&it->second);
      }
      tails.push_back(std::move(tail));
      continue;
    }
    for (; it != by_seq.end(); ++it) tail.push_back(&it->second);
    std::reverse(tail.begin(), tail.end());
    if (tail.size() > kGapTailNewest) {
      auto rest = tail.begin() + static_cast<std::ptrdiff_t>(kGapTailNewest);
      auto n = static_cast<std::size_t>(tail.end() - rest);
      std::rotate(rest, rest + static_cast<std::ptrdiff_t>((rotation * kGapTailStride) % n),
                  tail.end());
    }
    if (have < floor(author)) {
      auto applied = [&](const Statement* st) {
        return std::get<Horizon>(st->body).number <= their_horizon;
      };
      std::stable_partition(tail.begin(), tail.end(), [&](const Statement* st) {
        return st->kind() == StatementKind::kHorizon && !applied(st);
      });
      std::stable_partition(tail.begin(), tail.end(), [&](const Statement* st) {
        return st->kind() != StatementKind::kHorizon || !applied(st);
      });
    }
    tails.push_back(std::move(tail));
  }
  std::vector<Statement> out;
  for (std::size_t round = 0; out.size() < limit; ++round) {
    bool any = false;
    for (const auto& tail : tails) {
      if (round >= tail.size()) continue;
      any = true;
      out.push_back(*tail[round]);
      if (out.size() >= limit) break;
    }
    if (!any) break;
  }
  return out;
}

Ledger::AddResult Ledger::add_proof(const Statement& first, const Statement& second) {
  ++changes_;
  if (first.author != second.author || first.seq != second.seq || first == second) {
    return AddResult::kDuplicate;
  }
  return keep_proof(first, second);
}

std::vector<Statement> Ledger::proof_statements(std::size_t limit) const {
  std::vector<Statement> out;
  for (const auto& [author, proof] : proofs_) {
    if (out.size() + 2 > limit) break;
    out.push_back(proof.first);
    out.push_back(proof.second);
  }
  return out;
}

std::optional<Digest> Ledger::prefix_digest(const AgentKey& author, std::uint64_t seq) const {
  auto it = prefix_.find(author);
  if (seq == 0 || it == prefix_.end()) return std::nullopt;
  const Chain& c = it->second;
  if (seq == c.base) return c.base_digest;
  if (seq < c.base || seq > c.mark()) return std::nullopt;
  return c.d[seq - c.base - 1];
}

std::map<AgentKey, Digest> Ledger::prefix_digests() const {
  std::map<AgentKey, Digest> out;
  for (const auto& [author, chain] : prefix_) {
    if (chain.mark() == 0 || equivocating(author)) continue;
    out[author] = chain.d.empty() ? chain.base_digest : chain.d.back();
  }
  return out;
}

std::vector<Statement> Ledger::diverging_for(const VersionVector& theirs,
                                             const std::map<AgentKey, Digest>& digests,
                                             std::size_t per_author, std::size_t limit,
                                             std::uint64_t rotation) const {
  std::vector<Statement> out;
  for (const auto& [author, digest] : digests) {
    if (equivocating(author)) continue;  // its proof travels with every answer
    auto seq = theirs.find(author);
    if (seq == theirs.end()) continue;
    auto mine = prefix_digest(author, seq->second);
    if (!mine || *mine == digest) continue;  // the same, or we lack some: we ask ourselves
    // Somewhere in 1..seq we hold other statements than the peer: send ours, one window
    // of the prefix per call, the most recent first (an equivocation is usually found
    // soon after it is made), then further down as `rotation` advances.
    const auto& by_seq = by_author_.at(author);
    std::uint64_t windows = (seq->second + per_author - 1) / per_author;
    std::uint64_t hi = seq->second - (rotation % windows) * per_author;
    std::uint64_t from = hi > per_author ? hi - per_author + 1 : 1;
    for (auto it = by_seq.lower_bound(from); it != by_seq.end() && it->first <= hi; ++it) {
      if (out.size() >= limit) return out;
      out.push_back(it->second);
    }
  }
  return out;
}

std::size_t Ledger::held_of(const AgentKey& author) const {
  auto it = by_author_.find(author);
  return it == by_author_.end() ? 0 : it->second.size();
}

std::uint64_t Ledger::voids_of(const AgentKey& author) const {
  std::uint64_t n = 0;
  for (const auto* m : {&voids_, &hints_}) {
    auto a = m->find(author);
    if (a == m->end()) continue;
    for (const auto& [first, last] : a->second) n += last - first + 1;
  }
  return n;
}

const Digest& Ledger::summary() const {
  if (summary_changes_ != changes_ || !summary_) {
    Hasher h;
    h.update_field("vow-ledger-summary-v1");
    h.update(fingerprint().bytes);
    // Counts the fingerprint may not show (a statement held at a hinted void slot),
    // without an equivocator's slots: what agents hold of those after the proof differs
    // and is not synced (as the fingerprint leaves them out).
    std::uint64_t held = size_, voids = void_count_;
    for (const auto& [author, proof] : proofs_) {
      held -= held_of(author);
      voids -= std::min(voids, voids_of(author));
    }
    h.update_field(std::to_string(held) + " " + std::to_string(voids) + " " +
                   std::to_string(proofs_.size()));
    h.update_field(std::to_string(horizon_number_));
    h.update(horizon_content_.bytes);
    summary_ = h.finish();
    summary_changes_ = changes_;
  }
  return *summary_;
}

Digest Ledger::fingerprint() const {
  Hasher h;
  h.update_field("vow-ledger-fingerprint-v1");
  for (const auto& [author, by_seq] : by_author_) {
    h.update(author.bytes);
    if (equivocating(author)) {
      h.update_field("equivocating");
      continue;
    }
    auto p = prefix_.find(author);
    std::uint64_t mark = p == prefix_.end() ? 0 : p->second.mark();
    h.update_field(std::to_string(mark));
    if (mark != 0) h.update(prefix_digest(author, mark)->bytes);
    // Statements held beyond a gap (a refused statement, rule 6): not in the prefix.
    auto it = by_seq.upper_bound(mark);
    if (it != by_seq.end()) {
      auto& digests = beyond_digests_[author];
      digests.erase(digests.begin(), digests.upper_bound(mark));
      for (; it != by_seq.end(); ++it) {
        h.update_field(std::to_string(it->first));
        auto d = digests.try_emplace(it->first);
        if (d.second) d.first->second = statement_digest(it->second);
        h.update(d.first->second.bytes);
      }
    }
    // Void slots beyond it (proven or hinted alike).
    Ranges beyond;
    for (const auto* m : {&voids_, &hints_}) {
      auto a = m->find(author);
      if (a == m->end()) continue;
      for (auto it = a->second.upper_bound(mark); it != a->second.end(); ++it) {
        insert_range(beyond, it->first, it->second);
      }
    }
    for (const auto& [first, last] : beyond) {
      h.update_field("void " + std::to_string(first) + "-" + std::to_string(last));
    }
  }
  return h.finish();
}

const JobStatements* Ledger::job(const Digest& job) const {
  auto it = jobs_.find(job);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Statement* Ledger::advert_at(const AgentKey& author, std::uint64_t seq) const {
  auto a = advert_history_.find(author);
  if (a == advert_history_.end()) return nullptr;
  auto it = a->second.lower_bound(seq);
  if (it == a->second.begin()) return nullptr;
  return std::prev(it)->second;
}

bool Ledger::provides(const AgentKey& author, const Dataset& dataset,
                      const VersionVector* cut) const {
  const Statement* advert = nullptr;
  if (cut == nullptr) {
    auto a = adverts_.find(author);
    if (a != adverts_.end()) advert = a->second;
  } else if (auto c = cut->find(author); c != cut->end()) {
    advert = advert_at(author, c->second + 1);
  }
  if (advert == nullptr) return false;
  const auto& sources = std::get<Advert>(advert->body).sources;
  return std::any_of(sources.begin(), sources.end(), [&](const AdvertSource& s) {
    return s.pipeline == dataset.first && s.source == dataset.second;
  });
}

std::vector<const Statement*> Ledger::line(const Dataset& dataset, const AgentKey& author,
                                           const VersionVector* cut) const {
  std::vector<const Statement*> out;
  auto d = source_lines_.find(dataset);
  if (d == source_lines_.end()) return out;
  auto a = d->second.find(author);
  if (a == d->second.end()) return out;
  std::vector<const Statement*> sorted = a->second;
  if (cut != nullptr) {
    auto c = cut->find(author);
    const std::uint64_t top = c == cut->end() ? 0 : c->second;
    std::erase_if(sorted, [&](const Statement* st) { return st->seq > top; });
  }
  auto key = [](const Statement* st) {
    return std::make_pair(std::get<SourceVersion>(st->body).version, st->seq);
  };
  std::sort(sorted.begin(), sorted.end(),
            [&](const Statement* x, const Statement* y) { return key(x) < key(y); });
  // A horizon retired the versions before the base: the line counts from it, and
  // nothing published before it counts (what is left there is out of line).
  auto [expected, base_seq] = line_base(dataset, author);
  std::uint64_t last_seq = base_seq == 0 ? 0 : base_seq - 1;
  for (const Statement* st : sorted) {
    std::uint64_t v = std::get<SourceVersion>(st->body).version;
    if (v < expected) continue;         // a repeat of a counted version, or backwards
    if (v > expected) break;            // a jump: nothing above it counts
    if (st->seq <= last_seq) continue;  // published before the version it follows
    out.push_back(st);
    last_seq = st->seq;
    ++expected;
  }
  return out;
}

const std::vector<const Statement*>* Ledger::line_statements(const Dataset& dataset,
                                                             const AgentKey& author) const {
  auto d = source_lines_.find(dataset);
  if (d == source_lines_.end()) return nullptr;
  auto a = d->second.find(author);
  return a == d->second.end() ? nullptr : &a->second;
}

std::pair<std::uint64_t, std::uint64_t> Ledger::line_base(const Dataset& dataset,
                                                          const AgentKey& author) const {
  auto d = line_bases_.find(dataset);
  if (d == line_bases_.end()) return {1, 0};
  auto a = d->second.find(author);
  return a == d->second.end() ? std::make_pair<std::uint64_t, std::uint64_t>(1, 0) : a->second;
}

std::uint64_t Ledger::highest_line_base() const {
  std::uint64_t most = 1;
  for (const auto& [dataset, by_author] : line_bases_) {
    for (const auto& [author, base] : by_author) most = std::max(most, base.first);
  }
  return most;
}

SourceBinding Ledger::source_binding(const Statement& st) const {
  const auto& sv = std::get<SourceVersion>(st.body);
  Dataset dataset{sv.pipeline, sv.source};
  if (equivocating(st.author)) return SourceBinding::kEquivocator;
  if (!provides(st.author, dataset)) return SourceBinding::kNotProvided;
  auto chain = line(dataset, st.author);
  bool in = std::any_of(chain.begin(), chain.end(), [&](const Statement* c) { return c == &st; });
  if (!in) {
    // The same statement held elsewhere (a copy): compare by name.
    in = std::any_of(chain.begin(), chain.end(), [&](const Statement* c) {
      return c->author == st.author && c->seq == st.seq;
    });
  }
  return in ? SourceBinding::kCounted : SourceBinding::kOutOfLine;
}

const Statement* Ledger::choose_source(const Dataset& dataset, const VersionVector* cut) const {
  auto d = source_lines_.find(dataset);
  if (d == source_lines_.end()) return nullptr;
  Hasher h;
  h.update_field("vow-dataset-v1");
  h.update_field(dataset.first);
  h.update_field(dataset.second);
  Digest key = h.finish();
  // Per artifact: how many providers currently give it, the furthest any of them got in
  // its own line, and its best-ranked giver.
  struct Support {
    int providers = 0;
    std::uint64_t version = 0;
    Digest best_score;
    const Statement* best = nullptr;
  };
  std::map<Digest, Support> support;
  for (const auto& [author, statements] : d->second) {
    if (equivocating(author) || !provides(author, dataset, cut)) continue;
    auto chain = line(dataset, author, cut);
    if (chain.empty()) continue;
    const Statement* current = chain.back();
    Digest score = rendezvous_score(key, author);
    Support& s = support[std::get<SourceVersion>(current->body).artifact.digest];
    ++s.providers;
    s.version = std::max(s.version, std::get<SourceVersion>(current->body).version);
    if (s.best == nullptr || score > s.best_score) {
      s.best = current;
      s.best_score = score;
    }
  }
  const Support* win = nullptr;
  for (const auto& [digest, s] : support) {
    if (win == nullptr || std::tie(s.providers, s.version, s.best_score) >
                              std::tie(win->providers, win->version, win->best_score)) {
      win = &s;
    }
  }
  return win == nullptr ? nullptr : win->best;
}

void Ledger::refresh_sources() const {
  for (const Dataset& dataset : dirty_sources_) {
    const Statement* st = choose_source(dataset);
    if (st == nullptr) {
      sources_.erase(dataset);
    } else {
      sources_[dataset] = st;
    }
  }
  dirty_sources_.clear();
}

const Statement* Ledger::source_version(const std::string& pipeline,
                                        const std::string& source) const {
  refresh_sources();
  auto it = sources_.find({pipeline, source});
  return it == sources_.end() ? nullptr : it->second;
}

const Statement* Ledger::source_version_at(const std::string& pipeline, const std::string& source,
                                          const VersionVector& cut) const {
  return choose_source({pipeline, source}, &cut);
}

const std::map<Ledger::Dataset, const Statement*>& Ledger::sources() const {
  refresh_sources();
  return sources_;
}

const Statement* Ledger::own_source(const AgentKey& author, const std::string& pipeline,
                                    const std::string& source) const {
  auto d = source_lines_.find({pipeline, source});
  if (d == source_lines_.end()) return nullptr;
  auto a = d->second.find(author);
  if (a == d->second.end()) return nullptr;
  const Statement* best = nullptr;
  for (const Statement* st : a->second) {
    if (best == nullptr ||
        std::get<SourceVersion>(st->body).version > std::get<SourceVersion>(best->body).version) {
      best = st;
    }
  }
  return best;
}

std::uint64_t Ledger::own_source_version(const AgentKey& author, const std::string& pipeline,
                                         const std::string& source) const {
  auto it = own_versions_.find({author, {pipeline, source}});
  return it == own_versions_.end() ? 0 : it->second;
}

std::uint64_t Ledger::floor(const AgentKey& author) const {
  auto it = floor_.find(author);
  return it == floor_.end() ? 0 : it->second;
}

bool Ledger::is_retired(const AgentKey& author, std::uint64_t seq) const {
  if (in(pending_retired_, author, seq)) return true;
  if (seq == 0 || seq > floor(author) || contains(author, seq) || is_void(author, seq)) {
    return false;
  }
  auto c = contiguous_.find(author);
  return c != contiguous_.end() && seq <= c->second;
}

std::vector<StatementRef> Ledger::take_retired() {
  std::vector<StatementRef> out;
  out.swap(retired_);
  return out;
}

std::set<Digest> Ledger::apply_horizon(const Horizon& h) {
  ++changes_;
  std::set<Digest> changed;
  auto author_of = [&](std::uint32_t cut) -> const AgentKey* {
    return cut < h.cuts.size() ? &h.cuts[cut].author : nullptr;
  };
  // A checkpoint's ranges cover every slot behind its cut that is not kept, most of
  // them retired long ago: each range costs the statements held in it and the slots
  // above the mark (a joiner's), not its length. Settled and vouched slots in a long
  // range are found by one pass over those sets below.
  std::map<AgentKey, Ranges> long_ranges;
  constexpr std::uint64_t kShortRange = 256;
  for (const auto& r : h.retired) {
    const AgentKey* author = author_of(r.cut);
    if (author == nullptr || r.first == 0 || r.last < r.first || r.last > h.cuts[r.cut].seq) {
      continue;
    }
    auto& by_seq = by_author_[*author];
    const std::uint64_t mark = contiguous_[*author];
    auto& pending = pending_retired_[*author];
    for (auto it = by_seq.lower_bound(r.first); it != by_seq.end() && it->first <= r.last;) {
      const std::uint64_t seq = it->first;
      if (auto job = it->second.job()) changed.insert(*job);
      unindex(&it->second);
      if (auto d = beyond_digests_.find(*author); d != beyond_digests_.end()) d->second.erase(seq);
      it = by_seq.erase(it);
      --size_;
      retired_.push_back({*author, seq});
      ++retired_count_;
      // Above the mark, the slot counts as held once the mark reaches it.
      if (seq > mark && range_of(pending, seq) == pending.end()) insert_range(pending, seq, seq);
    }
    // The slots above the mark not held (those held went above).
    for (std::uint64_t seq = std::max(r.first, mark + 1); seq > mark && seq <= r.last; ++seq) {
      if (range_of(pending, seq) != pending.end() || is_void(*author, seq)) continue;
      insert_range(pending, seq, seq);
      ++retired_count_;
    }
    if (r.last - r.first + 1 > kShortRange) {
      insert_range(long_ranges[*author], r.first, r.last);
    } else if (!settled_.empty() || !vouched_.empty()) {
      for (std::uint64_t seq = r.first; seq <= r.last; ++seq) {
        settled_.erase({*author, seq});  // a superseded job's
        vouched_.erase({*author, seq});
      }
    }
  }
  if (!long_ranges.empty()) {
    auto in_long = [&](const std::pair<AgentKey, std::uint64_t>& slot) {
      return in(long_ranges, slot.first, slot.second);
    };
    std::erase_if(settled_, in_long);
    std::erase_if(vouched_, [&](const auto& kv) { return in_long(kv.first); });
  }
  for (const auto& r : h.settled) {
    const AgentKey* author = author_of(r.cut);
    // Settled already (a checkpoint names every settled result kept): nothing changes.
    if (author == nullptr || !settled_.insert({*author, r.seq}).second) continue;
    if (const Statement* st = get(*author, r.seq)) {
      if (auto job = st->job()) changed.insert(*job);
    } else if (!r.vouch.is_zero() && !is_retired(*author, r.seq)) {
      vouched_[{*author, r.seq}] = r.vouch;
    }
  }
  for (const auto& cut : h.cuts) {
    auto& fl = floor_[cut.author];
    if (cut.seq > fl) {
      floor_sum_ += cut.seq - fl;
      fl = cut.seq;
    }
    std::uint64_t mark = contiguous_[cut.author];
    Chain& chain = prefix_[cut.author];
    if (mark >= cut.seq) {
      // The prefixes behind the cut are no longer kept; those above it chain from the
      // horizon's digest at the cut (this ledger's own, unless it took the horizon on
      // its endorsers' word).
      chain = Chain{cut.seq, cut.prefix, {}};
      extend_prefix(cut.author, cut.seq, mark);
    } else {
      pending_base_[cut.author] = cut;
      advance(cut.author);
    }
  }
  // Source lines that start later (their earlier versions were among the retired).
  for (const auto& b : h.bases) {
    const AgentKey* author = author_of(b.cut);
    if (author == nullptr || b.version == 0 || b.seq == 0 || b.seq > h.cuts[b.cut].seq) continue;
    Dataset dataset{b.pipeline, b.source};
    auto& base = line_bases_[dataset][*author];
    if (b.version > base.first) base = {b.version, b.seq};
    dirty_sources_.insert(dataset);
  }
  if (h.checkpoint) {
    ++checkpoints_applied_;
    if (h.number != horizon_number_ + 1) ++checkpoints_alone_;
    checkpoint_number_ = h.number;
  }
  horizon_number_ = h.number;
  horizon_content_ = h.content;
  // The jobs it touched that are left with settled results only are quiet until a
  // statement about them arrives.
  for (const Digest& job : changed) {
    auto it = jobs_.find(job);
    if (it == jobs_.end()) {
      active_jobs_.erase(job);
      continue;
    }
    const JobStatements& js = it->second;
    bool quiet = js.claims.empty() && js.releases.empty() && js.accepts.empty() &&
                 std::all_of(js.results.begin(), js.results.end(), [&](const Statement* st) {
                   return settled(st->author, st->seq) && !equivocating(st->author);
                 });
    if (quiet) active_jobs_.erase(job);
  }
  return changed;
}

void Ledger::unindex(const Statement* st) {
  if (st->kind() == StatementKind::kHorizon) {
    if (auto h = horizon_seqs_.find(st->author); h != horizon_seqs_.end()) h->second.erase(st->seq);
    return;
  }
  auto drop = [&](std::vector<const Statement*>& v) {
    v.erase(std::remove(v.begin(), v.end(), st), v.end());
  };
  if (const auto* sv = std::get_if<SourceVersion>(&st->body)) {  // before its line's base
    Dataset dataset{sv->pipeline, sv->source};
    if (auto d = source_lines_.find(dataset); d != source_lines_.end()) {
      if (auto a = d->second.find(st->author); a != d->second.end()) drop(a->second);
    }
    dirty_sources_.insert(dataset);
    return;
  }
  auto job = st->job();
  if (!job) return;  // only statements about jobs, and old source versions, are retired
  auto it = jobs_.find(*job);
  if (it == jobs_.end()) return;
  drop(it->second.claims);
  drop(it->second.releases);
  drop(it->second.results);
  drop(it->second.accepts);
  const JobStatements& js = it->second;
  if (js.claims.empty() && js.releases.empty() && js.results.empty() && js.accepts.empty()) {
    jobs_.erase(it);  // a superseded job leaves nothing behind
    ++jobs_emptied_;
  }
}

void Ledger::index(const Statement* st) {
  switch (st->kind()) {
    case StatementKind::kAdvert: {
      auto& cur = adverts_[st->author];
      if (cur == nullptr || cur->seq < st->seq) cur = st;
      advert_history_[st->author][st->seq] = st;
      // What the author provides may have changed.
      for (const auto& [dataset, by_author] : source_lines_) {
        if (by_author.count(st->author)) dirty_sources_.insert(dataset);
      }
      break;
    }
    case StatementKind::kPipeline: {
      const auto& def = std::get<PipelineDef>(st->body);
      pipelines_.emplace(def.digest, st);
      pipeline_statements_.push_back(st);
      break;
    }
    case StatementKind::kSourceVersion: {
      const auto& sv = std::get<SourceVersion>(st->body);
      Dataset dataset{sv.pipeline, sv.source};
      source_lines_[dataset][st->author].push_back(st);
      dirty_sources_.insert(dataset);
      auto& own = own_versions_[{st->author, dataset}];
      if (sv.version > own) own = sv.version;
      break;
    }
    case StatementKind::kClaim:
      jobs_[*st->job()].claims.push_back(st);
      active_jobs_.insert(*st->job());
      break;
    case StatementKind::kRelease:
      jobs_[*st->job()].releases.push_back(st);
      active_jobs_.insert(*st->job());
      break;
    case StatementKind::kResult:
      jobs_[*st->job()].results.push_back(st);
      active_jobs_.insert(*st->job());
      break;
    case StatementKind::kAccept:
      jobs_[*st->job()].accepts.push_back(st);
      active_jobs_.insert(*st->job());
      break;
    case StatementKind::kHorizon:
      horizon_seqs_[st->author].insert(st->seq);
      break;
    case StatementKind::kCheckpoint:
    case StatementKind::kRetry:
      break;
  }
}

}  // namespace vow::promises
