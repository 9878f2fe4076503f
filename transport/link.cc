#include "transport/link.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "promises/assert.h"
#include "transport/codec.h"
#include "transport/codec_internal.h"

namespace vow::transport {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kMonitorEndpoint = "inproc://vow.router.monitor";
constexpr std::size_t kMaxZapPerPoll = 64;
constexpr std::size_t kMaxMonitorEventsPerPoll = 256;

std::string zmq_error(const char* what) {
  return std::string(what) + ": " + zmq_strerror(zmq_errno());
}

// Receives one whole multipart message without blocking; false if none is ready.
bool recv_parts(void* socket, std::vector<zmq_msg_t>& parts) {
  parts.clear();
  while (true) {
    parts.emplace_back();
    zmq_msg_init(&parts.back());
    int flags = parts.size() == 1 ? ZMQ_DONTWAIT : 0;  // later parts are already here
    if (zmq_msg_recv(&parts.back(), socket, flags) < 0) {
      zmq_msg_close(&parts.back());
      parts.pop_back();
      return false;
    }
    if (!zmq_msg_more(&parts.back())) return true;
  }
}

void close_parts(std::vector<zmq_msg_t>& parts) {
  for (auto& p : parts) zmq_msg_close(&p);
  parts.clear();
}

std::string_view view(zmq_msg_t& m) {
  return {static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m)};
}

std::span<const std::uint8_t> bytes(zmq_msg_t& m) {
  return {static_cast<const std::uint8_t*>(zmq_msg_data(&m)), zmq_msg_size(&m)};
}

void set_int(void* s, int option, int value) {
  int rc = zmq_setsockopt(s, option, &value, sizeof(value));
  VOW_ASSERT(rc == 0, "zmq_setsockopt(%d, %d): %s", option, value, zmq_strerror(zmq_errno()));
}

// "tcp://HOST" of a "tcp://HOST:PORT" endpoint; nullopt for any other kind.
std::optional<std::string> tcp_host(const std::string& endpoint) {
  auto colon = endpoint.rfind(':');
  if (endpoint.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6) {
    return std::nullopt;
  }
  return endpoint.substr(0, colon);
}

}  // namespace

struct Transport::Impl {
  struct Peer {
    void* dealer = nullptr;  // outbound link, if we connect to it
    std::string endpoint;
    void* bulk_dealer = nullptr;  // plain link for chunks served to it (bulk_integrity_only)
    std::string bulk_endpoint;
    std::optional<std::string> routing_id;  // inbound link it opened to us, if any
    bool slow = false;                      // dialed at the pace of a dead peer
  };
  std::set<AgentKey> heard_slow;  // slow peers a frame came from in this poll

  Identity identity;
  CurveKeyPair curve;
  TrustSet trust;
  TransportOptions options;
  LogSink log;
  void* ctx = nullptr;
  void* zap = nullptr;
  void* router = nullptr;
  void* monitor = nullptr;
  void* bulk_router = nullptr;  // plain listener for chunks (bulk_integrity_only)
  std::uint16_t bulk_port = 0;
  std::string endpoint;
  std::map<AgentKey, Peer> peers;
  Validator validator;
  std::unique_ptr<Streams> streams;
  TransportCounters counters;
  std::int64_t now_ms = 0;
  // wait_fd(): every socket's ZMQ_FD in one epoll set (level-triggered; the pointer of
  // the socket as its data). A ZMQ_FD signals that the socket's state may have changed
  // and stays readable until ZMQ_EVENTS (or a send or receive) takes the signal; so a
  // socket sent on, or left unread by the budget, is looked at again (`recheck`).
  int epfd = -1;
  std::map<void*, int> watched;  // socket -> its ZMQ_FD
  std::map<void*, AgentKey> dealer_peer;
  std::set<void*> recheck;
  std::set<void*> ready_now;  // found readable by prepare_wait()
  bool barrier = false;       // a batch with horizons was read: read no more this poll

