#include "agent/web.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <zmq.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

namespace vow::agent {
namespace {

using nlohmann::json;

// One ZeroMQ context for every HTTP thread (contexts are thread-safe; sockets are not,
// so each request opens its own).
struct ZmqContext {
  void* ctx = zmq_ctx_new();
  ~ZmqContext() { zmq_ctx_term(ctx); }
};

// One control request to the loop: {"method", "args"} -> its JSON answer, or an
// {"error", "code": "unavailable"} when the loop does not answer in time or the server
// stops meanwhile (the agent is shutting down: its loop answers no more).
json ask_loop(const httplib::Server& server, void* ctx, const WebOptions& o,
              const std::string& method, const json& args) {
  void* s = zmq_socket(ctx, ZMQ_REQ);
  if (s == nullptr) return {{"error", "cannot open a control socket"}, {"code", "unavailable"}};
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &o.answer_timeout_ms, sizeof(o.answer_timeout_ms));
  json answer;
  std::string body = json{{"method", method}, {"args", args}}.dump();
  if (zmq_connect(s, o.control_endpoint.c_str()) != 0 ||
      zmq_send(s, body.data(), body.size(), 0) < 0) {
    answer = {{"error", std::string("the agent's control socket: ") + zmq_strerror(zmq_errno())},
              {"code", "unavailable"}};
  } else {
    constexpr int kSliceMs = 100;
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(o.answer_timeout_ms);
    zmq_pollitem_t item{s, 0, ZMQ_POLLIN, 0};
    while (std::chrono::steady_clock::now() < deadline && server.is_running() &&
           zmq_poll(&item, 1, kSliceMs) == 0) {
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (!(item.revents & ZMQ_POLLIN) || zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
      answer = {{"error", "the agent did not answer within " +
                              std::to_string(o.answer_timeout_ms / 1000) + " s"},
                {"code", "unavailable"}};
    } else {
      answer = json::parse(static_cast<const char*>(zmq_msg_data(&m)),
                           static_cast<const char*>(zmq_msg_data(&m)) + zmq_msg_size(&m), nullptr,
                           false);
      if (answer.is_discarded()) answer = {{"error", "the agent answered no JSON"}};
    }
    zmq_msg_close(&m);
  }
  zmq_close(s);
  return answer;
}

void send_json(httplib::Response& res, const json& answer) {
  if (answer.is_object() && answer.contains("error")) {
    std::string code = answer.value("code", "failed");
    res.status = code == "not_found"     ? 404
                 : code == "invalid"     ? 400
                 : code == "unavailable" ? 503
                                         : 500;
  }
  res.set_header("Cache-Control", "no-store");
  res.set_content(answer.dump(), "application/json");
}

void refuse(httplib::Response& res, int status, const std::string& message, bool as_json) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  if (as_json) {
    res.set_content(
        json{{"error", message}, {"code", status == 401 ? "unauthorized" : "forbidden"}}.dump(),
        "application/json");
  } else {
    res.set_content("<!doctype html><meta charset=utf-8><title>vow</title><p>" + message + "</p>\n",
                    "text/html; charset=utf-8");
  }
}

// Compares in time independent of where the strings differ.
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

std::string cookie_value(const httplib::Request& req, std::string_view name) {
  std::string cookies = req.get_header_value("Cookie");
  std::size_t at = 0;
  while (at < cookies.size()) {
    std::size_t end = cookies.find(';', at);
    if (end == std::string::npos) end = cookies.size();
    std::string_view part(cookies.data() + at, end - at);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name &&
        part[name.size()] == '=') {
      return std::string(part.substr(name.size() + 1));
    }
    at = end + 1;
  }
  return "";
}

// Paths that stay open whatever the token: monitoring and the probes.
bool always_open(const std::string& path) {
  return path == "/metrics" || path == "/healthz" || path == "/readyz";
}

// The request's path and query again, without `token`.
std::string without_token(const httplib::Request& req) {
  std::string query;
  for (const auto& [k, v] : req.params) {
    if (k == "token") continue;
    query += (query.empty() ? "?" : "&") + httplib::detail::encode_query_param(k) + "=" +
             httplib::detail::encode_query_param(v);
  }
  return req.path + query;
}

// A non-negative integer query parameter, or `fallback`; nullopt when malformed.
std::optional<int> int_param(const httplib::Request& req, const char* name, int fallback) {
  if (!req.has_param(name)) return fallback;
  std::string v = req.get_param_value(name);
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::stoi(v);
}

}  // namespace

const WebAsset* web_asset(std::string_view path) {
  if (path == "/" || path == "/index.html") return web_asset_generated("/index.html");
  return web_asset_generated(path);
}

