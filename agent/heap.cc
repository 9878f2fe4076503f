#include "agent/heap.h"

#include <limits.h>
#include <unistd.h>

#include <cstdlib>

namespace vow::agent {

const char* const kHeapTunables =
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:"
    "glibc.malloc.trim_threshold=134217728";
const char* const kHeapTunedMark = "VOWD_MALLOC_TUNED";

std::optional<std::string> heap_tunables(const char* given, const char* choice) {
  if (choice != nullptr && std::string(choice) == "default") return std::nullopt;
  const std::string before = given != nullptr ? given : "";
  if (before.find("glibc.malloc.") != std::string::npos) return std::nullopt;
  return before.empty() ? std::string(kHeapTunables) : before + ":" + kHeapTunables;
}

std::optional<std::string> heap_choice_error(const char* choice) {
  if (choice == nullptr) return std::nullopt;
  const std::string c = choice;
  if (c == "default" || c == "tuned") return std::nullopt;
  return "environment variable VOWD_MALLOC='" + c +
         "': expected 'default' (glibc's malloc as it is) or 'tuned' (the default: "
         "docs/agent.md, \"Memory\")";
}

bool restore_environment_after_heap_tuning() {
  const char* mark = std::getenv(kHeapTunedMark);
  if (mark == nullptr) return false;
  if (mark[0] == '=') {
    const std::string value = mark + 1;
    ::setenv("GLIBC_TUNABLES", value.c_str(), 1);
  } else {
    ::unsetenv("GLIBC_TUNABLES");
  }
  ::unsetenv(kHeapTunedMark);
  return true;
}

void run_again_with_heap_tuned(char** argv) {
  const char* given = std::getenv("GLIBC_TUNABLES");
  const bool had = given != nullptr;
  const std::string before = had ? given : "";
  auto tunables = heap_tunables(given, std::getenv("VOWD_MALLOC"));
  if (!tunables) return;
  // Its own path, not /proc/self/exe: the process keeps its name (ps, pgrep, systemd).
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  self[n] = '\0';
  ::setenv(kHeapTunedMark, had ? ("=" + before).c_str() : "-", 1);
  ::setenv("GLIBC_TUNABLES", tunables->c_str(), 1);
  ::execv(self, argv);
  // Not run again (the binary replaced since it started: "... (deleted)"): as it was.
  (void)restore_environment_after_heap_tuning();
}

}  // namespace vow::agent
