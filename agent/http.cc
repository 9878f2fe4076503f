#include "agent/http.h"

#include <httplib.h>

#include <chrono>
#include <mutex>
#include <thread>

namespace vow::agent {

struct HttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::mutex mu;
  std::shared_ptr<const std::string> metrics = std::make_shared<std::string>("");
  std::shared_ptr<const std::string> status = std::make_shared<std::string>("{}");
  bool published = false;
  std::chrono::steady_clock::time_point published_at;
  bool ready = false;
  std::string ready_reason = "not ready: starting";
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(
    const std::string& address, const std::function<void(httplib::Server&)>& more_routes) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return Status::invalid("http: expected HOST:PORT");
  std::string host = address.substr(0, colon);
  int port = std::atoi(address.c_str() + colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<HttpServer> s(new HttpServer());
  Impl* impl = s->impl_.get();
  impl->server.set_keep_alive_max_count(10);
  impl->server.set_read_timeout(5, 0);
  impl->server.set_write_timeout(5, 0);
  impl->server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  impl->server.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const std::string> m;
    {
      std::lock_guard lock(impl->mu);
      m = impl->metrics;
    }
    res.set_content(*m, "text/plain; version=0.0.4; charset=utf-8");
  });
  impl->server.Get("/api/status", [impl](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const std::string> st;
    {
      std::lock_guard lock(impl->mu);
      st = impl->status;
    }
    res.set_content(*st, "application/json");
  });
  impl->server.Get("/healthz", [impl](const httplib::Request&, httplib::Response& res) {
    bool published = false;
    std::chrono::steady_clock::time_point at;
    {
      std::lock_guard lock(impl->mu);
      published = impl->published;
      at = impl->published_at;
    }
    auto age =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - at)
            .count();
    if (!published) {
      res.status = 503;
      res.set_content("starting: the agent's loop has not run yet\n", "text/plain");
    } else if (age > kStaleAfterMs) {
      res.status = 503;
      res.set_content(
          "stuck: the agent's loop has not run for " + std::to_string(age / 1000) + "s\n",
          "text/plain");
    } else {
      res.set_content("ok\n", "text/plain");
    }
  });
  impl->server.Get("/readyz", [impl](const httplib::Request&, httplib::Response& res) {
    bool ready = false;
    std::string reason;
    {
      std::lock_guard lock(impl->mu);
      ready = impl->ready;
      reason = impl->ready_reason;
    }
    res.status = ready ? 200 : 503;
    res.set_content(reason + "\n", "text/plain");
  });
  if (more_routes) more_routes(impl->server);
  if (port == 0) {
    impl->port = impl->server.bind_to_any_port(host);
  } else if (impl->server.bind_to_port(host, port)) {
    impl->port = port;
  } else {
    impl->port = -1;
  }
  if (impl->port <= 0) {
    return Status::io("http: cannot listen on " + address + " (address in use or not local)");
  }
  impl->thread = std::thread([impl] { impl->server.listen_after_bind(); });
  return s;
}

void HttpServer::publish(std::string metrics_text, std::string status_json, bool ready,
                         std::string reason) {
  auto m = std::make_shared<const std::string>(std::move(metrics_text));
  auto st = std::make_shared<const std::string>(std::move(status_json));
  std::lock_guard lock(impl_->mu);
  impl_->metrics = std::move(m);
  impl_->status = std::move(st);
  impl_->published = true;
  impl_->published_at = std::chrono::steady_clock::now();
  impl_->ready = ready;
  impl_->ready_reason = std::move(reason);
}

int HttpServer::port() const { return impl_->port; }

}  // namespace vow::agent
