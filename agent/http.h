// The agent's optional HTTP listener ([agent] http = "HOST:PORT"): GET /metrics
// (Prometheus text), GET /api/status (the JSON of `vow status`), and the probes
// GET /healthz (200 while the loop publishes; 503 once it has not for
// kStaleAfterMs, or before it first did) and GET /readyz (200 when the loop said it is
// ready, 503 with its reason otherwise), served by cpp-httplib on its own threads. Read-only: the
// handlers never touch the daemon; they serve the latest snapshot the loop thread published
// (publish(), every kHttpRefreshMs), so a scrape costs the loop nothing and can never block it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "promises/status.h"

namespace httplib {
class Server;
}

namespace vow::agent {

class HttpServer {
 public:
  // /healthz fails once the loop has published nothing for this long (it publishes
  // every 500 ms): the loop is stuck.
  static constexpr std::int64_t kStaleAfterMs = 10'000;

  // Binds HOST:PORT and starts serving (port 0: any free port, see port()).
  // `more_routes`, when set, adds routes (the web view, agent/web.h) before serving.
  static Result<std::unique_ptr<HttpServer>> start(
      const std::string& address, const std::function<void(httplib::Server&)>& more_routes = {});
  ~HttpServer();  // stops the server and joins its thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The loop's snapshot; `ready` and `reason` answer /readyz.
  void publish(std::string metrics_text, std::string status_json, bool ready = true,
               std::string reason = "ready");
  int port() const;

 private:
  HttpServer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::agent