bool is_loopback_http(std::string_view address) {
  auto colon = address.rfind(':');
  std::string_view host = address.substr(0, colon == std::string_view::npos ? 0 : colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  // Addresses only, so that a name like 127.example.org is not taken for one.
  std::string h(host);
  in_addr v4{};
  if (::inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, h.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Result<std::string> read_http_token(const std::string& path, const promises::Location& where) {
  std::string at = where.to_string() + ": http_token_file '" + path + "'";
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::invalid(at + ": cannot read: " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.find('\n') != std::string::npos) {
    return Status::invalid(at + ": holds more than one line; it must hold the token alone");
  }
  if (text.size() < 16 || text.size() > 4096) {
    return Status::invalid(at + ": the token must be 16-4096 characters, not " +
                           std::to_string(text.size()) +
                           " (make one with: head -c 24 /dev/urandom | base64)");
  }
  auto bad = std::find_if(text.begin(), text.end(), [](char c) {
    return !(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._~+/=-", c));
  });
  if (bad != text.end()) {
    return Status::invalid(at +
                           ": the token holds a character other than A-Z a-z 0-9 . _ ~ + / = - "
                           "(make one with: head -c 24 /dev/urandom | base64)");
  }
  return text;
}

void add_web_routes(httplib::Server& server, const WebOptions& options) {
  auto ctx = std::make_shared<ZmqContext>();
  auto o = std::make_shared<const WebOptions>(options);
  // The page polls once a second on one connection; an idle keep-alive connection holds
  // a server thread, so they are few seconds long and the threads a few more.
  server.set_keep_alive_timeout(2);
  // Small answers go out at once, not after the client's delayed acknowledgement.
  server.set_tcp_nodelay(true);
  server.new_task_queue = [] { return new httplib::ThreadPool(4); };

  server.set_pre_routing_handler([o](const httplib::Request& req, httplib::Response& res) {
    using R = httplib::Server::HandlerResponse;
    if (always_open(req.path)) return R::Unhandled;
    bool api = req.path.rfind("/api/", 0) == 0;
    if (o->token.empty()) {
      // Beyond loopback without a token: only what was served before the web view.
      if (!o->beyond_loopback || req.path == "/api/status") return R::Unhandled;
      refuse(res, 403,
             "The web view is off: [agent] http is bound beyond loopback and no "
             "http_token_file is set (docs/config.md).",
             api);
      return R::Handled;
    }
    std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), o->token)) {
      return R::Unhandled;
    }
    if (req.has_param("token")) {
      if (!same_secret(req.get_param_value("token"), o->token)) {
        refuse(res, 401, "Wrong token.", api);
        return R::Handled;
      }
      // The token becomes a cookie, and leaves the address bar.
      res.status = 303;
      res.set_header("Location", without_token(req));
      res.set_header("Set-Cookie", std::string(kWebTokenCookie) + "=" + o->token +
                                       "; Path=/; HttpOnly; SameSite=Strict");
      res.set_header("Cache-Control", "no-store");
      return R::Handled;
    }
    if (same_secret(cookie_value(req, kWebTokenCookie), o->token)) return R::Unhandled;
    refuse(res, 401,
           "This agent asks for a token: open the page once as /?token=TOKEN, or send "
           "'Authorization: Bearer TOKEN'.",
           api);
    return R::Handled;
  });

  for (const char* path : {"/", "/index.html", "/app.js", "/app.css"}) {
    server.Get(path, [](const httplib::Request& req, httplib::Response& res) {
      const WebAsset* a = web_asset(req.path);
      if (a == nullptr) {
        res.status = 404;
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                     "frame-ancestors 'none'");
      res.set_content(std::string(a->body), std::string(a->content_type));
    });
  }

  auto api = [&server, ctx, o](const char* path, auto make) {
    server.Get(path, [&server, ctx, o, make](const httplib::Request& req, httplib::Response& res) {
      json args = json::object();
      std::string method;
      if (std::string bad = make(req, method, args); !bad.empty()) {
        send_json(res, {{"error", bad}, {"code", "invalid"}});
        return;
      }
      send_json(res, ask_loop(server, ctx->ctx, *o, method, args));
    });
  };
  auto required = [](const httplib::Request& req, json& args, const char* name,
                     const char* arg) -> std::string {
    if (!req.has_param(name) || req.get_param_value(name).empty()) {
      return std::string("missing query parameter '") + name + "'";
    }
    args[arg] = req.get_param_value(name);
    return "";
  };
  api("/api/pipelines", [](const httplib::Request&, std::string& m, json&) {
    m = "web_pipelines";
    return std::string();
  });
  api("/api/mesh", [](const httplib::Request&, std::string& m, json&) {
    m = "web_mesh";
    return std::string();
  });
  api("/api/stage", [required](const httplib::Request& req, std::string& m, json& args) {
    m = "web_stage";
    if (auto e = required(req, args, "pipeline", "pipeline"); !e.empty()) return e;
    if (auto e = required(req, args, "stage", "stage"); !e.empty()) return e;
    auto offset = int_param(req, "offset", 0);
    auto limit = int_param(req, "limit", kWebPageJobs);
    if (!offset) return std::string("'offset' must be a whole number");
    if (!limit || *limit < 1 || *limit > kWebMaxPageJobs) {
      return "'limit' must be a whole number from 1 to " + std::to_string(kWebMaxPageJobs);
    }
    args["offset"] = *offset;
    args["limit"] = *limit;
    if (req.has_param("state")) args["state"] = req.get_param_value("state");
    return std::string();
  });
  api("/api/job", [required](const httplib::Request& req, std::string& m, json& args) {
    m = "job";
    return required(req, args, "id", "job");
  });
  api("/api/lineage", [required](const httplib::Request& req, std::string& m, json& args) {
    m = "lineage";
    return required(req, args, "ref", "ref");
  });
  api("/api/verify", [required](const httplib::Request& req, std::string& m, json& args) {
    m = "web_verify";
    return required(req, args, "ref", "ref");
  });
}

}  // namespace vow::agent
