#include "transport/stream.h"

#include <sodium.h>

#include <algorithm>

#include "promises/assert.h"
#include "transport/identity.h"

namespace vow::transport {

struct Streams::Receiving {
  std::uint64_t id = 0;
  AgentKey peer;
  Digest artifact;
  std::optional<std::uint64_t> expected_bytes;
  std::unique_ptr<ChunkSink> sink;
  std::unique_ptr<Hasher> hasher;
  std::uint64_t next_offset = 0;  // contiguous bytes in the sink
  std::uint64_t total_bytes = 0;
  std::uint32_t consumed_since_credit = 0;
  std::int64_t last_progress_ms = 0;
  std::string bulk_token;  // asked for integrity-only bulk (empty: not)
};

struct Streams::Sending {
  AgentKey peer;
  std::uint64_t stream_id = 0;
  Digest artifact;
  std::unique_ptr<ChunkSource> source;
  std::uint64_t next_offset = 0;
  std::uint32_t chunk_bytes = 0;
  std::uint32_t credits = 0;
  std::int64_t last_progress_ms = 0;
  bool done = false;
  std::string bulk_token;  // chunks go plain, led by it (empty: on the link)
};

Streams::Streams(StreamOptions options, SendFn send) : options_(options), send_(std::move(send)) {
  VOW_ASSERT(options_.chunk_bytes > 0 && options_.chunk_bytes <= kMaxChunkBytes,
             "chunk_bytes %u out of range", options_.chunk_bytes);
  VOW_ASSERT(options_.window_chunks > 0, "window_chunks must be > 0");
}

Result<std::uint64_t> Streams::fetch(const AgentKey& peer, const Digest& artifact,
                                     std::uint64_t offset,
                                     std::optional<std::uint64_t> expected_bytes,
                                     std::unique_ptr<ChunkSink> sink, std::int64_t now_ms) {
  VOW_ASSERT(sink != nullptr, "fetch without a sink");
  if (receiving_.size() >= options_.max_receiving) {
    return Status::overloaded("already fetching " + std::to_string(receiving_.size()) +
                              " artifacts (limit max_receiving)");
  }
  if (expected_bytes && offset > *expected_bytes) {
    return Status::invalid("resume offset " + std::to_string(offset) + " past the artifact's " +
                           std::to_string(*expected_bytes) + " bytes");
  }
  auto r = std::make_unique<Receiving>();
  r->id = next_stream_id_++;
  r->peer = peer;
  r->artifact = artifact;
  r->expected_bytes = expected_bytes;
  r->hasher = std::make_unique<Hasher>();
  r->last_progress_ms = now_ms;
  // Resuming: the digest covers the whole artifact, so hash the prefix already held.
  std::vector<std::uint8_t> buf(std::min<std::uint64_t>(offset, options_.chunk_bytes));
  for (std::uint64_t at = 0; at < offset;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), offset - at));
    Status st = sink->read(at, std::span(buf.data(), n));
    if (!st) return Status(st.code(), "resume " + artifact.short_hex() + ": " + st.message());
    r->hasher->update(std::span<const std::uint8_t>(buf.data(), n));
    at += n;
  }
  r->next_offset = offset;
  r->sink = std::move(sink);
  FetchRequest req{r->id, artifact, offset, options_.window_chunks, options_.chunk_bytes, 0, {}};
  if (bulk_port_ != 0 && !bulk_stalled_.count(peer)) {
    r->bulk_token.resize(kBulkTokenBytes);
    randombytes_buf(r->bulk_token.data(), r->bulk_token.size());
    req.bulk_port = bulk_port_;
    req.bulk_token = r->bulk_token;
  }
  if (!send_(peer, Message{kProtocolVersion, req})) {
    return Status::unavailable("cannot send fetch request to " + agent_id(peer) +
                               " (no link or queue full)");
  }
  std::uint64_t id = r->id;
  if (!r->bulk_token.empty()) bulk_tokens_.emplace(r->bulk_token, id);
  receiving_.emplace(id, std::move(r));
  return id;
}

