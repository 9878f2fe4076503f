#include "agent/log_format.h"

#include <spdlog/pattern_formatter.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

namespace vow::agent {
namespace {

// %P in a pattern: "<N>", N the line's journald priority.
class PriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string p = "<" + std::to_string(journal_priority(msg.level)) + ">";
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<PriorityFlag>();
  }
};

class JsonFormatter : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string tag) : tag_(std::move(tag)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto since = msg.time.time_since_epoch();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char stamp[40];
    std::size_t n = std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(stamp + n, sizeof(stamp) - n, ".%03lldZ", static_cast<long long>(ms % 1000));
    auto level = spdlog::level::to_string_view(msg.level);
    nlohmann::json line = {{"time", stamp},
                           {"level", std::string(level.data(), level.size())},
                           {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
                           {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    if (!tag_.empty()) line["agent"] = tag_;
    // A message is not always valid UTF-8 (a file name): replace what is not.
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text += '\n';
    dest.append(text.data(), text.data() + text.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(tag_);
  }

 private:
  std::string tag_;
};

}  // namespace

Result<LogFormat> parse_log_format(const std::string& text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return Status::invalid("bad log format '" + text + "': use text or json");
}

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat sb {};
  if (::fstat(STDERR_FILENO, &sb) != 0) return false;
  return static_cast<unsigned long long>(sb.st_dev) == dev &&
         static_cast<unsigned long long>(sb.st_ino) == ino;
}

int journal_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
      return 2;
    case spdlog::level::err:
      return 3;
    case spdlog::level::warn:
      return 4;
    case spdlog::level::info:
      return 6;
    default:
      return 7;
  }
}

std::unique_ptr<spdlog::formatter> make_log_formatter(LogFormat format, bool journal,
                                                      const std::string& tag) {
  if (format == LogFormat::kJson) return std::make_unique<JsonFormatter>(tag);
  std::string who = "[%n" + (tag.empty() ? std::string() : " " + tag) + "] %v";
  auto f = std::make_unique<spdlog::pattern_formatter>();
  if (journal) {
    f->add_flag<PriorityFlag>('P').set_pattern("%P%l " + who);
  } else {
    f->set_pattern("%Y-%m-%dT%H:%M:%S.%f%z %^%l%$ " + who);
  }
  return f;
}

}  // namespace vow::agent
