// What an attestation costs the executor (BENCHMARKS.md, docs/provenance.md): result
// statements signed per second as the agent publishes them, without and with the
// attestation (derive the in-toto Statement, sign its DSSE encoding, then encode and
// sign the statement carrying the signature), over the same results, in the same run.
// A result here is one of the wordcount example's `count` shards: one input, one
// output, stdout and stderr digests.
// Usage: attest_bench [--runs N] [--statements N]
// Prints one line per run and the median of each figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/attest.h"
#include "transport/codec.h"

using namespace vow;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

promises::Stage count_stage() {
  promises::Stage s;
  s.name = "count";
  s.inputs = {{"split", "shards"}};
  s.outputs = {"counts"};
  s.argv = {"/bin/sh", "-c",
            "tr -cs 'A-Za-z' '\\n' < \"$VOW_IN_shards\" | tr 'A-Z' 'a-z' | grep . | sort | "
            "uniq -c > \"$VOW_OUT_counts\"\n"};
  s.run_is_shell = true;
  s.foreach = promises::InputRef{"split", "shards"};
  s.env = {{"LC_ALL", "C"}};
  s.digest = promises::stage_digest(s);
  return s;
}

std::vector<Statement> results(const transport::Identity& id, const promises::Stage& stage,
                               std::size_t n) {
  std::vector<Statement> out;
  for (std::size_t i = 0; i < n; ++i) {
    JobResult r;
    std::string k = std::to_string(i);
    r.job = {blake2b("job" + k), "wordcount", "count", stage.digest, "part-" + k};
    r.epoch = 1;
    r.inputs = {{"shards", ArtifactRef{blake2b("in" + k), false, 40'000, {}}}};
    r.outputs = {{"counts", ArtifactRef{blake2b("out" + k), false, 9'000, {}}}};
    r.ok = true;
    r.started_unix_ms = 1'700'000'000'000 + static_cast<std::int64_t>(i);
    r.ended_unix_ms = r.started_unix_ms + 12;
    r.stdout_digest = blake2b("");
    r.stderr_digest = blake2b("");
    Statement st;
    st.author = id.key();
    st.seq = i + 1;
    st.wall_unix_ms = r.ended_unix_ms;
    st.body = r;
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  std::size_t count = 5000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--runs")) runs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--statements")) count = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (sodium_init() < 0) return 1;
  auto id = transport::Identity::generate();
  auto stage = count_stage();
  auto find = [&](const Digest& d) { return d == stage.digest ? &stage : nullptr; };
  std::vector<double> plain, attested;
  std::size_t sink = 0;
  for (int run = 0; run < runs; ++run) {
    auto a = results(id, stage, count);
    double t0 = now_s();
    for (auto& st : a) sink += transport::sign_or_empty(id, st).bytes.size();
    double t1 = now_s();
    auto b = results(id, stage, count);
    double t2 = now_s();
    for (auto& st : b) {
      if (!agent::attest_own(id, st, find)) return 1;
      sink += transport::sign_or_empty(id, st).bytes.size();
    }
    double t3 = now_s();
    plain.push_back(static_cast<double>(count) / (t1 - t0));
    attested.push_back(static_cast<double>(count) / (t3 - t2));
    std::printf("run %d: %.0f results/s signed, %.0f with attestations (%.0f%%)\n", run + 1,
                plain.back(), attested.back(), 100.0 * attested.back() / plain.back());
  }
  std::sort(plain.begin(), plain.end());
  std::sort(attested.begin(), attested.end());
  double p = plain[plain.size() / 2], q = attested[attested.size() / 2];
  std::printf("median: %.0f results/s signed, %.0f with attestations (%.0f%%)\n", p, q,
              100.0 * q / p);
  return sink == 0 ? 1 : 0;  // every statement was encoded (and the loops not elided)
}
