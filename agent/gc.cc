// Artifact garbage collection (docs/storage.md, "Retention"). The core says what this
// agent must keep (Core::retained()); the background worker, which owns the store, finds
// what else is stored; the loop tells the core the rest is no longer held (so no job
// starts on it, and peers hear it in a holdings delta) and only then has the worker
// remove it. A pass:
//   1. loop:   retained() -> worker: which objects would go (a dry run of store GC, with
//              the retained set and, for a periodic pass, everything not already
//              unreferenced at the previous pass protected);
//   2. loop:   retained() again: if it now names one of them, the pass is dropped (the
//              next one decides); else Core::artifacts_removed(them) -> worker: remove
//              them, trees before the entries only they named;
//   3. loop:   the metrics and the answer for `vow gc`.
// The worker runs tasks one at a time in order (Background(1)): a fetch or a
// materialization asked for after step 2 runs after the removal.
#include <algorithm>
#include <iterator>
#include <unordered_map>

#include "agent/daemon_internal.h"

namespace vow::agent {

using nlohmann::json;

namespace {

json digests_json(const std::vector<Digest>& ds) {
  json out = json::array();
  for (const auto& d : ds) out.push_back(d.hex());
  return out;
}

}  // namespace

std::uint64_t Daemon::Impl::queue_gc(bool dry_run, bool periodic) {
  std::uint64_t ticket = ++gc.tickets;
  gc.queue.push_back(GcPass{ticket, dry_run, periodic, {}});
  run_next_gc();
  return ticket;
}

void Daemon::Impl::gc_tick(std::int64_t now) {
  // vow_artifact_bytes: the store's index summed on the worker, now and then: when this
  // agent's holdings changed since the last count (what it stores passes through them),
  // and at least every kArtifactRecountMs.
  if (!gc.counting && now >= gc.next_count_ms) {
    gc.next_count_ms = now + kArtifactCountMs;
    auto version = core().holdings_version();
    if (gc.bytes_known && version == gc.counted_at && now - gc.counted_ms < kArtifactRecountMs) {
      gc_tick_pass(now);
      return;
    }
    gc.counted_at = version;
    gc.counted_ms = now;
    store::ArtifactStore* artifacts = worker->artifacts.get();
    gc.counting = background->submit([this, artifacts]() -> std::function<void()> {
      // A sum in SQLite: listing (and sorting) every row every 10 s was most of an idle
      // agent's worker time at 10,000 jobs.
      auto bytes = artifacts->bytes_held();
      if (!bytes.is_ok()) return [this] { gc.counting = false; };
      std::uint64_t total = *bytes;
      return [this, total] {
        gc.counting = false;
        gc.bytes_held = total;
        gc.bytes_known = true;
      };
    }).is_ok();
  }
  gc_tick_pass(now);
}

void Daemon::Impl::gc_tick_pass(std::int64_t now) {
  if (gc.next_ms == 0) {
    // The first pass an interval after start, and a fifth of one more at most, set by the
    // key: agents started together do not all make their passes at the same moment.
    const auto& k = identity->key().bytes;
    const std::int64_t interval = config.gc_interval_ms;
    gc.next_ms = now + interval + (k[0] << 8 | k[1]) * (interval / 5) / 65'536;
    return;
  }
  if (now < gc.next_ms) return;
  gc.next_ms = now + config.gc_interval_ms;
  if (!gc.running && gc.queue.empty()) queue_gc(false, true);
}

void Daemon::Impl::gc_answer(std::uint64_t ticket, json answer) {
  gc.answers[ticket] = std::move(answer);
  while (gc.answers.size() > kMaxGcAnswers) gc.answers.erase(gc.answers.begin());
  gc.running = false;
  run_next_gc();
}

// What the retention policy keeps (Core::retained(), with a current plan), and what
// fetches in flight need: a tree being fetched is stored only once every entry is held,
// and an entry held when the fetch began and collected before it ended failed it.
// Ascending, no repeats.
std::vector<Digest> Daemon::Impl::gc_keep() {
  (void)core().plan();
  std::vector<Digest> keep = core().retained();
  std::set<Digest> fetching = agent->in_flight();
  if (!fetching.empty()) {
    std::vector<Digest> both;
    both.reserve(keep.size() + fetching.size());
    std::set_union(keep.begin(), keep.end(), fetching.begin(), fetching.end(),
                   std::back_inserter(both));
    keep = std::move(both);
  }
  return keep;
}

void Daemon::Impl::run_next_gc() {
  if (gc.running || gc.queue.empty()) return;
  GcPass pass = gc.queue.front();
  gc.queue.pop_front();
  if (pass.periodic) {
    (void)core().plan();
    pass.stamp = core().retention_stamp();
    if (pass.stamp == gc.idle_stamp && agent->in_flight().empty()) {
      ++gc.passes_skipped;
      log->debug("gc: nothing changed since the last pass found nothing to do");
      gc_answer(pass.ticket, {{"dry_run", pass.dry_run}, {"skipped", "nothing changed"}});
      return;
    }
  }
  gc.running = true;
  ++gc.passes_made;
  // With a current plan retained() names what it references (without one, every
  // canonical result and source version ever held).
  std::vector<Digest> keep = gc_keep();
  std::set<Digest> previous = gc.candidates;
  store::ArtifactStore* artifacts = worker->artifacts.get();
  Status submitted = background->submit(
      [this, artifacts, pass, keep, previous = std::move(previous)]() -> std::function<void()> {
        // On the worker: what the store would remove, nothing removed yet.
        struct Found {
          Status status = Status::ok();
          std::vector<Digest> removed;
          std::vector<std::uint64_t> sizes;
          std::uint64_t total = 0;
          std::set<Digest> unreferenced;
          bool nothing_new = true;  // nothing unreferenced that the previous pass was not
        };
        auto found = std::make_shared<Found>();
        auto rows = artifacts->list();
        if (!rows.is_ok()) {
          found->status = rows.status();
        } else {
          store::GcRequest req;
          req.dry_run = true;
          req.budget_bytes = 0;
          req.running_inputs.assign(keep.begin(), keep.end());
          std::unordered_map<Digest, std::uint64_t> size;
          for (const auto& r : *rows) {
            size[r.digest] = r.size_bytes;
            found->total += r.size_bytes;
            if (std::binary_search(keep.begin(), keep.end(), r.digest)) continue;
            found->unreferenced.insert(r.digest);
            // A periodic pass removes only what was unreferenced at the previous one too.
            if (pass.periodic && !previous.count(r.digest)) {
              req.running_inputs.push_back(r.digest);
              found->nothing_new = false;
            }
          }
          auto report = artifacts->gc(req);
          if (!report.is_ok()) {
            found->status = report.status();
          } else {
            found->removed = report->removed;
            for (const auto& d : found->removed) found->sizes.push_back(size[d]);
          }
        }
        return [this, pass, found] {
          gc_found(pass, found->status, found->removed, found->sizes, found->total,
                   found->unreferenced, found->nothing_new);
        };
      });
  if (!submitted.is_ok()) {
    gc_answer(pass.ticket, error_answer(submitted));
  }
}

void Daemon::Impl::gc_found(const GcPass& pass, const Status& status,
                            const std::vector<Digest>& removed,
                            const std::vector<std::uint64_t>& sizes, std::uint64_t total,
                            const std::set<Digest>& unreferenced, bool nothing_new) {
  if (!status.is_ok()) {
    log->warn("gc: {}", status.to_string());
    gc.idle_stamp.clear();
    gc_answer(pass.ticket, error_answer(status));
    return;
  }
  if (pass.periodic) {
    gc.candidates = unreferenced;
    // A pass like this one with the same stamp would protect nothing and remove nothing.
    gc.idle_stamp = removed.empty() && nothing_new ? pass.stamp : std::string();
  }
  std::uint64_t bytes = 0;
  for (auto s : sizes) bytes += s;
  gc.bytes_held = total;
  gc.bytes_known = true;
  json answer = {{"dry_run", pass.dry_run},   {"removed", digests_json(removed)},
                 {"removed_objects", removed.size()}, {"removed_bytes", bytes},
                 {"held_bytes", total},       {"kept_bytes", total - bytes}};
  if (pass.dry_run || removed.empty()) {
    gc_answer(pass.ticket, answer);
    return;
  }
  // What the core needs may have changed while the worker looked (a new plan): then
  // this pass removes nothing, and the next one decides again.
  std::vector<Digest> keep = gc_keep();
  for (const auto& d : removed) {
    if (std::binary_search(keep.begin(), keep.end(), d)) {
      log->info("gc: what the plan needs changed during the pass; nothing removed");
      answer["removed"] = json::array();
      answer["removed_objects"] = 0;
      answer["removed_bytes"] = 0;
      answer["kept_bytes"] = total;
      answer["skipped"] = "what the plan needs changed during the pass: run it again";
      gc_answer(pass.ticket, answer);
      return;
    }
  }
  agent->artifacts_removed(removed);
  store::ArtifactStore* artifacts = worker->artifacts.get();
  Status submitted = background->submit(
      [this, artifacts, pass, removed, sizes, total, answer]() -> std::function<void()> {
        // On the worker: in the order GC gave (a tree before the entries only it named).
        std::uint64_t freed = 0;
        std::size_t objects = 0;
        Status failed = Status::ok();
        for (std::size_t i = 0; i < removed.size(); ++i) {
          Status s = artifacts->remove(removed[i]);
          if (!s.is_ok() && s.code() != StatusCode::kNotFound) {
            failed = s;
            break;
          }
          if (s.is_ok()) {
            freed += sizes[i];
            ++objects;
          }
        }
        return [this, pass, freed, objects, total, answer, failed]() mutable {
          gc.collected_bytes += freed;
          gc.collected_objects += objects;
          gc.bytes_held = total - freed;
          answer["removed_objects"] = objects;
          answer["removed_bytes"] = freed;
          answer["kept_bytes"] = total - freed;
          if (!failed.is_ok()) {
            log->warn("gc: {}", failed.to_string());
            answer["error"] = failed.message();
          }
          log->info("gc: removed {} objects ({} bytes); {} bytes held", objects, freed,
                    total - freed);
          gc_answer(pass.ticket, answer);
        };
      });
  if (!submitted.is_ok()) gc_answer(pass.ticket, error_answer(submitted));
}

// `gc` (args `dry_run`, `ticket`): without a ticket, queues a pass and answers its
// ticket; with one, answers {"state": "running"} until the pass is done, then its report.
json Daemon::Impl::gc_json(const json& args) {
  if (args.contains("ticket")) {
    auto ticket = args["ticket"].get<std::uint64_t>();
    if (ticket == 0 || ticket > gc.tickets) {
      return error_answer(Status::invalid("no gc ticket " + std::to_string(ticket)));
    }
    auto it = gc.answers.find(ticket);
    if (it == gc.answers.end()) {
      if (ticket + kMaxGcAnswers <= gc.tickets) {
        return error_answer(Status::not_found("gc ticket " + std::to_string(ticket) +
                                              " is too old: its answer is gone"));
      }
      return {{"state", "running"}, {"ticket", ticket}};
    }
    json answer = it->second;
    if (answer.contains("error") && answer.contains("code")) return answer;
    answer["state"] = "done";
    answer["ticket"] = ticket;
    return answer;
  }
  std::uint64_t ticket = queue_gc(args.value("dry_run", false), false);
  return {{"state", "running"}, {"ticket", ticket}};
}

}  // namespace vow::agent
