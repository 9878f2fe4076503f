// How vowd writes its log lines (docs/operations.md): on stderr, one line per event,
//   text:    2026-11-25T10:04:05.123456+01:00 info [vowd-a 3f2a9c1b0e7d] message
//   journal: <6>info [vowd-a 3f2a9c1b0e7d] message   (stderr is the journal: the
//            priority prefix sets journald's PRIORITY, journald adds the time)
//   json:    {"time":"2026-11-25T09:04:05.123Z","level":"info","logger":"vowd-a",
//             "agent":"3f2a9c1b0e7d","msg":"message"}
// Thread-compatible: the formatters are owned by the logger's sink.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "promises/status.h"

namespace vow::agent {

enum class LogFormat { kText, kJson };

// "text" or "json"; kInvalid naming the choices.
Result<LogFormat> parse_log_format(const std::string& text);

// Whether stderr is connected to the journal: $JOURNAL_STREAM names its device and
// inode (systemd sets it for services whose output goes to the journal).
bool stderr_is_journal();

// The journald priority (syslog severity) of a level: error 3, warn 4, info 6, debug 7.
int journal_priority(spdlog::level::level_enum level);

// A formatter for the logger: `tag` (the agent's short id; may be empty) names the
// agent on every line; `journal` writes the text form with priority prefixes.
std::unique_ptr<spdlog::formatter> make_log_formatter(LogFormat format, bool journal,
                                                      const std::string& tag);

}  // namespace vow::agent
