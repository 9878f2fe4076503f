#include "agent/service_notify.h"

#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/log_format.h"

namespace vow::agent {

TEST_CASE("the service manager hears READY=1 and the watchdog on its socket") {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  std::string name = "@vow-notify-test-" + std::to_string(::getpid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data() + 1, name.size() - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "20000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  ServiceNotifier notifier;
  // Jobs do not inherit the manager's socket.
  CHECK(std::getenv("NOTIFY_SOCKET") == nullptr);
  CHECK(notifier.enabled());
  CHECK(notifier.watchdog_interval_ms() == 10'000);
  CHECK(notifier.notify("READY=1\nSTATUS=listening"));
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) ==
        "READY=1\nSTATUS=listening");
  notifier.watchdog_tick(1000);
  notifier.watchdog_tick(5000);  // within the interval: not sent again
  notifier.watchdog_tick(11'000);
  for (int i = 0; i < 2; ++i) {
    n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) == "WATCHDOG=1");
  }
  CHECK(::recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0);
  ::close(fd);
}

TEST_CASE("without a service manager nothing is sent") {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ServiceNotifier notifier;
  CHECK_FALSE(notifier.enabled());
  CHECK_FALSE(notifier.notify("READY=1"));
  CHECK(notifier.watchdog_interval_ms() == 0);
}

std::string log_line(LogFormat format, bool journal, spdlog::level::level_enum level,
                     const std::string& text) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  spdlog::logger logger("vowd-a", sink);
  logger.set_formatter(make_log_formatter(format, journal, "3f2a9c1b0e7d"));
  logger.set_level(spdlog::level::trace);
  logger.log(level, "{}", text);
  return out.str();
}

TEST_CASE("log lines: a time with its zone, journald priorities, or JSON") {
  std::string text = log_line(LogFormat::kText, false, spdlog::level::warn, "peer b suspected");
  CHECK(text.find(" warning [vowd-a 3f2a9c1b0e7d] peer b suspected\n") != std::string::npos);
  // 2026-11-25T10:04:05.123456+01:00: the offset from UTC is written.
  CHECK(text.size() > 32);
  CHECK((text[26] == '+' || text[26] == '-'));
  CHECK(text[29] == ':');
  CHECK(log_line(LogFormat::kText, true, spdlog::level::err, "x") ==
        "<3>error [vowd-a 3f2a9c1b0e7d] x\n");
  CHECK(log_line(LogFormat::kText, true, spdlog::level::info, "x").rfind("<6>info ", 0) == 0);
  CHECK(log_line(LogFormat::kText, true, spdlog::level::debug, "x").rfind("<7>", 0) == 0);
  std::string json = log_line(LogFormat::kJson, false, spdlog::level::info, "say \"hi\"\nthere");
  CHECK(json.back() == '\n');
  CHECK(json.find('\n') == json.size() - 1);  // one line
  auto j = nlohmann::json::parse(json);
  CHECK(j["level"] == "info");
  CHECK(j["msg"] == "say \"hi\"\nthere");
  CHECK(j["agent"] == "3f2a9c1b0e7d");
  CHECK(j["logger"] == "vowd-a");
  CHECK(j["time"].get<std::string>().back() == 'Z');
  CHECK_FALSE(parse_log_format("xml").is_ok());
}

}  // namespace vow::agent
