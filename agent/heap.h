// The agent's heap (docs/agent.md, "Memory"): vowd runs itself again, once, with glibc's
// malloc tuned for a large in-memory ledger built in bursts (transparent huge pages asked
// for the heap, large blocks kept in it), and puts back the environment it was given.
#pragma once

#include <optional>
#include <string>

namespace vow::agent {

// The tunables vowd runs with: glibc.malloc.hugetlb=1 (madvise huge pages for the heap),
// mmap_threshold 32 MiB and trim_threshold 128 MiB.
extern const char* const kHeapTunables;
// The environment variable that marks the process run again: "-" if GLIBC_TUNABLES was
// unset before, "=VALUE" if it was VALUE.
extern const char* const kHeapTunedMark;

// What GLIBC_TUNABLES to run again with, given its value now (`given`, null if unset) and
// VOWD_MALLOC (`choice`): nullopt to run on as is (VOWD_MALLOC=default, or the caller
// set glibc.malloc tunables of its own).
std::optional<std::string> heap_tunables(const char* given, const char* choice);

// An error naming the variable and the values it takes, if VOWD_MALLOC (`choice`, null if
// unset) is set to anything but "default" or "tuned" (vowd then refuses to start).
std::optional<std::string> heap_choice_error(const char* choice);

// In a process run again (the mark set): puts GLIBC_TUNABLES back as it was given,
// clears the mark, and returns true. Otherwise returns false and changes nothing.
bool restore_environment_after_heap_tuning();

// Runs this program again (execv of its own path, so the same process id and name) with
// the tunables, if heap_tunables() gives any; returns only if it does not, or could not
// (the environment then as it was).
void run_again_with_heap_tuned(char** argv);

}  // namespace vow::agent