  Impl(const Identity& id, TrustSet t, TransportOptions o, const SequenceView* seqs, LogSink l)
      : identity(id),
        curve(id.curve()),
        trust(std::move(t)),
        options(std::move(o)),
        log(std::move(l)),
        validator(&trust, seqs, options.max_frame_bytes, log) {
    streams = std::make_unique<Streams>(
        options.streams,
        [this](const AgentKey& peer, const Message& m) { return send(peer, m).is_ok(); });
  }

  ~Impl() {
    if (epfd >= 0) ::close(epfd);
    for (auto& [k, p] : peers) {
      if (p.dealer) zmq_close(p.dealer);
      if (p.bulk_dealer) zmq_close(p.bulk_dealer);
    }
    if (bulk_router) zmq_close(bulk_router);
    if (monitor) zmq_close(monitor);
    if (router) {
      zmq_socket_monitor(router, nullptr, 0);
      zmq_close(router);
    }
    if (zap) zmq_close(zap);
    if (ctx) zmq_ctx_term(ctx);
  }

  void watch(void* s) {
    int fd = -1;
    std::size_t len = sizeof(fd);
    int rc = zmq_getsockopt(s, ZMQ_FD, &fd, &len);
    VOW_ASSERT(rc == 0, "ZMQ_FD: %s", zmq_strerror(zmq_errno()));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = s;
    rc = ::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    VOW_ASSERT(rc == 0, "epoll_ctl(ADD): %s", std::strerror(errno));
    watched[s] = fd;
    recheck.insert(s);
  }

