// Transport: an agent's CurveZMQ links (docs/protocol.md). One ROUTER socket, bound
// with CURVE server keys, takes inbound links; one DEALER per outbound peer connects
// with CURVE client keys. Both key pairs are derived from the agent's Ed25519 identity.
//
// Admission: a ZAP handler (a REP socket at inproc://zeromq.zap.01 in this transport's
// own ZeroMQ context) admits a connecting key only if the TrustSet holds the Ed25519
// key it was derived from, and names it as the connection's User-Id. It runs in the
// caller's event loop: its socket is one of poll_items(), served by poll_inbound(), so
// a handshake completes only while the loop polls (libzmq waits for the reply
// asynchronously; nothing blocks). Outbound links authenticate the server by the key
// given to connect(): CURVE fails unless the far side holds its secret.
//
// Links reconnect on their own (ZMQ_RECONNECT_IVL). Queues are bounded (ZMQ_SNDHWM,
// ZMQ_RCVHWM); the drop policy is "drop newest": a send that would block is not queued,
// it is counted in TransportCounters::dropped_queue_full and reported kOverloaded.
// Frames over max_frame_bytes are rejected by the validator; ZeroMQ itself disconnects
// a peer sending a frame over twice that (ZMQ_MAXMSGSIZE), so an oversized frame is
// counted before the link is cut for abuse.
//
// Usage from one event-loop thread:
//   auto t = Transport::create(identity, trust, options, &ledger_view, log);
//   t->connect(peer_key, "tcp://10.0.0.2:7400");
//   loop: zmq_poll(t->poll_items() + own fds, timeout); t->tick(now_ms);
//         (or wait_fd() + own fds, below, whose cost does not grow with links)
//         for (auto& in : t->poll_inbound(now_ms)) core.step(in);
//         for (auto& f : t->take_fetch_outcomes()) ...
//
// Owns its ZeroMQ context and sockets, and the Streams; borrows the SequenceView
// (must outlive it). Not thread-safe: every call from the one loop thread.
#pragma once

#include <zmq.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "promises/status.h"
#include "transport/identity.h"
#include "transport/message.h"
#include "transport/stream.h"
#include "transport/validator.h"

namespace vow::transport {

struct TransportOptions {
  // Where the ROUTER binds ("tcp://0.0.0.0:7400", "tcp://127.0.0.1:*", "ipc://...").
  // Empty: no listener (a command-line client).
  std::string listen;
  std::size_t max_frame_bytes = kMaxFrameBytes;
  int send_queue_messages = 1000;          // ZMQ_SNDHWM per link
  int receive_queue_messages = 1000;       // ZMQ_RCVHWM per link
  int reconnect_ms = 100;                  // ZMQ_RECONNECT_IVL
  int reconnect_max_ms = 2000;             // ZMQ_RECONNECT_IVL_MAX (exponential backoff cap)
  // The same for a peer the failure detector declared dead (dial_slowly()).
  int slow_reconnect_ms = 1000;
  int slow_reconnect_max_ms = 10'000;
  int handshake_ms = 3000;                 // ZMQ_HANDSHAKE_IVL
  std::size_t max_inbound_per_poll = 256;  // frames read per poll_inbound call
  std::size_t max_peers = 1024;            // outbound links
  // Integrity-only bulk (stream.h, BulkRoute; docs/protocol.md "Bulk without
  // encryption"): a second ROUTER, without CurveZMQ, listens on the listener's TCP host
  // at a port of its own and takes artifact chunks of this agent's fetches; and chunks
  // this agent serves go plain to a peer that asks. Both ends must allow it for a stream
  // to go plain. Off for a listener that is not TCP.
  bool bulk_integrity_only = false;
  std::uint16_t bulk_port = 0;  // the plain listener's port (0: one the system picks)
  StreamOptions streams;
};

struct TransportCounters {
  RejectCounts rejected{};
  std::uint64_t duplicates = 0;  // statements already held byte for byte: dropped quietly
  std::uint64_t vouched = 0;     // taken on an applied horizon's word (signature not checked)
  std::uint64_t shared = 0;      // signed with one whose batch signature was checked already
  // Statements at a held (author, seq) with other bytes, validly signed: equivocation
  // evidence, passed on to the core (which keeps the first as proof), not rejected.
  std::uint64_t equivocations = 0;
  std::uint64_t frames_in = 0;
  std::uint64_t frames_out = 0;
  std::uint64_t dropped_queue_full = 0;  // send would block: dropped (drop newest)
  std::uint64_t dropped_no_link = 0;     // send to a peer with no link
  std::uint64_t unauthenticated = 0;     // inbound without a User-Id (cannot happen with ZAP)
  std::uint64_t zap_allowed = 0;
  std::uint64_t zap_denied = 0;         // untrusted key refused at the handshake
  std::uint64_t handshakes_ok = 0;      // inbound handshakes completed (ROUTER)
  std::uint64_t handshakes_failed = 0;  // inbound handshakes failed (protocol or auth)
  std::uint64_t disconnects = 0;        // inbound links closed
  std::uint64_t bulk_frames_dropped = 0;  // plain listener: frames not [token, message]
                                          // or undecodable (streams: naming no stream)
  StreamCounters streams;
};

// A peer address with its key, "ID@ENDPOINT" (ID as agent_id() or 64 hex digits), as
// seed peers are written when their key is known: connecting needs the key (CURVE).
struct PeerAddress {
  AgentKey key;
  std::string endpoint;
};
Result<PeerAddress> parse_peer_address(std::string_view text);

class Transport {
 public:
  // Binds the ZAP handler, then the listener (so no link is ever admitted without it).
  static Result<std::unique_ptr<Transport>> create(const Identity& identity, TrustSet trust,
                                                   TransportOptions options,
                                                   const SequenceView* sequences, LogSink log);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  const AgentKey& key() const;
  // The bound endpoint with its real port ("tcp://127.0.0.1:41234"); empty if none.
  const std::string& endpoint() const;
  // The plain bulk listener's port (0: none).
  std::uint16_t bulk_port() const;

