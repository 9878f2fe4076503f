#include "promises/claim_book.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "promises/core.h"

namespace vow::promises {

const char* claim_binding_name(ClaimBinding binding) {
  switch (binding) {
    case ClaimBinding::kBound:
      return "bound";
    case ClaimBinding::kEquivocator:
      return "equivocator";
    case ClaimBinding::kNotPromised:
      return "stage not promised";
    case ClaimBinding::kNotEarned:
      return "epoch not earned";
  }
  return "unknown";
}

const char* result_binding_name(ResultBinding binding) {
  switch (binding) {
    case ResultBinding::kBound:
      return "bound";
    case ResultBinding::kEquivocator:
      return "equivocator";
    case ResultBinding::kNoClaim:
      return "no claim";
  }
  return "unknown";
}

bool ClaimBook::note(const Statement& st) {
  if (st.kind() == StatementKind::kAdvert) {
    // What its author promised when it claimed may read differently now: for its claims
    // after this advert (the one in force for a claim is its author's latest before it).
    // An advert newer than each claim of its author (a joiner's, a restarted agent's)
    // changes no binding, and the summaries of every job stay.
    auto last = last_claim_seq_.find(st.author);
    if (last != last_claim_seq_.end() && last->second > st.seq) {
      summaries_.clear();
      return false;
    }
  } else if (const auto* c = std::get_if<Claim>(&st.body)) {
    auto& last = last_claim_seq_[st.author];
    last = std::max(last, st.seq);
    summaries_.erase(c->job.job);
    if (st.author == self_) open_.insert({c->job.job, c->epoch});
  } else if (const auto* r = std::get_if<Release>(&st.body)) {
    summaries_.erase(r->job.job);
    if (st.author == self_) open_.erase({r->job.job, r->epoch});
  } else if (const auto* res = std::get_if<JobResult>(&st.body)) {
    summaries_.erase(res->job.job);
    if (st.author == self_) open_.erase({res->job.job, res->epoch});
  } else if (const auto* retry = std::get_if<Retry>(&st.body)) {
    auto& up_to = retried_up_to_[retry->job.job];
    up_to = std::max(up_to, retry->epoch);
    summaries_.erase(retry->job.job);
  }
  return true;
}

std::set<Digest> ClaimBook::invalidate(const std::set<Digest>& jobs) {
  for (const Digest& job : jobs) summaries_.erase(job);
  for (const Digest& job : missing_predecessor_) summaries_.erase(job);
  return std::exchange(missing_predecessor_, {});
}

bool ClaimBook::outranks(const Digest& job, const AgentKey& a, const AgentKey& b) {
  return rendezvous_score(job, a) > rendezvous_score(job, b);
}

// Claims in epoch order: each earns its epoch from a bound claim at the one below.
void ClaimBook::bind_claims(const JobStatements& js, const Digest& job, Summary& sum) const {
  std::vector<const Statement*> order = js.claims;
  std::stable_sort(order.begin(), order.end(), [](const Statement* a, const Statement* b) {
    return std::get<Claim>(a->body).epoch < std::get<Claim>(b->body).epoch;
  });
  std::vector<const Statement*> bound;
  auto is_bound = [&](const Statement* st) {
    return std::find(bound.begin(), bound.end(), st) != bound.end();
  };
  for (const Statement* st : order) {
    const auto& c = std::get<Claim>(st->body);
    ClaimBinding why = ClaimBinding::kBound;
    if (ledger_.equivocating(st->author)) {
      why = ClaimBinding::kEquivocator;
    } else {
      const Statement* adv = ledger_.advert_at(st->author, st->seq);
      bool promised = false;
      if (adv != nullptr) {
        for (const auto& p : std::get<Advert>(adv->body).promises) {
          promised = promised || (p.stage_digest == c.job.stage_digest && p.capacity > 0);
        }
      }
      if (!promised) {
        why = ClaimBinding::kNotPromised;
      } else if (c.epoch == 0 || (c.epoch == 1) == c.supersedes.has_value()) {
        why = ClaimBinding::kNotEarned;
      } else if (c.epoch > 1 && !ledger_.is_retired(c.supersedes->author, c.supersedes->seq)) {
        // (A claim that names one a horizon retired earned its epoch: the horizon
        // settled the job, and only a run that had ended left its claim behind it.)
        const Statement* prev = ledger_.get(c.supersedes->author, c.supersedes->seq);
        if (prev == nullptr) missing_predecessor_.insert(job);
        const Claim* pc = prev != nullptr ? std::get_if<Claim>(&prev->body) : nullptr;
        if (pc == nullptr || pc->job.job != job || pc->epoch + 1 != c.epoch ||
            !is_bound(prev)) {
          why = ClaimBinding::kNotEarned;
        }
      }
    }
    sum.claim_reasons.emplace_back(st, why);
    if (why == ClaimBinding::kBound) bound.push_back(st);
  }
  for (const Statement* st : js.claims) {  // arrival order
    if (!is_bound(st)) continue;
    sum.claims.push_back(st);
    std::uint32_t e = std::get<Claim>(st->body).epoch;
    if (e > sum.max_epoch || sum.top_claim == nullptr) {
      sum.max_epoch = e;
      sum.top_claim = st;
    } else if (e == sum.max_epoch && outranks(job, st->author, sum.top_claim->author)) {
      sum.top_claim = st;
    }
  }
}

const ClaimBook::Summary& ClaimBook::summary(const Digest& job) const {
  auto it = summaries_.find(job);
  if (it != summaries_.end()) return it->second;
  return summaries_.emplace(job, make_summary(job)).first->second;
}

bool ClaimBook::consistent() const {
  return std::all_of(summaries_.begin(), summaries_.end(),
                     [&](const auto& kv) { return make_summary(kv.first) == kv.second; });
}

ClaimBook::Summary ClaimBook::make_summary(const Digest& job) const {
  Summary sum;
  if (const JobStatements* js = ledger_.job(job)) {
    bind_claims(*js, job, sum);
    std::tuple<int, std::uint32_t, Digest, AgentKey, std::uint64_t> best_key;
    std::set<std::uint32_t> failed_epochs;
    auto retried = retried_up_to_.find(job);
    std::uint32_t forgiven = retried == retried_up_to_.end() ? 0 : retried->second;
    std::set<Digest> ok_outputs;
    for (const Statement* st : js->results) {
      const auto& r = std::get<JobResult>(st->body);
      ResultBinding why = ResultBinding::kNoClaim;
      if (ledger_.equivocating(st->author)) {
        why = ResultBinding::kEquivocator;
      } else if (ledger_.settled(st->author, st->seq)) {
        why = ResultBinding::kBound;  // a horizon settled it: its claim may be retired
      } else {
        for (const Statement* c : sum.claims) {
          if (c->author == st->author && c->seq < st->seq &&
              std::get<Claim>(c->body).epoch == r.epoch) {
            why = ResultBinding::kBound;
          }
        }
      }
      sum.result_reasons.emplace_back(st, why);
      if (why != ResultBinding::kBound) continue;
      sum.results.push_back(st);
      if (!r.ok) {
        if (r.epoch > forgiven) failed_epochs.insert(r.epoch);
        continue;
      }
      // The min-register: least (epoch, outputs digest); author and seq break exact ties.
      // Once a horizon settled results of the job, only they are candidates: the
      // horizon fixed the job's canonical result (docs/storage.md).
      Digest od = outputs_digest(r);
      ok_outputs.insert(od);
      const bool settled = ledger_.settled(st->author, st->seq);
      auto k = std::make_tuple(settled ? 0 : 1, r.epoch, od, st->author, st->seq);
      if (sum.canonical == nullptr || k < best_key) {
        sum.canonical = st;
        best_key = k;
      }
    }
    sum.failed_attempts = static_cast<int>(failed_epochs.size());
    sum.nondeterministic = ok_outputs.size() > 1;
  }
  return sum;
}

const std::vector<const Statement*>& ClaimBook::claims(const Digest& job) const {
  return summary(job).claims;
}

const std::vector<const Statement*>& ClaimBook::results(const Digest& job) const {
  return summary(job).results;
}

ClaimBinding ClaimBook::claim_binding(const Digest& job, const Statement& claim) const {
  const auto& reasons = summary(job).claim_reasons;
  auto it = std::find_if(reasons.begin(), reasons.end(),
                         [&](const auto& r) { return r.first == &claim; });
  return it == reasons.end() ? ClaimBinding::kNotEarned : it->second;
}

ResultBinding ClaimBook::result_binding(const Digest& job, const Statement& result) const {
  const auto& reasons = summary(job).result_reasons;
  auto it = std::find_if(reasons.begin(), reasons.end(),
                         [&](const auto& r) { return r.first == &result; });
  return it == reasons.end() ? ResultBinding::kNoClaim : it->second;
}

const Statement* ClaimBook::top_claim(const Digest& job) const { return summary(job).top_claim; }

const Statement* ClaimBook::canonical(const Digest& job) const { return summary(job).canonical; }

const JobResult* ClaimBook::canonical_result(const Digest& job) const {
  const Statement* st = canonical(job);
  return st == nullptr ? nullptr : &std::get<JobResult>(st->body);
}

int ClaimBook::failed_attempts(const Digest& job) const { return summary(job).failed_attempts; }

bool ClaimBook::failed_for_good(const Digest& job, int retries) const {
  return canonical(job) == nullptr && failed_attempts(job) > retries;
}

std::uint32_t ClaimBook::max_epoch(const Digest& job) const { return summary(job).max_epoch; }

bool ClaimBook::nondeterministic(const Digest& job) const { return summary(job).nondeterministic; }

bool ClaimBook::released(const Digest& job, const AgentKey& author, std::uint32_t epoch) const {
  const JobStatements* js = ledger_.job(job);
  if (js == nullptr) return false;
  return std::any_of(js->releases.begin(), js->releases.end(), [&](const Statement* st) {
    return st->author == author && std::get<Release>(st->body).epoch == epoch;
  });
}

bool ClaimBook::has_result(const Digest& job, const AgentKey& author, std::uint32_t epoch) const {
  const JobStatements* js = ledger_.job(job);
  if (js == nullptr) return false;
  return std::any_of(js->results.begin(), js->results.end(), [&](const Statement* st) {
    return st->author == author && std::get<JobResult>(st->body).epoch == epoch;
  });
}

}  // namespace vow::promises
