#include "agent/http.h"

#include <httplib.h>

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
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& address) {
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

void HttpServer::publish(std::string metrics_text, std::string status_json) {
  auto m = std::make_shared<const std::string>(std::move(metrics_text));
  auto st = std::make_shared<const std::string>(std::move(status_json));
  std::lock_guard lock(impl_->mu);
  impl_->metrics = std::move(m);
  impl_->status = std::move(st);
}

int HttpServer::port() const { return impl_->port; }

}  // namespace vow::agent
