// Transport benchmarks (BENCHMARKS.md), each figure next to its baseline measured
// in the same run:
//   1. signed statements verified per second through decode_and_verify (and through the
//      whole inbound validator, frame included) vs a bare crypto_sign_verify_detached
//      loop over the same (bytes, signature) pairs; target >= 70%.
//   2. artifact stream MB/s over a real CURVE loopback link between two transports, each
//      on its own event-loop thread as two agents would be, receiver verifying BLAKE2b,
//      vs BLAKE2b of the same bytes on one core; target >= 80%. With --bulk integrity,
//      the chunks on the plain link of integrity-only bulk (docs/protocol.md).
// Usage: transport_bench [--runs N] [--statements N] [--stream-mib N (0: no stream)]
//                        [--bulk encrypted|integrity]
// Prints one line per run and the median and spread (min..max) of each figure.
#include <sodium.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "transport/codec.h"
#include "transport/link.h"
#include "transport/validator.h"

using namespace vow;
using namespace vow::transport;

namespace {

double cpu_seconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Identity identity_of(std::uint8_t n) {
  std::array<std::uint8_t, 32> seed{};
  seed.fill(n);
  return Identity::from_seed(seed);
}

Statement result_statement(const AgentKey& author, std::uint64_t seq) {
  JobResult r;
  r.job = JobRef{blake2b("job" + std::to_string(seq)), "wordcount", "count", blake2b("stage"),
                 "part-" + std::to_string(seq)};
  r.epoch = 1;
  r.inputs = {NamedArtifact{"shards", ArtifactRef{blake2b("in"), false, 1 << 20, {}}}};
  r.outputs = {NamedArtifact{"counts", ArtifactRef{blake2b("out"), false, 4096, {}}}};
  r.ok = true;
  r.started_unix_ms = 1;
  r.ended_unix_ms = 2;
  r.stdout_digest = blake2b("stdout");
  Statement s;
  s.author = author;
  s.seq = seq;
  s.wall_unix_ms = 1'700'000'000'000;
  s.body = r;
  return s;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

struct VerifyRun {
  double bare_per_s, decode_per_s, validator_per_s;
};

VerifyRun bench_verify(const std::vector<SignedStatement>& sts,
                       const std::vector<std::string>& frames, const TrustSet& trust,
                       const AgentKey& author) {
  VerifyRun r{};
  std::size_t ok = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& s : sts) {
    ok += crypto_sign_verify_detached(s.signature.data(),
                                      reinterpret_cast<const unsigned char*>(s.bytes.data()),
                                      s.bytes.size(), author.bytes.data()) == 0;
  }
  r.bare_per_s = static_cast<double>(sts.size()) / seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (const auto& s : sts) ok += decode_and_verify(s).is_ok();
  r.decode_per_s = static_cast<double>(sts.size()) / seconds_since(t0);
  NoSequences seqs;
  Validator v(&trust, &seqs, kMaxFrameBytes, {});
  t0 = std::chrono::steady_clock::now();
  for (const auto& f : frames) {
    ok += v.validate({reinterpret_cast<const std::uint8_t*>(f.data()), f.size()}, author,
                     PeerRole::kAgent)
              .has_value();
  }
  r.validator_per_s = static_cast<double>(frames.size()) / seconds_since(t0);
  if (ok != 3 * sts.size()) {
    std::fprintf(stderr, "verification failed: %zu of %zu\n", ok, 3 * sts.size());
    std::exit(1);
  }
  return r;
}

// The stream's bytes: a fixed random buffer repeated, so producing them costs a memcpy.
struct RepeatSource final : ChunkSource {
  const std::vector<std::uint8_t>* pattern;
  std::uint64_t total;
  RepeatSource(const std::vector<std::uint8_t>* p, std::uint64_t t) : pattern(p), total(t) {}
  std::uint64_t size() const override { return total; }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    std::size_t done = 0;
    while (done < out.size()) {
      std::size_t at = static_cast<std::size_t>((offset + done) % pattern->size());
      std::size_t n = std::min(out.size() - done, pattern->size() - at);
      std::memcpy(out.data() + done, pattern->data() + at, n);
      done += n;
    }
    return Status::ok();
  }
};

struct RepeatProvider final : ArtifactProvider {
  const std::vector<std::uint8_t>* pattern;
  std::uint64_t total;
  Digest digest;
  Result<std::unique_ptr<ChunkSource>> open(const Digest& d) override {
    if (d != digest) return Status::not_found("unknown");
    return std::unique_ptr<ChunkSource>(new RepeatSource(pattern, total));
  }
};

struct DiscardSink final : ChunkSink {
  Status write(std::uint64_t, std::span<const std::uint8_t>) override { return Status::ok(); }
  Status read(std::uint64_t, std::span<std::uint8_t>) override { return Status::not_found("-"); }
  Status finish(std::uint64_t) override { return Status::ok(); }
  void abort(const Status&) override {}
};

