// Rule 6: which peers' statements are kept (docs/coordination.md section 10).
#include <algorithm>

#include "promises/core_internal.h"

namespace vow::promises {
namespace {

// A refusal of one (author, reason) is logged as a warning at most this often.
constexpr std::int64_t kRefusalLogIntervalMs = 60'000;

bool promises_stage(const Statement* advert, const Digest& stage_digest) {
  if (advert == nullptr) return false;
  const auto& a = std::get<Advert>(advert->body);
  return std::any_of(a.promises.begin(), a.promises.end(), [&](const AdvertPromise& p) {
    return p.stage_digest == stage_digest && p.capacity > 0;
  });
}

bool names_pipeline(const Statement* advert, const std::string& pipeline) {
  if (advert == nullptr) return false;
  const auto& a = std::get<Advert>(advert->body);
  return std::any_of(a.promises.begin(), a.promises.end(),
                     [&](const AdvertPromise& p) { return p.pipeline == pipeline; }) ||
         std::any_of(a.sources.begin(), a.sources.end(),
                     [&](const AdvertSource& s) { return s.pipeline == pipeline; });
}

bool provides(const Statement* advert, const SourceVersion& sv) {
  if (advert == nullptr) return false;
  const auto& a = std::get<Advert>(advert->body);
  return std::any_of(a.sources.begin(), a.sources.end(), [&](const AdvertSource& s) {
    return s.pipeline == sv.pipeline && s.source == sv.source;
  });
}

}  // namespace

bool Core::Impl::counts_on_arrival(const Statement& st) const {
  if (ledger.equivocating(st.author)) return false;
  // Behind a horizon applied here, a slot that was not retired holds what its members
  // kept (a settled result without its claim, an old advert): it counts, or an agent
  // catching up would pay for every result a horizon settled, spend its budget on them
  // and never hold the rest. An author cannot grow this: a different statement at such
  // a slot is equivocation, and the slots are the horizon's, not the author's.
  if (st.seq <= ledger.floor(st.author)) return true;
  const Statement* advert = ledger.advert_at(st.author, st.seq);
  // The author claimed the job at `epoch` before this statement, and has not said
  // `already` of that run yet: one result, release or accept per claim counts.
  auto first_of_run = [&](const Digest& job, std::uint32_t epoch, auto already) {
    const JobStatements* js = ledger.job(job);
    if (js == nullptr) return false;
    auto by_author = [&](const Statement* c) { return c->author == st.author; };
    bool claimed = std::any_of(js->claims.begin(), js->claims.end(), [&](const Statement* c) {
      return by_author(c) && c->seq < st.seq && std::get<Claim>(c->body).epoch == epoch;
    });
    const std::vector<const Statement*>& said = already(*js);
    return claimed && std::none_of(said.begin(), said.end(), [&](const Statement* x) {
             return by_author(x) && x->job().has_value() && statement_epoch(*x) == epoch;
           });
  };
  return std::visit(
      [&](const auto& b) -> bool {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, Advert>) {
          // Every advert after an author's first leaves one of them superseded.
          return ledger.adverts().count(st.author) == 0;
        } else if constexpr (std::is_same_v<T, PipelineDef>) {
          if (ledger.pipelines().count(b.digest) != 0) return false;
          return advert == nullptr || names_pipeline(advert, b.name);
        } else if constexpr (std::is_same_v<T, SourceVersion>) {
          return provides(advert, b) &&
                 b.version == ledger.own_source_version(st.author, b.pipeline, b.source) + 1;
        } else if constexpr (std::is_same_v<T, Claim>) {
          if (!promises_stage(advert, b.job.stage_digest)) return false;
          // A job this agent's plan does not have: maybe one whose source version is
          // still on its way, or one that does not exist. Paid for, as long as the plan
          // is current (a stale plan gives the benefit of the doubt).
          if (plan != nullptr && !plan_dirty && plan->find(b.job.job) == nullptr) return false;
          if (b.epoch == 0 || (b.epoch == 1) == b.supersedes.has_value()) return false;
          if (b.epoch == 1) return true;
          const Statement* prev = ledger.get(b.supersedes->author, b.supersedes->seq);
          const Claim* pc = prev != nullptr ? std::get_if<Claim>(&prev->body) : nullptr;
          return pc != nullptr && pc->job.job == b.job.job && pc->epoch + 1 == b.epoch;
        } else if constexpr (std::is_same_v<T, JobResult>) {
          return first_of_run(b.job.job, b.epoch,
                              [](const JobStatements& js) -> const auto& { return js.results; });
        } else if constexpr (std::is_same_v<T, Release>) {
          return first_of_run(b.job.job, b.epoch,
                              [](const JobStatements& js) -> const auto& { return js.releases; });
        } else if constexpr (std::is_same_v<T, Accept>) {
          return first_of_run(b.job.job, b.epoch,
                              [](const JobStatements& js) -> const auto& { return js.accepts; });
        } else {
          return false;  // Retry (a user's request, rare), Checkpoint: always paid for
        }
      },
      st.body);
}

bool Core::Impl::admit(const Statement& st, bool proof) {
  if (auto why = check_limits(st)) {
    refuse(st, "over_limit", *why);
    return false;
  }
  // One proof per author is all that is kept: once it is held, pairs pay like the rest.
  if (proof && !ledger.equivocating(st.author)) return true;
  if (st.author == config.key || ledger.known(st.author, st.seq)) return true;
  if (counts_on_arrival(st)) return true;
  if (budgets[st.author].take(idle_cost(st), now_ms, config.idle_budget)) return true;
  refuse(st, "over_budget",
         "its author's budget of statements that do not count is spent (" +
             std::to_string(config.idle_budget.burst) + " tokens, " +
             std::to_string(config.idle_budget.tokens_per_second) +
             " a second)");
  return false;
}

// A peer's word that some slots are void fills them without a statement: paid for from
// the author's budget like statements that do not count (1 token and 1 per
// kVoidSlotsPerToken slots), so that words about an author cannot grow a ledger faster
// than its statements could. One that cannot be taken yet (the advert above it is not
// here) is ignored: the peer says it again.
void Core::Impl::receive_void(const VoidRange& range) {
  constexpr std::uint64_t kVoidSlotsPerToken = 128;
  if (!ledger.void_acceptable(range)) return;
  std::uint64_t empty = ledger.empty_slots(range);
  if (empty == 0) return;
  if (range.author != config.key) {
    std::uint64_t cost = 1 + empty / kVoidSlotsPerToken;
    if (!budgets[range.author].take(cost, now_ms, config.idle_budget)) {
      ++refused["over_budget"];
      return;
    }
  }
  ledger.add_void(range);
}

void Core::Impl::refuse(const Statement& st, const std::string& reason, const std::string& why) {
  ++refused[reason];
  auto& last = refusal_logged_ms[{st.author, reason}];
  bool warn = last == 0 || now_ms - last >= kRefusalLogIntervalMs;
  if (warn) last = std::max<std::int64_t>(now_ms, 1);
  event(EventKind::kRefused, warn ? EventLevel::kWarn : EventLevel::kDebug,
        std::string("refused ") + statement_kind_name(st.kind()) + " " + std::to_string(st.seq) +
            " by " + st.author.hex().substr(0, 12) + " (" + reason + "): " + why,
        st.author);
}

const std::map<std::string, std::uint64_t>& Core::refused() const { return impl_->refused; }

}  // namespace vow::promises
