#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <string_view>

#include "agent/job_host.h"

int main(int argc, char** argv) {
  // The tests of the job host start this program as one, as vowd starts itself.
  if (auto host = vow::agent::job_host_main(argc, argv)) return *host;
  return doctest::Context(argc, argv).run();
}