void Streams::cancel(std::uint64_t stream_id) {
  auto it = receiving_.find(stream_id);
  if (it == receiving_.end()) return;
  (void)send_(it->second->peer, Message{kProtocolVersion, Credit{stream_id, 0, true}});
  finish(stream_id, Status::unavailable("fetch cancelled"));
}

void Streams::finish(std::uint64_t stream_id, Status status) {
  auto it = receiving_.find(stream_id);
  if (it == receiving_.end()) return;
  Receiving& r = *it->second;
  if (status) status = r.sink->finish(r.next_offset);
  if (!status) r.sink->abort(status);
  (status ? counters_.fetches_ok : counters_.fetches_failed)++;
  outcomes_.push_back(
      FetchOutcome{stream_id, r.peer, r.artifact, std::move(status), r.next_offset, r.total_bytes});
  if (!r.bulk_token.empty()) bulk_tokens_.erase(r.bulk_token);
  receiving_.erase(it);
}

void Streams::on_chunk(const AgentKey& peer, const Chunk& c, std::int64_t now_ms) {
  auto it = receiving_.find(c.stream_id);
  if (it == receiving_.end() || it->second->peer != peer) return;  // late or foreign: ignore
  Receiving& r = *it->second;
  std::string what = "artifact " + r.artifact.hex() + " from peer " + agent_id(peer);
  if (c.offset != r.next_offset) {
    finish(c.stream_id, Status::corrupt(what + ": chunk at offset " + std::to_string(c.offset) +
                                        ", expected " + std::to_string(r.next_offset)));
    return;
  }
  if (c.offset + c.data.size() > c.total_bytes || c.data.size() > kMaxChunkBytes ||
      (r.total_bytes != 0 && c.total_bytes != r.total_bytes)) {
    finish(c.stream_id, Status::corrupt(what + ": chunk beyond the announced length"));
    return;
  }
  if (r.expected_bytes && c.total_bytes != *r.expected_bytes) {
    finish(c.stream_id, Status::corrupt(what + ": sender has " + std::to_string(c.total_bytes) +
                                        " bytes, expected " + std::to_string(*r.expected_bytes)));
    return;
  }
  r.total_bytes = c.total_bytes;
  auto data = std::span(reinterpret_cast<const std::uint8_t*>(c.data.data()), c.data.size());
  Status st = r.sink->write(c.offset, data);
  if (!st) {
    finish(c.stream_id, Status(st.code(), what + ": " + st.message()));
    return;
  }
  r.hasher->update(data);
  r.next_offset += data.size();
  r.last_progress_ms = now_ms;
  ++counters_.chunks_received;
  counters_.bytes_received += data.size();
  if (c.last) {
    if (r.next_offset != r.total_bytes) {
      finish(c.stream_id, Status::corrupt(what + ": truncated: stream ended at " +
                                          std::to_string(r.next_offset) + " of " +
                                          std::to_string(r.total_bytes) + " bytes"));
      return;
    }
    Digest got = r.hasher->finish();
    if (got != r.artifact) {
      finish(c.stream_id,
             Status::corrupt(what + ": digest mismatch: received bytes hash to " + got.hex()));
      return;
    }
    finish(c.stream_id, Status::ok());
    return;
  }
  // Grant credit back in batches of half a window: fewer messages, never a stall.
  if (++r.consumed_since_credit >= std::max<std::uint32_t>(1, options_.window_chunks / 2)) {
    if (send_(peer,
              Message{kProtocolVersion, Credit{c.stream_id, r.consumed_since_credit, false}})) {
      r.consumed_since_credit = 0;
    }
  }
}

