// Helpers shared by the transport tests: deterministic identities and statements,
// deterministic artifact bytes, and an event loop over several transports that runs
// until a condition holds or a deadline passes (never a fixed sleep).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "promises/statement.h"
#include "transport/identity.h"
#include "transport/link.h"
#include "transport/message.h"
#include "transport/stream.h"

namespace vow::transport::testing {

inline Identity identity_of(std::uint8_t n) {
  std::array<std::uint8_t, 32> seed{};
  seed.fill(n);
  return Identity::from_seed(seed);
}

inline std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline Digest digest_of(std::string_view s) { return blake2b(s); }

inline JobRef job_ref() {
  return JobRef{digest_of("job"), "wordcount", "count", digest_of("stage"), "part-00"};
}

inline Statement claim(const AgentKey& author, std::uint64_t seq) {
  Statement s;
  s.author = author;
  s.seq = seq;
  s.wall_unix_ms = 1'700'000'000'000;
  s.body = Claim{job_ref(), 3, 1500, std::nullopt};
  return s;
}

// A statement as a decoded batch holds it before the validator: its signed form only.
inline Statement signed_only(const SignedStatement& s) {
  Statement st;
  st.signed_form = s;
  return st;
}

// A frame's worth of statements: a batch of the given signed forms.
inline Message batch_of(std::vector<SignedStatement> signed_forms,
                        std::uint32_t version = kProtocolVersion) {
  StatementBatch b;
  for (auto& s : signed_forms) b.statements.push_back(signed_only(s));
  return Message{version, std::move(b)};
}

// Deterministic artifact bytes: word i of the artifact is splitmix64(seed + i).
inline void fill_pattern(std::uint64_t seed, std::uint64_t offset, std::span<std::uint8_t> out) {
  std::uint64_t word = offset / 8;
  std::size_t skip = offset % 8, done = 0;
  while (done < out.size()) {
    std::uint64_t z = seed + word++ * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::uint8_t b[8];
    std::memcpy(b, &z, 8);
    std::size_t n = std::min<std::size_t>(8 - skip, out.size() - done);
    std::memcpy(out.data() + done, b + skip, n);
    done += n;
    skip = 0;
  }
}

inline Digest pattern_digest(std::uint64_t seed, std::uint64_t size) {
  Hasher h;
  std::vector<std::uint8_t> buf(1 << 20);
  for (std::uint64_t at = 0; at < size;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - at));
    fill_pattern(seed, at, std::span(buf.data(), n));
    h.update(std::span<const std::uint8_t>(buf.data(), n));
    at += n;
  }
  return h.finish();
}

// Serves pattern artifacts registered by digest; optionally corrupts one byte.
class PatternProvider final : public ArtifactProvider {
 public:
  struct Artifact {
    std::uint64_t seed = 0;
    std::uint64_t size = 0;
    std::optional<std::uint64_t> corrupt_at;
  };
  Digest add(std::uint64_t seed, std::uint64_t size, std::optional<std::uint64_t> corrupt_at = {}) {
    Digest d = pattern_digest(seed, size);
    artifacts_[d] = Artifact{seed, size, corrupt_at};
    return d;
  }
  void add_as(const Digest& d, Artifact a) { artifacts_[d] = a; }
  Result<std::unique_ptr<ChunkSource>> open(const Digest& artifact) override {
    auto it = artifacts_.find(artifact);
    if (it == artifacts_.end()) return Status::not_found("no artifact " + artifact.hex());
    return std::unique_ptr<ChunkSource>(new Source(it->second));
  }

 private:
  struct Source final : ChunkSource {
    Artifact a;
    explicit Source(Artifact x) : a(x) {}
    std::uint64_t size() const override { return a.size; }
    Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
      fill_pattern(a.seed, offset, out);
      if (a.corrupt_at && *a.corrupt_at >= offset && *a.corrupt_at < offset + out.size()) {
        out[*a.corrupt_at - offset] ^= 0x01;
      }
      return Status::ok();
    }
  };
  std::map<Digest, Artifact> artifacts_;
};

// Keeps the bytes in memory (shared, so a test can look after the transport took it).
struct MemorySink final : ChunkSink {
  struct State {
    std::vector<std::uint8_t> bytes;
    bool finished = false;
    bool aborted = false;
  };
  std::shared_ptr<State> state = std::make_shared<State>();
  Status write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (state->bytes.size() < offset + data.size()) state->bytes.resize(offset + data.size());
    if (!data.empty()) std::memcpy(state->bytes.data() + offset, data.data(), data.size());
    return Status::ok();
  }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    if (offset + out.size() > state->bytes.size()) return Status::not_found("not held");
    std::memcpy(out.data(), state->bytes.data() + offset, out.size());
    return Status::ok();
  }
  Status finish(std::uint64_t) override {
    state->finished = true;
    return Status::ok();
  }
  void abort(const Status&) override { state->aborted = true; }
};

// Discards the bytes (the transport verifies the digest as they pass).
struct DiscardSink final : ChunkSink {
  Status write(std::uint64_t, std::span<const std::uint8_t>) override { return Status::ok(); }
  Status read(std::uint64_t, std::span<std::uint8_t>) override {
    return Status::not_found("discarded");
  }
  Status finish(std::uint64_t) override { return Status::ok(); }
  void abort(const Status&) override {}
};

// Runs the transports' loops in this thread, collecting their inbound messages and
// fetch outcomes, until `done` holds or `deadline_ms` passes. Returns whether it held.
struct Loop {
  explicit Loop(std::vector<Transport*> ts) : transports(std::move(ts)) {}
  std::vector<Transport*> transports;
  std::map<Transport*, std::vector<Inbound>> inbox;
  std::map<Transport*, std::vector<FetchOutcome>> outcomes;

  void once(int timeout_ms) {
    std::vector<zmq_pollitem_t> items;
    for (auto* t : transports) {
      auto more = t->poll_items();
      items.insert(items.end(), more.begin(), more.end());
    }
    zmq_poll(items.data(), static_cast<int>(items.size()), timeout_ms);
    std::int64_t now = now_ms();
    for (auto* t : transports) {
      for (auto& in : t->poll_inbound(now)) inbox[t].push_back(std::move(in));
      t->tick(now);
      for (auto& o : t->take_fetch_outcomes()) outcomes[t].push_back(std::move(o));
    }
  }
  bool run_until(const std::function<bool()>& done, std::int64_t deadline_ms = 10'000) {
    std::int64_t end = now_ms() + deadline_ms;
    while (!done()) {
      if (now_ms() > end) return false;
      once(5);
    }
    return true;
  }
};

}  // namespace vow::transport::testing