Digest hash_repeat(const std::vector<std::uint8_t>& pattern, std::uint64_t total) {
  Hasher h;
  for (std::uint64_t at = 0; at < total;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(pattern.size(), total - at));
    h.update(std::span<const std::uint8_t>(pattern.data(), n));
    at += n;
  }
  return h.finish();
}

struct StreamRun {
  double blake2b_mb_s, stream_mb_s, box_mb_s;
  // Per CPU-second (all threads of the process for the stream, the one thread for
  // BLAKE2b): what the figures would be on idle cores, whatever else runs on the machine.
  double blake2b_mb_cpu_s, stream_mb_cpu_s;
};

// What CurveZMQ does to every byte, once to send and once to receive: XSalsa20-Poly1305
// (crypto_box_*_afternm = crypto_secretbox with a precomputed key). For the profile
// explanation: a link moves each byte through box + open + BLAKE2b at the receiver.
double secretbox_mb_s(const std::vector<std::uint8_t>& pattern, std::uint64_t total) {
  constexpr std::size_t kFrame = 256 << 10;
  std::vector<std::uint8_t> out(kFrame + crypto_secretbox_MACBYTES);
  unsigned char key[crypto_secretbox_KEYBYTES] = {1};
  unsigned char nonce[crypto_secretbox_NONCEBYTES] = {2};
  auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t at = 0; at < total; at += kFrame) {
    crypto_secretbox_easy(out.data(), pattern.data() + (at % (pattern.size() - kFrame)), kFrame,
                          nonce, key);
  }
  return static_cast<double>(total) / 1e6 / seconds_since(t0);
}

