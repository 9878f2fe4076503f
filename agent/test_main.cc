#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <string_view>

#include "agent/job_host.h"

int main(int argc, char** argv) {
  // The tests of the job host start this program as one, as vowd starts itself.
  if (argc == 2 && std::string_view(argv[1]) == "job-host") return vow::agent::run_job_host(3);
  return doctest::Context(argc, argv).run();
}
