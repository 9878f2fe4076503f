// Crash test: store_crash_helper writes statements and artifacts in a loop and is killed
// with SIGKILL at random moments, 200+ times. After each kill the store must open, fsck
// must be clean, every reported statement must be present, and every reported artifact
// must be held with content matching its name (unless a GC it reported removed it, or
// the kill interrupted a GC), and a group commit must be there whole or not at all.
// Seeded: set VOW_SEED to replay.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>

#include "store/artifact_store.h"
#include "store/fsck.h"
#include "store/sqlite_ledger.h"
#include "store/test_util.h"

namespace vow::store {
namespace {

using testing::TempDir;
using testing::TestKey;

constexpr int kKills = 200;
constexpr int kKillsPerStateDir = 25;  // a fresh directory now and then keeps fsck fast
// How long to wait for the helper's first reports before killing it anyway.
constexpr std::chrono::milliseconds kMaxWaitForReports{5000};

struct Reported {
  std::uint64_t own_seq = 0;
  std::uint64_t other_seq = 0;
  std::set<Digest> artifacts;  // reported stored and not reported removed
  bool gc_open = false;        // a GC started and did not report finishing
};

// Starts the helper, waits until it has reported AFTER_LINES items (or gave up waiting),
// lets it run DELAY more, kills it, and returns everything it reported. Waiting for
// reports first puts the kills inside the write loop rather than all in start-up.
std::string run_and_kill(const std::string& helper, const std::string& state, std::uint64_t seed,
                         int after_lines, std::chrono::microseconds delay) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::string seed_arg = std::to_string(seed);
    ::execl(helper.c_str(), helper.c_str(), state.c_str(), seed_arg.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  auto now = std::chrono::steady_clock::now;
  auto deadline = now() + kMaxWaitForReports;
  bool counting = true;
  // Drain the pipe until the kill moment, so the helper never blocks on a full pipe.
  for (;;) {
    if (counting && std::count(out.begin(), out.end(), '\n') >= after_lines) {
      counting = false;
      deadline = now() + delay;
    }
    auto left_us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now()).count();
    if (left_us <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>((left_us + 999) / 1000));
    if (rc > 0) {
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;  // the helper exited early (an error): caught below
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  INFO("helper output: " << out.substr(out.size() > 500 ? out.size() - 500 : 0));
  CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL),
                "helper exited by itself, status " << status << " (see its stderr)");
  return out;
}

void parse(const std::string& out, Reported& r) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: not a whole report (cannot happen: one write per line)
    char tag = line.empty() ? '?' : line[0];
    std::string arg = line.size() > 2 ? line.substr(2) : "";
    if (tag == 'S') {
      std::uint64_t seq = std::stoull(arg);
      CHECK(seq > r.own_seq);  // +1, or more if a statement committed unreported
      r.own_seq = seq;
    } else if (tag == 'B') {
      r.other_seq = std::stoull(arg);
    } else if (tag == 'A' || tag == 'T' || tag == 'R') {
      auto d = Digest::from_hex(arg);
      REQUIRE_MESSAGE(d.has_value(), "bad report line '" << line << "'");
      if (tag == 'R') {
        r.artifacts.erase(*d);
      } else {
        r.artifacts.insert(*d);
      }
    } else if (tag == 'g' || tag == 'G') {
      r.gc_open = tag == 'g';
    } else {
      FAIL("bad report line '" << line << "'");
    }
  }
}

void check_state(const std::string& state, Reported& r) {
  if (posix_env().stat(state)->type == FileType::kMissing) {
    // Killed before it made the directory: it cannot have reported anything.
    CHECK(r.own_seq == 0);
    CHECK(r.artifacts.empty());
    return;
  }
  auto ledger = open_sqlite_ledger(ledger_path(state));
  REQUIRE_MESSAGE(ledger.is_ok(), ledger.status().to_string());
  {
    auto store = ArtifactStore::open(artifacts_root(state), **ledger);
    REQUIRE_MESSAGE(store.is_ok(), store.status().to_string());
    TestKey me(1), other(2), grouped(3);
    auto own = (*ledger)->own_last_seq();
    REQUIRE(own.is_ok());
    CHECK(*own >= r.own_seq);  // the last append may have committed unreported
    auto vv = (*ledger)->version_vector();
    REQUIRE(vv.is_ok());
    std::uint64_t have_own = vv->count(me.public_key) ? vv->at(me.public_key) : 0;
    std::uint64_t have_other = vv->count(other.public_key) ? vv->at(other.public_key) : 0;
    CHECK(have_own == *own);  // own statements are contiguous
    CHECK(have_other >= r.other_seq);
    // Key 3's statement k was committed in one group with own statement 2k: both or
    // neither are there.
    std::uint64_t have_grouped = vv->count(grouped.public_key) ? vv->at(grouped.public_key) : 0;
    CHECK(have_grouped == *own / 2);
    for (auto it = r.artifacts.begin(); it != r.artifacts.end();) {
      auto held = (*store)->has(*it);
      REQUIRE(held.is_ok());
      if (!*held && r.gc_open) {
        it = r.artifacts.erase(it);  // removed by the GC the kill interrupted
        continue;
      }
      CHECK_MESSAGE(*held, "reported artifact " << it->hex() << " is missing");
      if (*held) CHECK((*store)->verify(*it).is_ok());
      ++it;
    }
    r.gc_open = false;
  }
  ledger->reset();
  auto report = fsck_state_dir(state);
  REQUIRE_MESSAGE(report.is_ok(), report.status().to_string());
  for (const auto& p : report->problems) FAIL_CHECK(p.to_string());
}

TEST_CASE("crash: SIGKILL at random moments loses nothing committed") {
  const char* helper = std::getenv("VOW_STORE_CRASH_HELPER");
  REQUIRE_MESSAGE(helper != nullptr, "VOW_STORE_CRASH_HELPER is not set (run through meson test)");
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("VOW_SEED")) seed = std::strtoull(s, nullptr, 10);
  INFO("seed " << seed << " (replay with VOW_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);

  std::unique_ptr<TempDir> dir;
  Reported reported;
  for (int kill = 0; kill < kKills; ++kill) {
    if (kill % kKillsPerStateDir == 0) {
      dir = std::make_unique<TempDir>();
      reported = Reported{};
    }
    CAPTURE(kill);
    std::string state = dir->path() + "/state";
    int after_lines = static_cast<int>(rng() % 4);
    auto delay = std::chrono::microseconds(rng() % 15'000);
    std::string out = run_and_kill(helper, state, rng(), after_lines, delay);
    parse(out, reported);
    check_state(state, reported);
  }
}

}  // namespace
}  // namespace vow::store
