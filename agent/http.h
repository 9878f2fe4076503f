// The agent's optional HTTP listener ([agent] http = "HOST:PORT"): GET /metrics
// (Prometheus text) and GET /api/status (the JSON of `vow status`), served by
// cpp-httplib on its own threads. Read-only: the handlers never touch the daemon; they
// serve the latest snapshot the loop thread published (publish(), every
// kHttpRefreshMs), so a scrape costs the loop nothing and can never block it.
#pragma once

#include <memory>
#include <string>

#include "promises/status.h"

namespace vow::agent {

class HttpServer {
 public:
  // Binds HOST:PORT and starts serving (port 0: any free port, see port()).
  static Result<std::unique_ptr<HttpServer>> start(const std::string& address);
  ~HttpServer();  // stops the server and joins its thread
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void publish(std::string metrics_text, std::string status_json);
  int port() const;

 private:
  HttpServer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::agent