void Streams::on_fetch_request(const AgentKey& peer, const FetchRequest& req, std::int64_t now_ms) {
  auto refuse = [&](StatusCode code, std::string msg) {
    ++counters_.serves_refused;
    (void)send_(peer, Message{kProtocolVersion,
                              FetchError{req.stream_id, static_cast<std::uint8_t>(code), msg}});
  };
  auto key = std::make_pair(peer, req.stream_id);
  if (sending_.count(key)) return refuse(StatusCode::kInvalid, "stream id in use");
  if (sending_.size() >= options_.max_sending) {
    return refuse(StatusCode::kOverloaded, "serving too many streams");
  }
  if (provider_ == nullptr) return refuse(StatusCode::kNotFound, "this agent serves no artifacts");
  auto source = provider_->open(req.artifact);
  if (!source) return refuse(source.status().code(), source.status().message());
  if (req.offset > (*source)->size()) {
    return refuse(StatusCode::kInvalid, "offset " + std::to_string(req.offset) + " past the end");
  }
  auto s = std::make_unique<Sending>();
  s->peer = peer;
  s->stream_id = req.stream_id;
  s->artifact = req.artifact;
  s->source = std::move(source).value();
  s->next_offset = req.offset;
  s->chunk_bytes = std::clamp<std::uint32_t>(req.chunk_bytes, 1, kMaxChunkBytes);
  s->credits = std::min(req.credits, 4 * options_.window_chunks);
  s->last_progress_ms = now_ms;
  // Plain only where this agent's operator allows it and a plain link to the receiver
  // can be had; else on the link, and the receiver takes them there as always.
  if (req.bulk_port != 0 && req.bulk_token.size() == kBulkTokenBytes && bulk_route_ &&
      bulk_route_->open(peer, req.bulk_port)) {
    s->bulk_token = req.bulk_token;
  }
  Sending& ref = *s;
  sending_.emplace(key, std::move(s));
  pump(ref, now_ms);
  // Sent in full (a small artifact): nothing more to do, and a served stream must not
  // hold one of the max_sending places (nor its open file) any longer.
  if (ref.done) sending_.erase(key);
}

void Streams::pump(Sending& s, std::int64_t now_ms) {
  std::uint64_t size = s.source->size();
  while (!s.done && s.credits > 0) {
    std::uint64_t n = std::min<std::uint64_t>(s.chunk_bytes, size - s.next_offset);
    Chunk c;
    c.stream_id = s.stream_id;
    c.offset = s.next_offset;
    c.total_bytes = size;
    c.data.resize(static_cast<std::size_t>(n));
    c.last = s.next_offset + n == size;
    Status st = s.source->read(
        s.next_offset, std::span(reinterpret_cast<std::uint8_t*>(c.data.data()), c.data.size()));
    if (!st) {
      (void)send_(s.peer, Message{kProtocolVersion,
                                  FetchError{s.stream_id, static_cast<std::uint8_t>(st.code()),
                                             "read failed: " + st.message()}});
      s.done = true;
      break;
    }
    const bool plain = !s.bulk_token.empty();
    Message m{kProtocolVersion, std::move(c)};
    if (!(plain ? bulk_route_->send(s.peer, s.bulk_token, m) : send_(s.peer, m))) {
      break;  // queue full: later
    }
    if (plain) ++counters_.bulk_chunks_sent;
    s.next_offset += n;
    --s.credits;
    s.last_progress_ms = now_ms;
    ++counters_.chunks_sent;
    counters_.bytes_sent += n;
    if (s.next_offset == size) s.done = true;
  }
}