  // Before the socket is closed (its ZMQ_FD goes with it).
  void unwatch(void* s) {
    auto it = watched.find(s);
    if (it == watched.end()) return;
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, it->second, nullptr);
    watched.erase(it);
    recheck.erase(s);
    ready_now.erase(s);
  }

  static bool readable(void* s) {
    int events = 0;
    std::size_t len = sizeof(events);
    return zmq_getsockopt(s, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN) != 0;
  }

  bool prepare_wait() {
    for (void* s : recheck) {
      if (readable(s)) ready_now.insert(s);
    }
    recheck.clear();
    return !ready_now.empty();
  }

  std::vector<Inbound> poll_ready(std::int64_t now, bool signalled) {
    std::set<void*> ready = std::move(ready_now);
    ready_now.clear();
    std::vector<epoll_event> events(signalled ? watched.size() + 1 : 0);
    int n = signalled ? ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), 0) : 0;
    // A socket whose descriptor fired is read at once, not asked first (ZMQ_EVENTS):
    // a receive that finds nothing takes the signal as that question would, and one
    // that finds a message saves the question (each is a getpid and a poll inside
    // ZeroMQ, its fork check and its mailbox).
    for (int i = 0; i < n; ++i) {
      void* s = events[static_cast<std::size_t>(i)].data.ptr;
      if (watched.count(s) != 0) ready.insert(s);
    }
    auto out = poll_sockets(now, &ready);
    recheck.insert(ready.begin(), ready.end());  // the budget ran out before these
    return out;
  }

  void logf(LogLevel level, const std::string& line) {
    if (log) log(level, line);
  }

  void common_options(void* s) {
    set_int(s, ZMQ_SNDHWM, options.send_queue_messages);
    set_int(s, ZMQ_RCVHWM, options.receive_queue_messages);
    set_int(s, ZMQ_LINGER, 0);
    set_int(s, ZMQ_HANDSHAKE_IVL, options.handshake_ms);
    // Twice our own limit: frames between the two are read and counted as oversized;
    // beyond it ZeroMQ cuts the link without buffering the frame.
    std::int64_t max = static_cast<std::int64_t>(options.max_frame_bytes) * 2;
    int rc = zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof(max));
    VOW_ASSERT(rc == 0, "ZMQ_MAXMSGSIZE: %s", zmq_strerror(zmq_errno()));
  }

  Status start() {
    ctx = zmq_ctx_new();
    if (!ctx) return Status::io(zmq_error("zmq_ctx_new"));
    // No socket of this context holds its termination up (ZeroMQ's default lingers for
    // ever on a message not yet delivered): a ZAP reply left for a connection that went
    // away would have zmq_ctx_term, and so the agent's exit, wait for good.
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return Status::io(std::string("epoll_create1: ") + std::strerror(errno));
    zap = zmq_socket(ctx, ZMQ_REP);
    if (zap) set_int(zap, ZMQ_LINGER, 0);
    if (!zap || zmq_bind(zap, kZapEndpoint) != 0) return Status::io(zmq_error("bind ZAP handler"));
    watch(zap);
    if (options.listen.empty()) return Status::ok();
    router = zmq_socket(ctx, ZMQ_ROUTER);
    if (!router) return Status::io(zmq_error("zmq_socket(ROUTER)"));
    common_options(router);
    set_int(router, ZMQ_ROUTER_MANDATORY, 1);
    set_int(router, ZMQ_CURVE_SERVER, 1);
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, curve.secret_key.data(), 32);
    zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "vow", 3);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(router, kMonitorEndpoint, events) != 0) {
      return Status::io(zmq_error("zmq_socket_monitor"));
    }
    monitor = zmq_socket(ctx, ZMQ_PAIR);
    if (monitor) set_int(monitor, ZMQ_LINGER, 0);
    if (!monitor || zmq_connect(monitor, kMonitorEndpoint) != 0) {
      return Status::io(zmq_error("connect monitor"));
    }
    if (zmq_bind(router, options.listen.c_str()) != 0) {
      return Status::unavailable(zmq_error(("bind " + options.listen).c_str()));
    }
    watch(router);
    watch(monitor);
    char buf[256];
    std::size_t len = sizeof(buf);
    if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, buf, &len) == 0) endpoint = buf;
    if (options.bulk_integrity_only) return start_bulk();
    return Status::ok();
  }

  // The plain listener on the listener's host, at a port the system picks.
  Status start_bulk() {
    auto host = tcp_host(options.listen);
    if (!host) {
      logf(LogLevel::kWarn, "integrity-only bulk needs a tcp:// listener, not " +
                                options.listen + ": artifacts go on the encrypted links");
      return Status::ok();
    }
    bulk_router = zmq_socket(ctx, ZMQ_ROUTER);
    if (!bulk_router) return Status::io(zmq_error("zmq_socket(ROUTER)"));
    common_options(bulk_router);
    std::string at = *host + ":" +
                     (options.bulk_port != 0 ? std::to_string(options.bulk_port) : "*");
    if (zmq_bind(bulk_router, at.c_str()) != 0) {
      return Status::unavailable(zmq_error(("bind " + at).c_str()));
    }
    char buf[256];
    std::size_t len = sizeof(buf);
    if (zmq_getsockopt(bulk_router, ZMQ_LAST_ENDPOINT, buf, &len) != 0) {
      return Status::io(zmq_error("ZMQ_LAST_ENDPOINT"));
    }
    std::string bound = buf;
    bulk_port = static_cast<std::uint16_t>(std::stoul(bound.substr(bound.rfind(':') + 1)));
    watch(bulk_router);
    streams->set_bulk(bulk_port, BulkRoute{
                                     [this](const AgentKey& peer, std::uint16_t port) {
                                       return open_bulk(peer, port);
                                     },
                                     [this](const AgentKey& peer, std::string_view token,
                                            const Message& m) { return send_bulk(peer, token, m); },
                                 });
    return Status::ok();
  }

  // A plain link to PEER's bulk listener at PORT, on the host its outbound link dials
  // (never an address a request names: a peer can direct this agent's bytes only to
  // where it already sends them). False without an outbound TCP link.
  bool open_bulk(const AgentKey& peer, std::uint16_t port) {
    auto it = peers.find(peer);
    if (it == peers.end() || it->second.dealer == nullptr) return false;
    Peer& p = it->second;
    auto host = tcp_host(p.endpoint);
    if (!host) return false;
    std::string ep = *host + ":" + std::to_string(port);
    if (p.bulk_dealer != nullptr && p.bulk_endpoint == ep) return true;
    close_bulk(p);
    void* s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s) return false;
    common_options(s);
    set_int(s, ZMQ_RECONNECT_IVL, options.reconnect_ms);
    set_int(s, ZMQ_RECONNECT_IVL_MAX, options.reconnect_max_ms);
    if (zmq_connect(s, ep.c_str()) != 0) {
      logf(LogLevel::kWarn, zmq_error(("connect " + ep).c_str()));
      zmq_close(s);
      return false;
    }
    p.bulk_dealer = s;
    p.bulk_endpoint = ep;
    return true;
  }

  void close_bulk(Peer& p) {
    if (p.bulk_dealer == nullptr) return;
    zmq_close(p.bulk_dealer);
    p.bulk_dealer = nullptr;
    p.bulk_endpoint.clear();
  }

  // [token][message] on the plain link (one multipart message: both or neither queued).
  bool send_bulk(const AgentKey& peer, std::string_view token, const Message& m) {
    auto it = peers.find(peer);
    if (it == peers.end() || it->second.bulk_dealer == nullptr) return false;
    zmq_msg_t msg;
    if (!encode_into(m, &msg)) return false;
    void* s = it->second.bulk_dealer;
    int rc = zmq_send(s, token.data(), token.size(), ZMQ_DONTWAIT | ZMQ_SNDMORE);
    if (rc >= 0) rc = zmq_msg_send(&msg, s, ZMQ_DONTWAIT);
    if (rc < 0) {
      zmq_msg_close(&msg);
      return false;
    }
    ++counters.frames_out;
    return true;
  }

  // One frame from the plain listener: [routing id, token, message]. Nothing on it is
  // authenticated but the token, which names a stream of this agent's (and its peer);
  // the stream's digest check is what the bytes must pass. Returns false when none is
  // ready.
  bool read_bulk() {
    std::vector<zmq_msg_t> parts;
    if (!bulk_router || !recv_parts(bulk_router, parts)) return false;
    ++counters.frames_in;
    std::optional<AgentKey> peer;
    if (parts.size() == 3 && zmq_msg_size(&parts[1]) == kBulkTokenBytes) {
      peer = streams->bulk_peer(view(parts[1]));
    } else {
      ++counters.bulk_frames_dropped;
    }
    if (peer) {
      auto m = decode_message(bytes(parts[2]), options.max_frame_bytes);
      if (m) {
        streams->on_bulk_message(view(parts[1]), *m, now_ms);
      } else {
        ++counters.bulk_frames_dropped;
      }
    }
    close_parts(parts);
    return true;
  }

  // Checks that `peer` has a link and the frame fits.
  Status route(const AgentKey& peer, std::size_t frame_bytes) {
    if (frame_bytes > options.max_frame_bytes) {
      return Status::invalid("frame of " + std::to_string(frame_bytes) + " bytes over the limit");
    }
    auto it = peers.find(peer);
    if (it == peers.end() || (!it->second.dealer && !it->second.routing_id)) {
      ++counters.dropped_no_link;
      return Status::unavailable("no link to peer " + agent_id(peer));
    }
    return Status::ok();
  }

  // Counts the result of a send (rc from zmq) and turns it into a Status.
  Status sent(const AgentKey& peer, Peer& p, int rc) {
    if (rc < 0) {
      int err = zmq_errno();
      if (err == EHOSTUNREACH) {  // the inbound link went away
        p.routing_id.reset();
        ++counters.dropped_no_link;
        return Status::unavailable("link to peer " + agent_id(peer) + " is gone");
      }
      ++counters.dropped_queue_full;
      return Status::overloaded("send queue to peer " + agent_id(peer) + " full: dropped (" +
                                zmq_strerror(err) + ")");
    }
    ++counters.frames_out;
    return Status::ok();
  }

  Status send_bytes(const AgentKey& peer, std::string_view frame) {
    zmq_msg_t msg;
    zmq_msg_init_size(&msg, frame.size());
    if (!frame.empty()) std::memcpy(zmq_msg_data(&msg), frame.data(), frame.size());
    return send_msg(peer, &msg);
  }

  // Encodes M into MSG, handing the encoded words to ZeroMQ without another copy (it
  // frees them when sent). The encoding's error, else ok with MSG initialized.
  static Status encode_into(const Message& m, zmq_msg_t* msg) {
    auto words = internal::encode_message_words(m);
    if (!words) return words.status();
    auto* owned = new kj::Array<capnp::word>(std::move(words).value());
    auto bytes = owned->asBytes();
    zmq_msg_init_data(
        msg, bytes.begin(), bytes.size(),
        [](void*, void* hint) { delete static_cast<kj::Array<capnp::word>*>(hint); }, owned);
    return Status::ok();
  }

  Status send(const AgentKey& peer, const Message& m) {
    zmq_msg_t msg;
    VOW_RETURN_IF_ERROR(encode_into(m, &msg));
    return send_msg(peer, &msg);
  }

  // Sends (and always consumes) one prepared frame.
  Status send_msg(const AgentKey& peer, zmq_msg_t* msg) {
    std::size_t size = zmq_msg_size(msg);
    Status st = route(peer, size);
    if (!st) {
      zmq_msg_close(msg);
      return st;
    }
    Peer& p = peers[peer];
    int rc;
    if (p.dealer) {
      rc = zmq_msg_send(msg, p.dealer, ZMQ_DONTWAIT);
    } else {
      const std::string& id = *p.routing_id;
      rc = zmq_send(router, id.data(), id.size(), ZMQ_DONTWAIT | ZMQ_SNDMORE);
      if (rc >= 0) rc = zmq_msg_send(msg, router, ZMQ_DONTWAIT);
    }
    if (rc < 0) zmq_msg_close(msg);
    recheck.insert(p.dealer ? p.dealer : router);
    return sent(peer, p, rc);
  }

  // True when it read all there was (less than its limit).
  bool serve_zap() {
    std::vector<zmq_msg_t> parts;
    std::size_t n = 0;
    for (; n < kMaxZapPerPoll && recv_parts(zap, parts); ++n) {
      std::string request_id = parts.size() > 1 ? std::string(view(parts[1])) : "";
      std::string mechanism = parts.size() > 5 ? std::string(view(parts[5])) : "";
      std::optional<AgentKey> key;
      if (mechanism == "CURVE" && parts.size() > 6 && zmq_msg_size(&parts[6]) == 32) {
        key = trust.by_curve_key(std::span<const std::uint8_t, 32>(bytes(parts[6]).data(), 32));
      }
      close_parts(parts);
      std::string status = key ? "200" : "400";
      std::string text = key ? "OK" : "key not trusted";
      std::string user = key ? key->hex() : "";
      if (key) {
        ++counters.zap_allowed;
      } else {
        ++counters.zap_denied;
        logf(LogLevel::kWarn, "refused a " + mechanism + " connection: key not trusted");
      }
      const std::string reply[] = {"1.0", request_id, status, text, user, ""};
      for (int i = 0; i < 6; ++i) {
        zmq_send(zap, reply[i].data(), reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
      }
      recheck.insert(zap);
    }
    return n < kMaxZapPerPoll;
  }

  // True when it read all there was (less than its limit).
  bool drain_monitor() {
    if (!monitor) return true;
    std::vector<zmq_msg_t> parts;
    std::size_t n = 0;
    for (; n < kMaxMonitorEventsPerPoll && recv_parts(monitor, parts); ++n) {
      if (!parts.empty() && zmq_msg_size(&parts[0]) >= 2) {
        std::uint16_t event;
        std::memcpy(&event, zmq_msg_data(&parts[0]), 2);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
          ++counters.handshakes_ok;
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
          ++counters.disconnects;
        } else {
          ++counters.handshakes_failed;
          logf(LogLevel::kWarn, "inbound handshake failed (" +
                                    std::string(parts.size() > 1 ? view(parts[1]) : "") + ")");
        }
      }
      close_parts(parts);
    }
    return n < kMaxMonitorEventsPerPoll;
  }

  // Closes the outbound link to a peer, if it has one.
  void close_dealer(Peer& p) {
    if (!p.dealer) return;
    unwatch(p.dealer);
    dealer_peer.erase(p.dealer);
    zmq_close(p.dealer);
    p.dealer = nullptr;
  }

  // The outbound link to `peer` at `endpoint`, replacing any it had (what was queued on
  // that one is dropped), dialing at the live or the slow pace.
  Status open_dealer(const AgentKey& peer, const std::string& endpoint, bool slow) {
    auto server_key = curve_public_key(peer);
    if (!server_key) return Status::invalid("peer key " + peer.hex() + " has no curve form");
    auto it = peers.find(peer);
    if (it != peers.end()) close_dealer(it->second);
    void* s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s) return Status::io(zmq_error("zmq_socket(DEALER)"));
    common_options(s);
    set_int(s, ZMQ_RECONNECT_IVL, slow ? options.slow_reconnect_ms : options.reconnect_ms);
    set_int(s, ZMQ_RECONNECT_IVL_MAX,
            slow ? options.slow_reconnect_max_ms : options.reconnect_max_ms);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key->data(), 32);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, curve.public_key.data(), 32);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve.secret_key.data(), 32);
    if (zmq_connect(s, endpoint.c_str()) != 0) {
      Status st = Status::invalid(zmq_error(("connect " + endpoint).c_str()));
      zmq_close(s);
      return st;
    }
    auto& p = peers[peer];
    p.dealer = s;
    p.endpoint = endpoint;
    p.slow = slow;
    watch(s);
    dealer_peer[s] = peer;
    return Status::ok();
  }

  void deliver(std::span<const std::uint8_t> frame, const AgentKey& peer, PeerRole role,
               std::vector<Inbound>& out) {
    ++counters.frames_in;
    auto m = validator.validate(frame, peer, role);
    if (!m) return;
    if (streams->on_message(peer, *m, now_ms)) return;
    // Horizons: the frames after them are read once the agent has taken them, so that
    // the statements they settle are checked against what they vouch for.
    if (const auto* batch = std::get_if<StatementBatch>(&m->body)) {
      for (const Statement& st : batch->statements) {
        if (st.kind() == StatementKind::kHorizon) barrier = true;
      }
    }
    out.push_back(Inbound{peer, role, std::move(*m)});
  }

  // One frame from the ROUTER: [routing id, payload]. Returns false when none is ready.
  bool read_router(std::vector<Inbound>& out) {
    std::vector<zmq_msg_t> parts;
    if (!router || !recv_parts(router, parts)) return false;
    if (parts.size() != 2) {
      ++counters.frames_in;
      close_parts(parts);
      return true;  // a DEALER sends exactly one frame; anything else is not vow
    }
    const char* user = zmq_msg_gets(&parts[1], "User-Id");
    auto key = user ? parse_agent_key(user) : Result<AgentKey>(Status::invalid("none"));
    auto role = key ? trust.role(*key) : std::nullopt;
    if (!role) {
      ++counters.unauthenticated;
    } else {
      Peer& p = peers[*key];
      p.routing_id = std::string(view(parts[0]));
      if (p.slow) heard_slow.insert(*key);
      deliver(bytes(parts[1]), *key, *role, out);
    }
    close_parts(parts);
    return true;
  }

  bool read_dealer(const AgentKey& key, void* dealer, std::vector<Inbound>& out) {
    std::vector<zmq_msg_t> parts;
    if (!recv_parts(dealer, parts)) return false;
    if (parts.size() == 1) {
      auto role = trust.role(key);
      if (role) {
        auto p = peers.find(key);
        if (p != peers.end() && p->second.slow) heard_slow.insert(key);
        deliver(bytes(parts[0]), key, *role, out);
      }
    } else {
      ++counters.frames_in;
    }
    close_parts(parts);
    return true;
  }

  // Reads what is ready: every socket (ready == nullptr), or only those in `ready`,
  // each until it has nothing more (or the budget is spent).
  std::vector<Inbound> poll_sockets(std::int64_t now, std::set<void*>* ready) {
    now_ms = now;
    validator.set_now(now);
    auto is_ready = [&](void* s) { return ready == nullptr || ready->count(s) != 0; };
    auto drained = [&](void* s) {
      if (ready != nullptr) ready->erase(s);
    };
    if (is_ready(zap) && serve_zap()) drained(zap);
    if (monitor != nullptr && is_ready(monitor) && drain_monitor()) drained(monitor);
    // The dealers to read: those ready (found through the socket, not by a pass over
    // every peer), or every one.
    std::vector<std::pair<AgentKey, void*>> dealers;
    if (ready == nullptr) {
      for (auto& [k, p] : peers) {
        if (p.dealer != nullptr) dealers.emplace_back(k, p.dealer);
      }
    } else {
      for (void* s : *ready) {
        auto it = dealer_peer.find(s);
        if (it != dealer_peer.end()) dealers.emplace_back(it->second, s);
      }
    }
    std::vector<Inbound> out;
    std::size_t budget = options.max_inbound_per_poll;
    barrier = false;
    // Round robin over the sockets so one busy link cannot starve the others.
    bool progress = true;
    while (budget > 0 && progress && !barrier) {
      progress = false;
      if (bulk_router != nullptr && is_ready(bulk_router)) {
        if (read_bulk()) {
          progress = true;
          --budget;
        } else {
          drained(bulk_router);
        }
      }
      if (router != nullptr && is_ready(router)) {
        if (read_router(out)) {
          progress = true;
          --budget;
        } else {
          drained(router);
        }
      }
      for (auto& [k, dealer] : dealers) {
        if (budget == 0 || barrier) break;
        if (dealer == nullptr) continue;
        if (read_dealer(k, dealer, out)) {
          progress = true;
          --budget;
        } else {
          drained(dealer);
          dealer = nullptr;
        }
      }
    }
    // Peers dialed slowly that spoke: the usual pace again (not within the loop above,
    // which holds their sockets).
    for (const AgentKey& key : std::exchange(heard_slow, {})) {
      auto p = peers.find(key);
      if (p == peers.end() || !p->second.slow || p->second.dealer == nullptr) continue;
      if (ready != nullptr) ready->erase(p->second.dealer);
      Status st = open_dealer(key, p->second.endpoint, /*slow=*/false);
      if (!st.is_ok()) logf(LogLevel::kWarn, "reconnect " + p->second.endpoint + ": " + st.message());
    }
    return out;
  }
};