  // Opens (or re-targets) the outbound link to `peer` at `endpoint`. The peer must be
  // trusted. Reconnects by itself when the far side restarts.
  Status connect(const AgentKey& peer, const std::string& endpoint);
  void disconnect(const AgentKey& peer);
  // The peer was declared dead: its outbound link dials it again every
  // slow_reconnect_ms, backing off to slow_reconnect_max_ms, instead of at the pace of a
  // live link (an agent that left for good cost each survivor a connect attempt every
  // few hundred milliseconds, and the wake-ups that come with it, for ever). The first
  // frame from the peer (it dials us when it comes back), or connect() again, restores
  // the usual pace at once.
  void dial_slowly(const AgentKey& peer);
  // Replaces the trusted keys (config reload). Existing links stay until they drop.
  void set_trust(TrustSet trust);

  // Queues a message for `peer`: on its outbound link if there is one, else on the
  // inbound link it opened to us. kUnavailable without any link, kOverloaded if the
  // queue is full (the message is dropped and counted), kInvalid if too large.
  Status send(const AgentKey& peer, const Message& message);
  // Sends already-encoded frame bytes (a relay, or a test sending hostile bytes).
  Status send_frame(const AgentKey& peer, std::string_view frame);
  // Sends to every peer with an outbound or inbound link; returns how many took it.
  std::size_t broadcast(const Message& message);
  // Peers with a link (outbound configured, or inbound seen).
  std::vector<AgentKey> peers() const;

  // Sockets to poll for ZMQ_POLLIN (the caller may add its own fds to the same poll).
  std::vector<zmq_pollitem_t> poll_items() const;
  // Polls this transport's sockets alone, up to timeout_ms (-1: forever). Returns the
  // number of ready sockets.
  int wait(int timeout_ms);
  // Reads what is ready without blocking, answers ZAP requests, feeds stream messages
  // to the streams, and returns every other message that passed validation.
  std::vector<Inbound> poll_inbound(std::int64_t now_ms);
  // For an event loop whose cost must not grow with the number of links: one file
  // descriptor (an epoll set of every socket's ZMQ_FD) stands for all sockets in the
  // caller's poll, and only the sockets it reports (and those sent on since they were
  // last read, whose signal a send may have consumed) are looked at. Before blocking:
  // prepare_wait(); true means something is already readable (poll with timeout 0).
  // After the poll: poll_ready(), which reads what is ready (budget as poll_inbound).
  int wait_fd() const;
  bool prepare_wait();
  // `signalled`: wait_fd() was readable after the wait (false: only the sockets
  // prepare_wait() found are read, without asking the descriptor again).
  std::vector<Inbound> poll_ready(std::int64_t now_ms, bool signalled = true);
  // Timers: stream pumping and idle timeouts, log rate limits.
  void tick(std::int64_t now_ms);

  // Artifact streaming (stream.h).
  void set_artifact_provider(ArtifactProvider* provider);
  Result<std::uint64_t> fetch(const AgentKey& peer, const Digest& artifact, std::uint64_t offset,
                              std::optional<std::uint64_t> expected_bytes,
                              std::unique_ptr<ChunkSink> sink, std::int64_t now_ms);
  void cancel_fetch(std::uint64_t stream_id);
  std::vector<FetchOutcome> take_fetch_outcomes();

  TransportCounters counters() const;

 private:
  struct Impl;
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::transport
