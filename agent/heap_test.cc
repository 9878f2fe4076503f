#include "agent/heap.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

namespace vow::agent {

TEST_CASE("heap: the tunables vowd runs again with") {
  CHECK(heap_tunables(nullptr, nullptr) == std::string(kHeapTunables));
  // The caller's tunables stay, ours after them.
  CHECK(heap_tunables("glibc.rtld.nns=4", nullptr) ==
        "glibc.rtld.nns=4:" + std::string(kHeapTunables));
  CHECK(heap_tunables("", nullptr) == std::string(kHeapTunables));
  // Its own malloc tunables, or VOWD_MALLOC=default: not run again.
  CHECK_FALSE(heap_tunables("glibc.malloc.arena_max=2", nullptr).has_value());
  CHECK_FALSE(heap_tunables(nullptr, "default").has_value());
  CHECK(heap_tunables(nullptr, "tuned").has_value());
}

TEST_CASE("heap: VOWD_MALLOC takes default or tuned, and names itself otherwise") {
  CHECK_FALSE(heap_choice_error(nullptr).has_value());
  CHECK_FALSE(heap_choice_error("default").has_value());
  CHECK_FALSE(heap_choice_error("tuned").has_value());
  auto bad = heap_choice_error("off");
  REQUIRE(bad.has_value());
  CHECK(bad->find("VOWD_MALLOC='off'") != std::string::npos);
  CHECK(bad->find("'default'") != std::string::npos);
}

TEST_CASE("heap: a process run again puts back the environment it was given") {
  // Not run again: nothing changes.
  ::unsetenv(kHeapTunedMark);
  ::setenv("GLIBC_TUNABLES", "x=1", 1);
  CHECK_FALSE(restore_environment_after_heap_tuning());
  CHECK(std::string(std::getenv("GLIBC_TUNABLES")) == "x=1");
  // Run again, GLIBC_TUNABLES unset before.
  ::setenv(kHeapTunedMark, "-", 1);
  ::setenv("GLIBC_TUNABLES", kHeapTunables, 1);
  CHECK(restore_environment_after_heap_tuning());
  CHECK(std::getenv("GLIBC_TUNABLES") == nullptr);
  CHECK(std::getenv(kHeapTunedMark) == nullptr);
  // Run again, GLIBC_TUNABLES set before.
  ::setenv(kHeapTunedMark, "=glibc.rtld.nns=4", 1);
  ::setenv("GLIBC_TUNABLES", ("glibc.rtld.nns=4:" + std::string(kHeapTunables)).c_str(), 1);
  CHECK(restore_environment_after_heap_tuning());
  CHECK(std::string(std::getenv("GLIBC_TUNABLES")) == "glibc.rtld.nns=4");
  CHECK(std::getenv(kHeapTunedMark) == nullptr);
  ::unsetenv("GLIBC_TUNABLES");
}

}  // namespace vow::agent