Result<PeerAddress> parse_peer_address(std::string_view text) {
  auto at = text.find('@');
  if (at == std::string_view::npos || at + 1 == text.size()) {
    return Status::invalid("peer address '" + std::string(text) + "' is not ID@ENDPOINT");
  }
  auto key = parse_agent_key(text.substr(0, at));
  if (!key)
    return Status::invalid("peer address '" + std::string(text) + "': " + key.status().message());
  return PeerAddress{*key, std::string(text.substr(at + 1))};
}

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transport::~Transport() = default;

Result<std::unique_ptr<Transport>> Transport::create(const Identity& identity, TrustSet trust,
                                                     TransportOptions options,
                                                     const SequenceView* sequences, LogSink log) {
  VOW_ASSERT(sequences != nullptr, "Transport needs a SequenceView");
  auto impl = std::make_unique<Impl>(identity, std::move(trust), std::move(options), sequences,
                                     std::move(log));
  VOW_RETURN_IF_ERROR(impl->start());
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

const AgentKey& Transport::key() const { return impl_->identity.key(); }
const std::string& Transport::endpoint() const { return impl_->endpoint; }
std::uint16_t Transport::bulk_port() const { return impl_->bulk_port; }

Status Transport::connect(const AgentKey& peer, const std::string& endpoint) {
  auto& I = *impl_;
  if (!I.trust.role(peer)) return Status::invalid("peer " + agent_id(peer) + " is not trusted");
  auto it = I.peers.find(peer);
  if (it != I.peers.end() && it->second.dealer) {
    if (it->second.endpoint == endpoint) {
      return it->second.slow ? I.open_dealer(peer, endpoint, /*slow=*/false) : Status::ok();
    }
    disconnect(peer);
  }
  std::size_t outbound = 0;
  for (auto& [k, p] : I.peers) outbound += p.dealer != nullptr;
  if (outbound >= I.options.max_peers) {
    return Status::overloaded("outbound link limit max_peers reached");
  }
  return I.open_dealer(peer, endpoint, /*slow=*/false);
}

void Transport::dial_slowly(const AgentKey& peer) {
  auto& I = *impl_;
  auto it = I.peers.find(peer);
  if (it == I.peers.end() || it->second.dealer == nullptr || it->second.slow) return;
  Status st = I.open_dealer(peer, it->second.endpoint, /*slow=*/true);
  if (!st.is_ok()) I.logf(LogLevel::kWarn, "reconnect " + it->second.endpoint + ": " + st.message());
}

void Transport::disconnect(const AgentKey& peer) {
  auto it = impl_->peers.find(peer);
  if (it == impl_->peers.end()) return;
  impl_->close_dealer(it->second);
  impl_->close_bulk(it->second);
  impl_->peers.erase(it);
  impl_->streams->peer_lost(peer, impl_->now_ms);
}

void Transport::set_trust(TrustSet trust) { impl_->trust = std::move(trust); }

Status Transport::send(const AgentKey& peer, const Message& message) {
  return impl_->send(peer, message);
}

Status Transport::send_frame(const AgentKey& peer, std::string_view frame) {
  return impl_->send_bytes(peer, frame);
}

std::size_t Transport::broadcast(const Message& message) {
  auto frame = encode_message(message);
  if (!frame) {
    impl_->logf(LogLevel::kWarn, std::string("cannot broadcast a ") +
                                     message_kind_name(message.body) +
                                     " message: " + frame.status().to_string());
    return 0;
  }
  std::size_t n = 0;
  for (auto& [k, p] : impl_->peers) {
    if (impl_->send_bytes(k, *frame)) ++n;
  }
  return n;
}

std::vector<AgentKey> Transport::peers() const {
  std::vector<AgentKey> out;
  for (auto& [k, p] : impl_->peers) {
    if (p.dealer || p.routing_id) out.push_back(k);
  }
  return out;
}

std::vector<zmq_pollitem_t> Transport::poll_items() const {
  std::vector<zmq_pollitem_t> items;
  auto add = [&](void* s) { items.push_back(zmq_pollitem_t{s, 0, ZMQ_POLLIN, 0}); };
  add(impl_->zap);
  if (impl_->router) add(impl_->router);
  if (impl_->monitor) add(impl_->monitor);
  if (impl_->bulk_router) add(impl_->bulk_router);
  for (auto& [k, p] : impl_->peers) {
    if (p.dealer) add(p.dealer);
  }
  return items;
}

int Transport::wait(int timeout_ms) {
  auto items = poll_items();
  return zmq_poll(items.data(), static_cast<int>(items.size()), timeout_ms);
}

std::vector<Inbound> Transport::poll_inbound(std::int64_t now_ms) {
  return impl_->poll_sockets(now_ms, nullptr);
}

int Transport::wait_fd() const { return impl_->epfd; }

bool Transport::prepare_wait() { return impl_->prepare_wait(); }

std::vector<Inbound> Transport::poll_ready(std::int64_t now_ms, bool signalled) {
  return impl_->poll_ready(now_ms, signalled);
}

void Transport::tick(std::int64_t now_ms) {
  impl_->now_ms = now_ms;
  impl_->validator.set_now(now_ms);
  impl_->streams->tick(now_ms);
}

void Transport::set_artifact_provider(ArtifactProvider* provider) {
  impl_->streams->set_provider(provider);
}

Result<std::uint64_t> Transport::fetch(const AgentKey& peer, const Digest& artifact,
                                       std::uint64_t offset,
                                       std::optional<std::uint64_t> expected_bytes,
                                       std::unique_ptr<ChunkSink> sink, std::int64_t now_ms) {
  impl_->now_ms = now_ms;
  return impl_->streams->fetch(peer, artifact, offset, expected_bytes, std::move(sink), now_ms);
}

void Transport::cancel_fetch(std::uint64_t stream_id) { impl_->streams->cancel(stream_id); }

std::vector<FetchOutcome> Transport::take_fetch_outcomes() {
  return impl_->streams->take_outcomes();
}

TransportCounters Transport::counters() const {
  TransportCounters c = impl_->counters;
  c.rejected = impl_->validator.rejects();
  c.duplicates = impl_->validator.duplicates();
  c.vouched = impl_->validator.vouched();
  c.shared = impl_->validator.shared();
  c.equivocations = impl_->validator.equivocations();
  c.streams = impl_->streams->counters();
  return c;
}

}  // namespace vow::transport