bool Streams::on_message(const AgentKey& peer, const Message& m, std::int64_t now_ms) {
  if (auto* c = std::get_if<Chunk>(&m.body)) {
    on_chunk(peer, *c, now_ms);
  } else if (auto* r = std::get_if<FetchRequest>(&m.body)) {
    on_fetch_request(peer, *r, now_ms);
  } else if (auto* cr = std::get_if<Credit>(&m.body)) {
    auto it = sending_.find({peer, cr->stream_id});
    if (it == sending_.end()) return true;
    if (cr->cancel) {
      sending_.erase(it);
      return true;
    }
    Sending& s = *it->second;
    s.credits =
        std::min<std::uint64_t>(std::uint64_t{s.credits} + cr->credits, 4 * options_.window_chunks);
    s.last_progress_ms = now_ms;
    pump(s, now_ms);
    if (s.done) sending_.erase(it);
  } else if (auto* e = std::get_if<FetchError>(&m.body)) {
    auto it = receiving_.find(e->stream_id);
    if (it == receiving_.end() || it->second->peer != peer) return true;
    auto code = e->code >= 1 && e->code <= static_cast<int>(StatusCode::kIo)
                    ? static_cast<StatusCode>(e->code)
                    : StatusCode::kUnavailable;
    finish(e->stream_id, Status(code, "artifact " + it->second->artifact.hex() + " from peer " +
                                          agent_id(peer) + ": " + e->message));
  } else {
    return false;
  }
  return true;
}

void Streams::tick(std::int64_t now_ms) {
  for (auto it = sending_.begin(); it != sending_.end();) {
    Sending& s = *it->second;
    if (!s.done) pump(s, now_ms);
    // Finished streams go at once (a late credit or cancel for them is ignored); so do
    // streams whose receiver stopped granting credit for an idle period.
    if (s.done || now_ms - s.last_progress_ms > options_.idle_timeout_ms) {
      it = sending_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::uint64_t> stalled;
  for (auto& [id, r] : receiving_) {
    if (now_ms - r->last_progress_ms > options_.idle_timeout_ms) stalled.push_back(id);
  }
  for (auto id : stalled) {
    auto& r = *receiving_.at(id);
    // A plain link that does not get through (a firewall, a host it cannot be reached at
    // that way): that peer is asked on the link from now on.
    if (!r.bulk_token.empty()) bulk_stalled_.insert(r.peer);
    finish(id,
           Status::unavailable("artifact " + r.artifact.hex() + " from peer " + agent_id(r.peer) +
                               ": stalled at " + std::to_string(r.next_offset) + " bytes for " +
                               std::to_string(options_.idle_timeout_ms) + " ms"));
  }
}

void Streams::peer_lost(const AgentKey& peer, std::int64_t now_ms) {
  (void)now_ms;
  std::vector<std::uint64_t> lost;
  for (auto& [id, r] : receiving_) {
    if (r->peer == peer) lost.push_back(id);
  }
  for (auto id : lost) {
    finish(id, Status::unavailable("artifact " + receiving_.at(id)->artifact.hex() + " from peer " +
                                   agent_id(peer) + ": link lost"));
  }
  std::erase_if(sending_, [&](const auto& kv) { return kv.first.first == peer; });
}

void Streams::set_bulk(std::uint16_t ask_port, std::optional<BulkRoute> route) {
  bulk_port_ = ask_port;
  bulk_route_ = std::move(route);
}

std::optional<AgentKey> Streams::bulk_peer(std::string_view token) {
  auto it = bulk_tokens_.find(std::string(token));
  if (it == bulk_tokens_.end()) {
    ++counters_.bulk_frames_dropped;
    return std::nullopt;
  }
  return receiving_.at(it->second)->peer;
}

void Streams::on_bulk_message(std::string_view token, const Message& m, std::int64_t now_ms) {
  auto it = bulk_tokens_.find(std::string(token));
  const auto* c = std::get_if<Chunk>(&m.body);
  // Only chunks, and only of the stream the token names (a token is the stream's).
  if (it == bulk_tokens_.end() || c == nullptr || c->stream_id != it->second) {
    ++counters_.bulk_frames_dropped;
    return;
  }
  ++counters_.bulk_chunks_received;
  on_chunk(receiving_.at(it->second)->peer, *c, now_ms);
}

Streams::~Streams() = default;

std::vector<FetchOutcome> Streams::take_outcomes() { return std::exchange(outcomes_, {}); }

}  // namespace vow::transport