StreamRun bench_stream(const std::vector<std::uint8_t>& pattern, std::uint64_t total,
                       bool plain) {
  StreamRun r{};
  auto t0 = std::chrono::steady_clock::now();
  double c0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
  Digest d = hash_repeat(pattern, total);
  r.blake2b_mb_s = static_cast<double>(total) / 1e6 / seconds_since(t0);
  r.blake2b_mb_cpu_s = static_cast<double>(total) / 1e6 / (cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - c0);
  r.box_mb_s = secretbox_mb_s(pattern, total);

  Identity a = identity_of(1), b = identity_of(2);
  TrustSet trust;
  trust.add(a.key());
  trust.add(b.key());
  NoSequences seqs;
  TransportOptions o;
  o.listen = "tcp://127.0.0.1:*";
  o.bulk_integrity_only = plain;
  auto server = std::move(Transport::create(a, trust, o, &seqs, {})).value();
  auto client = std::move(Transport::create(b, trust, o, &seqs, {})).value();
  RepeatProvider provider;
  provider.pattern = &pattern;
  provider.total = total;
  provider.digest = d;
  server->set_artifact_provider(&provider);
  if (!client->connect(a.key(), server->endpoint())) std::exit(1);
  // Integrity-only bulk goes plain only to a receiver the sender dials.
  if (plain && !server->connect(b.key(), client->endpoint())) std::exit(1);

  std::atomic<bool> stop{false};
  std::thread server_loop([&] {
    while (!stop.load()) {
      server->wait(5);
      std::int64_t now = now_ms();
      (void)server->poll_inbound(now);
      server->tick(now);
    }
  });
  t0 = std::chrono::steady_clock::now();
  c0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
  if (!client->fetch(a.key(), d, 0, total, std::make_unique<DiscardSink>(), now_ms())) {
    std::exit(1);
  }
  std::vector<FetchOutcome> outs;
  while (outs.empty()) {
    client->wait(5);
    std::int64_t now = now_ms();
    (void)client->poll_inbound(now);
    client->tick(now);
    outs = client->take_fetch_outcomes();
  }
  double secs = seconds_since(t0);
  r.stream_mb_cpu_s = static_cast<double>(total) / 1e6 / (cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0);
  stop = true;
  server_loop.join();
  if (!outs[0].status) {
    std::fprintf(stderr, "stream failed: %s\n", outs[0].status.to_string().c_str());
    std::exit(1);
  }
  r.stream_mb_s = static_cast<double>(total) / 1e6 / secs;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  std::size_t n_statements = 20000;
  std::uint64_t stream_mib = 512;
  bool plain = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--runs")
      runs = std::atoi(argv[i + 1]);
    else if (k == "--statements")
      n_statements = std::strtoull(argv[i + 1], nullptr, 10);
    else if (k == "--stream-mib")
      stream_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (k == "--bulk" && (std::string(argv[i + 1]) == "encrypted" ||
                               std::string(argv[i + 1]) == "integrity"))
      plain = std::string(argv[i + 1]) == "integrity";
    else {
      std::fprintf(stderr,
                   "usage: %s [--runs N] [--statements N] [--stream-mib N] "
                   "[--bulk encrypted|integrity]\n",
                   argv[0]);
      return 2;
    }
  }
  if (sodium_init() < 0) return 1;

  Identity author = identity_of(1);
  TrustSet trust;
  trust.add(author.key());
  std::vector<SignedStatement> sts;
  std::vector<std::string> frames;
  for (std::size_t i = 0; i < n_statements; ++i) {
    // A signed statement, in a frame as agents send it (a batch of one).
    Statement st = result_statement(author.key(), i + 1);
    st.signed_form = std::move(sign_statement(author, st)).value();
    sts.push_back(st.signed_form);
    frames.push_back(
        std::move(encode_message(Message{kProtocolVersion, StatementBatch{{st}}})).value());
  }
  std::printf("statement verification: %zu signed results of %zu bytes\n", sts.size(),
              sts[0].bytes.size());
  std::vector<double> bare, dec, val, ratio_dec, ratio_val;
  for (int r = 0; r < runs; ++r) {
    auto v = bench_verify(sts, frames, trust, author.key());
    bare.push_back(v.bare_per_s);
    dec.push_back(v.decode_per_s);
    val.push_back(v.validator_per_s);
    ratio_dec.push_back(v.decode_per_s / v.bare_per_s);
    ratio_val.push_back(v.validator_per_s / v.bare_per_s);
    std::printf(
        "  run %d: bare verify %.0f/s, decode_and_verify %.0f/s (%.1f%%), "
        "validator %.0f/s (%.1f%%)\n",
        r + 1, v.bare_per_s, v.decode_per_s, 100 * ratio_dec.back(), v.validator_per_s,
        100 * ratio_val.back());
  }
  auto sb = stats(bare), sd = stats(dec), sv = stats(val), rd = stats(ratio_dec),
       rv = stats(ratio_val);
  std::printf(
      "  median: bare %.0f/s [%.0f..%.0f], decode_and_verify %.0f/s [%.0f..%.0f] = "
      "%.1f%% [%.1f..%.1f] (target >= 70%%), validator %.0f/s = %.1f%% [%.1f..%.1f]\n",
      sb.median, sb.min, sb.max, sd.median, sd.min, sd.max, 100 * rd.median, 100 * rd.min,
      100 * rd.max, sv.median, 100 * rv.median, 100 * rv.min, 100 * rv.max);

  if (stream_mib == 0) return 0;  // --stream-mib 0: statement verification only

  std::vector<std::uint8_t> pattern(64u << 20);
  randombytes_buf(pattern.data(), pattern.size());
  std::uint64_t total = stream_mib << 20;
  std::printf("artifact stream: %llu MiB over %s loopback, 256 KiB chunks\n",
              static_cast<unsigned long long>(stream_mib),
              plain ? "a plain (integrity-only bulk)" : "CURVE");
  std::vector<double> b2, st, ratio_st, box, bound, cpu_ratio;
  for (int r = 0; r < runs; ++r) {
    auto s = bench_stream(pattern, total, plain);
    b2.push_back(s.blake2b_mb_s);
    st.push_back(s.stream_mb_s);
    ratio_st.push_back(s.stream_mb_s / s.blake2b_mb_s);
    box.push_back(s.box_mb_s);
    cpu_ratio.push_back(s.stream_mb_cpu_s / s.blake2b_mb_cpu_s);
    // Two cores sharing box + open + BLAKE2b of every byte, perfectly parallel.
    bound.push_back(2.0 / (2.0 / s.box_mb_s + 1.0 / s.blake2b_mb_s));
    std::printf("  run %d: BLAKE2b %.0f MB/s, stream %.0f MB/s (%.1f%%); XSalsa20-Poly1305 "
                "%.0f MB/s, 2-core crypto bound %.0f MB/s; per CPU-second: BLAKE2b %.0f MB, "
                "stream %.0f MB (%.1f%%)\n",
                r + 1, s.blake2b_mb_s, s.stream_mb_s, 100 * ratio_st.back(), s.box_mb_s,
                bound.back(), s.blake2b_mb_cpu_s, s.stream_mb_cpu_s, 100 * cpu_ratio.back());
  }
  auto s2 = stats(b2), ss = stats(st), rs = stats(ratio_st);
  std::printf(
      "  median: BLAKE2b %.0f MB/s [%.0f..%.0f], stream %.0f MB/s [%.0f..%.0f] = "
      "%.1f%% [%.1f..%.1f] (target >= 80%%)\n",
      s2.median, s2.min, s2.max, ss.median, ss.min, ss.max, 100 * rs.median, 100 * rs.min,
      100 * rs.max);
  auto sx = stats(box), sbnd = stats(bound), sc = stats(cpu_ratio);
  std::printf("  median: stream per CPU-second = %.1f%% [%.1f..%.1f] of BLAKE2b per CPU-second\n",
              100 * sc.median, 100 * sc.min, 100 * sc.max);
  std::printf("  median: XSalsa20-Poly1305 %.0f MB/s, 2-core bound for box+open+BLAKE2b "
              "%.0f MB/s (%.1f%% of BLAKE2b); %u cores\n",
              sx.median, sbnd.median, 100 * sbnd.median / s2.median,
              std::thread::hardware_concurrency());
  return 0;
}
