#include "agent/running_journal.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "store/test_util.h"

namespace vow::agent {
namespace {

using store::RunningJob;
using store::testing::TempDir;

RunningJob run(std::string_view job, std::uint32_t epoch, std::int64_t pid) {
  return RunningJob{blake2b(job), epoch, pid, "/state/jobs/" + blake2b(job).hex() + "." +
                                                  std::to_string(epoch),
                    1700000000000 + pid};
}

std::vector<RunningJob> read_back(const std::string& path) {
  auto r = RunningJournal::read(path);
  REQUIRE_MESSAGE(r.is_ok(), r.status().to_string());
  return std::move(r).value();
}

}  // namespace

TEST_CASE("running journal: runs noted are read back, the last of each job; settled, none") {
  TempDir dir;
  const std::string path = dir / "running.journal";
  CHECK(read_back(path).empty());  // no file yet
  RunningJournal j(path);
  REQUIRE(j.note(run("a", 1, 100)).is_ok());
  REQUIRE(j.note(run("b", 1, 101)).is_ok());
  REQUIRE(j.note(run("a", 2, 102)).is_ok());  // a later run of a
  auto noted = read_back(path);
  REQUIRE(noted.size() == 2);
  CHECK(noted[0] == run("a", 2, 102));
  CHECK(noted[1] == run("b", 1, 101));

  // Settled: what is in the file no longer counts, though its bytes are still there.
  j.settle();
  CHECK(read_back(path).empty());
  CHECK(j.noted_bytes() == 0);
  // A shorter run noted over the start: the earlier lines after it are not read (one of
  // them would read as whole if the lines were not checked and numbered).
  RunningJob shorter{blake2b("c"), 1, 7, "/w", 1};
  REQUIRE(j.note(shorter).is_ok());
  noted = read_back(path);
  REQUIRE(noted.size() == 1);
  CHECK(noted[0] == shorter);
  j.settle();
  j.settle();  // nothing noted since: nothing to do
  CHECK(read_back(path).empty());
  REQUIRE(j.note(run("d", 3, 9)).is_ok());
  REQUIRE(j.note(run("e", 1, 10)).is_ok());
  noted = read_back(path);
  REQUIRE(noted.size() == 2);
  CHECK(noted[1] == run("e", 1, 10));
}

TEST_CASE("running journal: a line cut short or changed ends what is read") {
  TempDir dir;
  const std::string path = dir / "running.journal";
  {
    RunningJournal j(path);
    REQUIRE(j.note(run("a", 1, 100)).is_ok());
    REQUIRE(j.note(run("b", 1, 101)).is_ok());
  }
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto first_end = text.find('\n') + 1;
  // The second line without its newline: not whole, not read.
  std::ofstream(path, std::ios::trunc) << text.substr(0, text.size() - 1);
  CHECK(read_back(path).size() == 1);
  // The first line's pid changed: its check fails, and nothing after it is read.
  std::string changed = text;
  changed.replace(changed.find(" 100 "), 5, " 900 ");
  std::ofstream(path, std::ios::trunc) << changed;
  CHECK(read_back(path).empty());
  // A second line of another generation: not read.
  std::string other = text.substr(0, first_end) + "2" + text.substr(first_end + 1);
  std::ofstream(path, std::ios::trunc) << other;
  CHECK(read_back(path).size() == 1);
}

TEST_CASE("running journal: a restart takes over the runs noted that have no row, or a later one") {
  std::vector<RunningJob> rows{run("a", 1, 100), run("b", 1, 101)};
  std::vector<RunningJob> added;
  auto merged = merge_noted_runs(rows, {run("a", 1, 100), run("b", 2, 105), run("c", 1, 106)},
                                 &added);
  REQUIRE(merged.size() == 3);
  CHECK(merged[0] == run("a", 1, 100));  // its row committed: as it was
  CHECK(merged[1] == run("b", 2, 105));  // a later run than the row's
  CHECK(merged[2] == run("c", 1, 106));  // no row: the crash came before its commit
  CHECK(added == std::vector<RunningJob>{run("b", 2, 105), run("c", 1, 106)});
}

}  // namespace vow::agent
