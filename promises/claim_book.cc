#include "promises/claim_book.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "promises/core.h"

namespace vow::promises {

void ClaimBook::note(const Statement& st) {
  if (const auto* c = std::get_if<Claim>(&st.body)) {
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
}

bool ClaimBook::outranks(const Digest& job, const AgentKey& a, const AgentKey& b) {
  return rendezvous_score(job, a) > rendezvous_score(job, b);
}

const ClaimBook::Summary& ClaimBook::summary(const Digest& job) const {
  auto it = summaries_.find(job);
  if (it != summaries_.end()) return it->second;
  Summary sum;
  if (const JobStatements* js = ledger_.job(job)) {
    std::tuple<std::uint32_t, Digest, AgentKey, std::uint64_t> best_key;
    std::set<std::uint32_t> failed_epochs;
    auto retried = retried_up_to_.find(job);
    std::uint32_t forgiven = retried == retried_up_to_.end() ? 0 : retried->second;
    for (const Statement* st : js->claims) {
      sum.max_epoch = std::max(sum.max_epoch, std::get<Claim>(st->body).epoch);
    }
    for (const Statement* st : js->results) {
      const auto& r = std::get<JobResult>(st->body);
      sum.max_epoch = std::max(sum.max_epoch, r.epoch);
      if (!r.ok) {
        if (r.epoch > forgiven) failed_epochs.insert(r.epoch);
        continue;
      }
      // The min-register: least (epoch, outputs digest); author and seq break exact ties.
      auto k = std::make_tuple(r.epoch, outputs_digest(r), st->author, st->seq);
      if (sum.canonical == nullptr || k < best_key) {
        sum.canonical = st;
        best_key = k;
      }
    }
    sum.failed_attempts = static_cast<int>(failed_epochs.size());
  }
  return summaries_.emplace(job, sum).first->second;
}

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
