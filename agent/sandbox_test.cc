#include "agent/sandbox.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/local_effects.h"
#include "agent/output_check.h"
#include "agent/process.h"
#include "agent/process_test_util.h"
#include "store/artifact_store.h"
#include "store/sqlite_ledger.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

using testing::slurp;
using testing::wait_exit;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vow-sandbox-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A job's layout under a state directory, as the agent makes it.
struct Job {
  TempDir dir;
  std::string state;
  JobLayout layout;
  Job() {
    state = (dir.path / "state").string();
    layout = job_layout(state, Digest{}, 1);
    fs::create_directories(layout.in_dir);
    fs::create_directories(layout.out_dir);
    write(fs::path(state) / "identity", "secret key\n");
  }
  SpawnSpec spec(const promises::Stage& stage, const std::string& bwrap) const {
    SpawnSpec s;
    s.argv = sandboxed_argv(bwrap, state, layout, stage);
    s.env = {"PATH=/usr/bin:/bin", "STATE=" + state, "OUT=" + layout.out_dir};
    s.cwd = layout.work_dir;
    s.stdout_path = layout.stdout_path;
    s.stderr_path = layout.stderr_path;
    s.status_path = layout.status_path;
    return s;
  }
};

// The bubblewrap jobs would run under here, or "" (the test is skipped, saying why).
std::string working_bwrap() {
  std::string bwrap = find_bwrap();
  Status works = probe_bwrap(bwrap);
  if (works.is_ok()) return bwrap;
  MESSAGE("skipped: " << works.to_string());
  return "";
}

promises::Stage shell(const std::string& command) {
  promises::Stage s;
  s.argv = {"/bin/sh", "-c", command};
  s.run_is_shell = true;
  return s;
}

}  // namespace

TEST_CASE("the sandbox's command line: network only when asked, limits before the command") {
  Job job;
  promises::Stage s = shell("true");
  auto argv = sandboxed_argv("/usr/bin/bwrap", job.state, job.layout, s);
  CHECK(argv.front() == "/usr/bin/bwrap");
  CHECK(has(argv, "--unshare-net"));
  CHECK(has(argv, "--die-with-parent"));
  CHECK_FALSE(has(argv, "--new-session"));  // the job stays in the supervisor's group
  CHECK(std::vector<std::string>(argv.end() - 3, argv.end()) == s.argv);
  s.network = true;
  CHECK_FALSE(has(sandboxed_argv("/usr/bin/bwrap", job.state, job.layout, s), "--unshare-net"));
  s.memory_bytes = 64 << 20;
  auto limited = sandboxed_argv("", job.state, job.layout, s);
  CHECK(limited.front() == "/bin/sh");
  CHECK(has(limited, "65536"));  // KiB
  CHECK(std::vector<std::string>(limited.end() - 3, limited.end()) == s.argv);
  CHECK(sandboxed_argv("", job.state, job.layout, shell("true")) == shell("true").argv);
  CHECK(format_bytes(64 << 20) == "64 MiB");
  CHECK(format_bytes(std::int64_t{3} << 30) == "3 GiB");
}

TEST_CASE("refused outputs: hard links and files of another owner, named") {
  TempDir dir;
  fs::path out = dir.path / "out";
  fs::create_directories(out / "tree" / "sub");
  write(out / "plain", "x");
  write(out / "tree" / "sub" / "f", "y");
  uid_t me = ::geteuid();
  CHECK(refused_output(out.string(), {"plain", "tree", "missing"}, me).empty());
  write(dir.path / "elsewhere", "secret");
  fs::create_hard_link(dir.path / "elsewhere", out / "tree" / "sub" / "g");
  std::string why = refused_output(out.string(), {"plain", "tree"}, me);
  CHECK(why == "output 'tree' refused: out/tree/sub/g is a hard link (2 names for one file): "
               "an output must be a file the job wrote");
  fs::remove(out / "tree" / "sub" / "g");
  CHECK(refused_output(out.string(), {"tree"}, me).empty());
  // Owned by the job's uid is what counts: the same files, for another uid, are refused.
  why = refused_output(out.string(), {"plain"}, me + 1);
  CHECK(why.find("output 'plain' refused: out/plain is owned by uid " + std::to_string(me) +
                 ", not by the job's uid " + std::to_string(me + 1)) == 0);
}

TEST_CASE("refused outputs: an output the store already took by a link is the job's own") {
  // The agent stopped after collecting a run (the store took out/o by a hard link and
  // renamed it into place) but before emptying its work directory: after the restart
  // the run is collected again, and out/o has two names, one of them the store's.
  TempDir dir;
  auto ledger = store::open_sqlite_ledger(store::ledger_path(dir.path.string()));
  REQUIRE(ledger.is_ok());
  auto st = store::ArtifactStore::open(store::artifacts_root(dir.path.string()), **ledger);
  REQUIRE(st.is_ok());
  store::ArtifactStore& artifacts = **st;
  fs::path out = dir.path / "out";
  fs::create_directories(out);
  write(out / "o", "the job's bytes");
  std::vector<store::ArtifactRecord> rows;
  Status taken = artifacts.import_together(
      [&]() { return artifacts.take_file((out / "o").string()).status(); }, &rows);
  REQUIRE_MESSAGE(taken.is_ok(), taken.to_string());
  REQUIRE(fs::hard_link_count(out / "o") == 2);
  auto ours = [&](const std::string& path) {
    auto r = artifacts.is_object(path);
    return r.is_ok() && *r;
  };
  uid_t me = ::geteuid();
  CHECK(refused_output(out.string(), {"o"}, me, ours).empty());
  // Without asking the store, the second name is refused, as any hard link is.
  CHECK(refused_output(out.string(), {"o"}, me).find("is a hard link (2 names") !=
        std::string::npos);
  // A link to a file that is no object of the store is still refused.
  write(dir.path / "elsewhere", "secret");
  fs::create_hard_link(dir.path / "elsewhere", out / "p");
  CHECK(refused_output(out.string(), {"p"}, me, ours).find("out/p is a hard link (2 names") !=
        std::string::npos);
  // Nor is a third name on the store's object: only the store's own second name passes.
  fs::create_hard_link(out / "o", dir.path / "third");
  CHECK(refused_output(out.string(), {"o"}, me, ours).find("is a hard link (3 names") !=
        std::string::npos);
}

TEST_CASE("a job in the sandbox: hidden state, read-only inputs, exit status, kill by group") {
  const std::string bwrap = working_bwrap();
  if (bwrap.empty()) return;
  Job job;
  write(job.layout.input_path("x"), "input\n");
  auto p = JobProcess::spawn(job.spec(
      shell("cat \"$STATE/identity\" > /dev/null 2>&1 && echo identity >> \"$OUT/seen\"; "
            "echo more >> in/x 2>/dev/null && echo input >> \"$OUT/seen\"; "
            "echo ok >> \"$OUT/seen\"; exit 3"),
      bwrap));
  REQUIRE_MESSAGE(p.is_ok(), p.status().to_string());
  ExitStatus e = wait_exit(*p);
  CHECK(e.exit_status == 3);
  CHECK_FALSE(e.signaled);
  CHECK(slurp(job.layout.output_path("seen")) == "ok\n");
  CHECK(slurp(job.layout.input_path("x")) == "input\n");

  // A kill of the supervisor's group reaches the command inside the sandbox.
  fs::remove(job.layout.status_path);
  auto q = JobProcess::spawn(job.spec(shell("sleep 60 & echo started > \"$OUT/started\"; wait"),
                                      bwrap));
  REQUIRE(q.is_ok());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!fs::exists(job.layout.output_path("started")) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(fs::exists(job.layout.output_path("started")));
  pid_t group = q->pid();
  q->kill_group(SIGKILL);
  ExitStatus k = wait_exit(*q);
  CHECK(k.signaled);
  // Nothing of the group is left (bwrap and its children included).
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::kill(-group, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(::kill(-group, 0) != 0);
}

TEST_CASE("bwrap as the job's supervisor: no shell, its exit status on disk, adopted by pid") {
  const std::string bwrap = working_bwrap();
  if (bwrap.empty()) return;
  Job job;
  const std::string gate = job.layout.work_dir + "/gate";
  SpawnSpec spec = job.spec(shell("while [ ! -e gate ]; do sleep 0.02; done; exit 4"), bwrap);
  spec.argv = sandboxed_argv(bwrap, job.state, job.layout,
                             shell("while [ ! -e gate ]; do sleep 0.02; done; exit 4"), {},
                             nullptr, /*bwrap_supervises=*/true);
  CHECK_FALSE(has(spec.argv, "--die-with-parent"));  // vowd's restart leaves it running
  CHECK(has(spec.argv, "--json-status-fd"));
  spec.bwrap_supervises = true;
  auto p = JobProcess::spawn(spec);
  REQUIRE_MESSAGE(p.is_ok(), p.status().to_string());
  // The process vowd started is bwrap itself, not a supervisor shell.
  std::string exe = fs::read_symlink("/proc/" + std::to_string(p->pid()) + "/exe").string();
  CHECK(exe == fs::canonical(bwrap).string());
  // A restarted agent finds it by pid (and only as the job of its own status file), even
  // at once: while bwrap sets up the sandbox its /proc/PID/cmdline reads empty.
  CHECK(JobProcess::adopt(p->pid(), (fs::path(job.state) / "other" / "status").string())
            .status()
            .code() == StatusCode::kNotFound);
  auto adopted = JobProcess::adopt(p->pid(), job.layout.status_path);
  REQUIRE_MESSAGE(adopted.is_ok(), adopted.status().to_string());
  write(gate, "");
  CHECK(wait_exit(*adopted).exit_status == 4);
  CHECK(wait_exit(*p).exit_status == 4);
  // The status stays for an agent that was down when the job ended.
  auto st = read_status_file(job.layout.status_path);
  REQUIRE(st.is_ok());
  REQUIRE(st->has_value());
  CHECK((*st)->exit_status == 4);
  // A command bwrap cannot start: its exit status (1), not a kill.
  fs::remove(job.layout.status_path);
  promises::Stage missing;
  missing.argv = {"/nonexistent/command"};
  SpawnSpec m = job.spec(missing, bwrap);
  m.argv = sandboxed_argv(bwrap, job.state, job.layout, missing, {}, nullptr, true);
  m.bwrap_supervises = true;
  auto q = JobProcess::spawn(m);
  REQUIRE(q.is_ok());
  ExitStatus e = wait_exit(*q);
  CHECK_FALSE(e.signaled);
  CHECK(e.exit_status == 1);
}

promises::StartJob run_of(std::uint8_t id) {
  promises::StartJob s;
  s.job.job.bytes[0] = id;
  s.epoch = 1;
  return s;
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_ino;
}

TEST_CASE("fresh spare work directories are made ahead, for bare runs too") {
  TempDir dir;
  const std::string state = (dir.path / "state").string();
  fs::create_directories(state + "/jobs");
  LocalExecutor ex(state, nullptr, "");
  ex.keep_spares();
  CHECK(ex.spare_work_dirs() == 0);  // none before a job made its directory here
  REQUIRE(ex.create_work_dir(run_of(1)).is_ok());
  for (int i = 0; i < 5; ++i) ex.keep_spares();  // one a call, up to kFreshSpares
  CHECK(ex.spare_work_dirs() == LocalExecutor::kFreshSpares);
  const auto b = run_of(2);
  REQUIRE(ex.create_work_dir(b).is_ok());
  CHECK(ex.spare_work_dirs() == LocalExecutor::kFreshSpares - 1);
  // What the job finds is what it would have found made on its way: empty in/ and out/,
  // empty logs (which the job host truncates if they are not), no status.
  const JobLayout lb = job_layout(state, b.job.job, b.epoch);
  CHECK(fs::is_empty(lb.in_dir));
  CHECK(fs::is_empty(lb.out_dir));
  CHECK(fs::file_size(lb.stdout_path) == 0);
  CHECK(fs::file_size(lb.stderr_path) == 0);
  CHECK_FALSE(fs::exists(lb.status_path));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(lb.work_dir)) entries += e.exists() ? 1 : 0;
  CHECK(entries == 4);
  // A restarted agent removes them rather than trust them.
  LocalExecutor again(state, nullptr, "");
  REQUIRE(again.create_work_dir(run_of(3)).is_ok());
  int spares = 0;
  for (const auto& e : fs::directory_iterator(state + "/jobs")) {
    spares += e.path().filename().string().rfind(".spare-", 0) == 0;
  }
  CHECK(spares == 0);
}

TEST_CASE("a bare run's work directory serves the next only if nothing it started outlived it") {
  TempDir dir;
  const std::string state = (dir.path / "state").string();
  fs::create_directories(state + "/jobs");
  // Bare runs from a job host (this test program is one, as vowd is).
  LocalExecutor ex(state, nullptr, "", {}, "/proc/self/exe");
  auto run = [&](std::uint8_t id, std::string script) {
    promises::StartJob s = run_of(id);
    s.stage.argv = {"/bin/sh", "-c", std::move(script)};
    s.stage.run_is_shell = true;
    REQUIRE(ex.create_work_dir(s).is_ok());
    auto pid = ex.spawn(s);
    REQUIRE_MESSAGE(pid.is_ok(), pid.status().to_string());
    for (int i = 0; i < 3000; ++i) {
      auto ended = ex.reap(nullptr);
      if (!ended.empty()) {
        CHECK(ended[0].first == s.job.job);
        break;
      }
      ::usleep(2000);
    }
    return s;
  };
  const auto a = run(1, "echo a > \"$VOW_WORKDIR/out/x\"");
  const std::size_t spares = ex.spare_work_dirs();
  ex.remove_work_dir(a);
  CHECK_FALSE(fs::exists(job_layout(state, a.job.job, a.epoch).work_dir));
  CHECK(ex.spare_work_dirs() == spares + 1);  // emptied, kept for the next run
  // One that leaves a process running in its directory: removed, not handed on (the
  // process would write into the next run's).
  const auto b = run(2, "sleep 30 & echo $! > \"$VOW_WORKDIR/sleeper\"");
  const JobLayout lb = job_layout(state, b.job.job, b.epoch);
  const pid_t sleeper = static_cast<pid_t>(std::stol(slurp(lb.work_dir + "/sleeper")));
  const std::size_t before = ex.spare_work_dirs();  // b's start took a's directory
  ex.remove_work_dir(b);
  CHECK_FALSE(fs::exists(lb.work_dir));
  CHECK(ex.spare_work_dirs() == before);
  ::kill(sleeper, SIGKILL);
}

TEST_CASE("a sandboxed run's work directory is emptied and renamed into place for the next") {
  TempDir dir;
  const std::string state = (dir.path / "state").string();
  fs::create_directories(state + "/jobs");
  LocalExecutor ex(state, nullptr, "/usr/bin/bwrap");
  const auto a = run_of(1);
  REQUIRE(ex.create_work_dir(a).is_ok());
  const JobLayout la = job_layout(state, a.job.job, a.epoch);
  write(la.input_path("x"), "input\n");
  fs::permissions(la.input_path("x"), fs::perms::owner_read);
  fs::permissions(la.in_dir, fs::perms::owner_read | fs::perms::owner_exec);
  fs::create_directories(la.output_path("tree/deep"));
  write(la.output_path("o"), "output\n");
  write(la.stdout_path, "a's log\n");
  write(la.stderr_path, "");
  write(la.status_path, "exit 0\n");
  write(la.work_dir + "/scratch", "left by the run\n");
  // Directories the run made read-only, in `out` and beside it, go too.
  fs::create_directories(la.output_path("tree/deep"));
  write(la.output_path("tree/deep/f"), "deep\n");
  fs::permissions(la.output_path("tree/deep"), fs::perms::owner_read | fs::perms::owner_exec);
  fs::permissions(la.output_path("tree"), fs::perms::owner_read | fs::perms::owner_exec);
  fs::create_directories(la.work_dir + "/tmp");
  write(la.work_dir + "/tmp/t", "temporary\n");
  fs::permissions(la.work_dir + "/tmp", fs::perms::owner_read | fs::perms::owner_exec);
  const ino_t dir_inode = inode_of(la.work_dir);
  const ino_t log_inode = inode_of(la.stdout_path);
  ex.remove_work_dir(a);
  CHECK_FALSE(fs::exists(la.work_dir));
  CHECK(ex.spare_work_dirs() == 1);

  const auto b = run_of(2);
  REQUIRE(ex.create_work_dir(b).is_ok());
  const JobLayout lb = job_layout(state, b.job.job, b.epoch);
  CHECK(ex.spare_work_dirs() == 0);
  CHECK(inode_of(lb.work_dir) == dir_inode);  // the same directory, and the same log file
  CHECK(inode_of(lb.stdout_path) == log_inode);
  CHECK(fs::is_empty(lb.in_dir));
  CHECK(fs::is_empty(lb.out_dir));
  CHECK_FALSE(fs::exists(lb.work_dir + "/scratch"));
  CHECK_FALSE(fs::exists(lb.work_dir + "/tmp"));
  CHECK(fs::file_size(lb.stdout_path) == 0);
  auto st = read_status_file(lb.status_path);  // an empty status is no status
  REQUIRE(st.is_ok());
  CHECK_FALSE(st->has_value());

  // A log the run replaced by a symlink is not kept: the next run's output would be
  // written through it.
  write(dir.path / "elsewhere", "precious\n");
  fs::remove(lb.stderr_path);
  fs::create_symlink(dir.path / "elsewhere", lb.stderr_path);
  ex.remove_work_dir(b);
  const auto c = run_of(3);
  REQUIRE(ex.create_work_dir(c).is_ok());
  const JobLayout lc = job_layout(state, c.job.job, c.epoch);
  CHECK_FALSE(fs::exists(fs::symlink_status(lc.stderr_path)));
  CHECK(slurp((dir.path / "elsewhere").string()) == "precious\n");

  // An `out` the run replaced by a symlink to a directory is not followed: what it
  // points to stays, and the directory is not kept.
  const auto c2 = run_of(6);
  REQUIRE(ex.create_work_dir(c2).is_ok());
  const JobLayout lc2 = job_layout(state, c2.job.job, c2.epoch);
  fs::create_directories(dir.path / "outside");
  write(dir.path / "outside" / "keep", "kept\n");
  fs::remove_all(lc2.out_dir);
  fs::create_directory_symlink(dir.path / "outside", lc2.out_dir);
  const std::size_t spares_before = ex.spare_work_dirs();
  ex.remove_work_dir(c2);
  CHECK(ex.spare_work_dirs() == spares_before);
  CHECK_FALSE(fs::exists(fs::symlink_status(lc2.work_dir)));
  CHECK(slurp((dir.path / "outside" / "keep").string()) == "kept\n");

  // A restarted agent removes the spares an earlier one left, rather than trust them.
  ex.remove_work_dir(c);
  REQUIRE(ex.spare_work_dirs() == 1);
  LocalExecutor again(state, nullptr, "/usr/bin/bwrap");
  REQUIRE(again.create_work_dir(run_of(4)).is_ok());
  int spares = 0;
  for (const auto& e : fs::directory_iterator(state + "/jobs")) {
    spares += e.path().filename().string().rfind(".spare-", 0) == 0;
  }
  CHECK(spares == 0);

  // Bare runs' directories are not kept: a process such a run left could still write
  // into the next run's.
  LocalExecutor bare(state, nullptr, "");
  const auto d = run_of(5);
  REQUIRE(bare.create_work_dir(d).is_ok());
  bare.remove_work_dir(d);
  CHECK(bare.spare_work_dirs() == 0);
  CHECK_FALSE(fs::exists(job_layout(state, d.job.job, d.epoch).work_dir));
}

TEST_CASE("limits on the command line: ulimit for memory and pids, taskset for cpus") {
  Job job;
  promises::Stage s = shell("true");
  s.pids = 16;
  auto argv = sandboxed_argv("", job.state, job.layout, s, {0, 1, 2, 3});
  REQUIRE(argv.size() >= 6);
  CHECK(argv[0] == "/bin/sh");
  CHECK(argv[4] == "-");   // no memory limit
  CHECK(argv[5] == "16");  // processes
  s.cpus = 2;
  argv = sandboxed_argv("", job.state, job.layout, s, {0, 1, 2, 3});
  CHECK(argv[0] == "taskset");
  CHECK(argv[2].size() == 3);  // two CPUs of four, "a,b"
  // As many CPUs as the agent has, or more: no affinity to set.
  CHECK(sandboxed_argv("", job.state, job.layout, s, {0, 1})[0] == "/bin/sh");
  CHECK(cpu_list(0, 2, {0, 1, 2, 3}) == "0,1");
  CHECK(cpu_list(3, 2, {0, 1, 2, 3}) == "0,3");
  CHECK(cpu_list(5, 8, {4, 6}) == "4,6");
  CHECK(limits_note(shell("true")).empty());
  s.memory_bytes = 64 << 20;
  CHECK(limits_note(s) ==
        " (the stage's memory limit is 64 MiB: memory past it cannot be allocated; the "
        "stage's pids limit is 16: a process past it cannot be started)");
}

// How many processes (threads included) a uid has on this host: what RLIMIT_NPROC counts.
int processes_of(uid_t uid) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "status");
    std::string line;
    uid_t real = 0;
    int threads = 0;
    bool found = false;
    while (std::getline(in, line)) {
      if (line.rfind("Uid:", 0) == 0) {
        real = static_cast<uid_t>(std::stoul(line.substr(4)));
        found = true;
      }
      if (line.rfind("Threads:", 0) == 0) threads = std::stoi(line.substr(8));
    }
    if (found && real == uid) n += threads;
  }
  return n;
}

TEST_CASE("a job over its pids limit cannot start more processes; one under it can") {
  // RLIMIT_NPROC does not bind root: as root the job runs as nobody (setpriv), which
  // the limit does bind.
  Job job;
  std::vector<std::string> prefix;
  uid_t uid = ::geteuid();
  if (uid == 0) {
    if (::access("/usr/bin/setpriv", X_OK) != 0) {
      MESSAGE("skipped: running as root, and no setpriv to run the job as another uid");
      return;
    }
    uid = 65534;
    prefix = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  }
  auto run = [&](int pids) {
    fs::remove(job.layout.status_path);
    promises::Stage s = shell("i=0; while [ $i -lt 6 ]; do sleep 1 & i=$((i+1)); done; wait");
    s.pids = processes_of(uid) + pids;
    SpawnSpec spec = job.spec(s, "");
    spec.argv.insert(spec.argv.begin(), prefix.begin(), prefix.end());
    auto p = JobProcess::spawn(spec);
    REQUIRE_MESSAGE(p.is_ok(), p.status().to_string());
    return wait_exit(*p);
  };
  ExitStatus over = run(3);  // the shell and two sleeps
  CHECK_FALSE(over.ok());
  CHECK(slurp(job.layout.stderr_path).find("fork") != std::string::npos);
  ExitStatus under = run(12);
  CHECK_MESSAGE(under.ok(), slurp(job.layout.stderr_path));
}

TEST_CASE("a job of a stage with cpus runs on that many of the agent's CPUs") {
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2 || ::access("/usr/bin/taskset", X_OK) != 0) {
    MESSAGE("skipped: this host lets the agent use " << cpus.size()
                                                     << " CPU(s), or has no taskset");
    return;
  }
  Job job;
  promises::Stage s = shell("grep Cpus_allowed_list /proc/self/status > \"$OUT/cpus\"");
  s.cpus = 1;
  SpawnSpec spec = job.spec(s, "");
  spec.argv = sandboxed_argv("", job.state, job.layout, s, cpus);
  auto p = JobProcess::spawn(spec);
  REQUIRE(p.is_ok());
  CHECK(wait_exit(*p).ok());
  std::string seen = slurp(job.layout.output_path("cpus"));
  std::string list = seen.substr(seen.find(':') + 1);
  list.erase(0, list.find_first_not_of(" \t"));
  CHECK(list == cpu_list(std::hash<std::string>{}(job.layout.work_dir), 1, cpus) + "\n");
}


TEST_CASE("a job in a root: its entries on bwrap's own /, the limits before bwrap") {
  Job job;
  promises::Stage s = shell("true");
  s.root = promises::InputRef{"", "rootfs"};
  s.pids = 16;
  JobRoot root;
  root.dir = job.layout.input_path("rootfs");
  root.entries = {"bin", "dev", "etc", "lib"};
  auto argv = sandboxed_argv("/usr/bin/bwrap", job.state, job.layout, s, {}, &root);
  // The limit wrapper runs on the host's /bin/sh, before bwrap; bwrap's own two
  // processes count against the rlimit.
  CHECK(argv.front() == "/bin/sh");
  CHECK(has(argv, "18"));
  auto bwrap = std::find(argv.begin(), argv.end(), "/usr/bin/bwrap");
  REQUIRE(bwrap != argv.end());
  std::vector<std::string> options(bwrap, argv.end());
  auto bound = [&](const std::string& from, const std::string& to) {
    for (std::size_t i = 0; i + 2 < options.size(); ++i) {
      if (options[i] == "--ro-bind" && options[i + 1] == from && options[i + 2] == to) {
        return true;
      }
    }
    return false;
  };
  CHECK_FALSE(bound("/", "/"));  // not the host's files
  CHECK(bound(root.dir + "/bin", "/bin"));
  CHECK(bound(root.dir + "/etc", "/etc"));
  CHECK_FALSE(bound(root.dir + "/dev", "/dev"));  // the sandbox's own /dev
  CHECK(bound(job.layout.in_dir, job.layout.in_dir));
  CHECK(has(options, "--remount-ro"));
  CHECK_FALSE(has(options, job.state));  // nothing of the state directory to hide
  CHECK(std::vector<std::string>(argv.end() - 3, argv.end()) == s.argv);
  // Without bwrap there is no root to make: the agent refuses such a job before this.
  CHECK(sandboxed_argv("", job.state, job.layout, shell("true"), {}, &root) ==
        shell("true").argv);
}

TEST_CASE("a job's root: a directory holding the command's program") {
  Job job;
  promises::Stage s = shell("true");
  s.root = promises::InputRef{"", "rootfs"};
  fs::path root = job.layout.input_path("rootfs");
  write(root, "a file");
  auto made = job_root(job.layout, s, "/usr/bin:/bin");
  REQUIRE_FALSE(made.is_ok());
  CHECK(made.status().message().find("the stage's root 'rootfs' is not a directory") !=
        std::string::npos);

  fs::remove(root);
  fs::create_directories(root / "bin");
  fs::create_directories(root / "etc");
  made = job_root(job.layout, s, "/usr/bin:/bin");
  REQUIRE_FALSE(made.is_ok());
  CHECK(made.status().message() ==
        "the stage's root 'rootfs' has no executable /bin/sh, the command's program: a root "
        "must hold what its command runs (docs/sandbox.md)");
  write(root / "bin" / "sh", "#!");
  CHECK_FALSE(job_root(job.layout, s, "/usr/bin:/bin").is_ok());  // not executable
  fs::permissions(root / "bin" / "sh", fs::perms::owner_all);
  made = job_root(job.layout, s, "/usr/bin:/bin");
  REQUIRE_MESSAGE(made.is_ok(), made.status().to_string());
  CHECK(made->dir == root.string());
  CHECK(made->entries == std::vector<std::string>{"bin", "etc"});

  // A program without a slash is looked up in the job's PATH, inside the root.
  s.argv = {"sh", "-c", "true"};
  CHECK(job_root(job.layout, s, "/usr/bin:/bin").is_ok());
  made = job_root(job.layout, s, "/usr/bin");
  REQUIRE_FALSE(made.is_ok());
  CHECK(made.status().message().find("has no executable sh in /usr/bin") != std::string::npos);
}

TEST_CASE("a job's root that has the directories its work directory is under") {
  // State under /var/tmp, a root with /var/tmp: bwrap cannot make the work directory's
  // mount point in the root's read-only /var/tmp, so a tmpfs goes over it.
  std::string tmpl = "/var/tmp/vow-root-XXXXXX";
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const fs::path base = tmpl;
  JobLayout layout = job_layout((base / "state").string(), Digest{}, 1);
  fs::path root = layout.input_path("rootfs");
  fs::create_directories(root / "bin");
  fs::create_directories(root / "var" / "tmp" / "kept");
  fs::create_directories(layout.out_dir);
  write(root / "bin" / "sh", "");
  fs::permissions(root / "bin" / "sh", fs::perms::owner_all);
  promises::Stage s = shell("true");
  s.root = promises::InputRef{"", "rootfs"};
  auto made = job_root(layout, s, "/bin");
  REQUIRE_MESSAGE(made.is_ok(), made.status().to_string());
  CHECK(made->shadowed == "/var/tmp");
  CHECK(made->shadowed_entries == std::vector<std::string>{"kept"});
  auto argv = sandboxed_argv("/usr/bin/bwrap", (base / "state").string(), layout, s, {}, &*made);
  CHECK(has(argv, "/var/tmp/kept"));
  std::string bwrap = find_bwrap();
  if (probe_bwrap(bwrap).is_ok()) {
    // The job runs, sees the root's /var/tmp/kept, and writes its work directory.
    argv = sandboxed_argv(bwrap, (base / "state").string(), layout,
                          shell("test -d /var/tmp/kept && echo ran > out/x"), {}, &*made);
    argv.erase(std::find(argv.begin(), argv.end(), "--") + 1, argv.end());
    argv.insert(argv.end(), {"/bin/sh", "-c", "test -d /var/tmp/kept && echo ran > out/x"});
    SpawnSpec spec;
    spec.argv = argv;
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.cwd = layout.work_dir;
    spec.stdout_path = layout.stdout_path;
    spec.stderr_path = layout.stderr_path;
    spec.status_path = layout.status_path;
    // The root's /bin/sh is a stub: bind the host's in its place for this run.
    fs::remove(root / "bin" / "sh");
    fs::copy_file("/bin/sh", root / "bin" / "sh");
    for (const char* dir : {"lib", "lib64", "usr"}) {
      if (fs::exists(fs::path("/") / dir)) fs::create_directories(root / dir);
    }
    auto withlibs = argv;
    auto dash = std::find(withlibs.begin(), withlibs.end(), "--dev");
    for (const char* dir : {"/lib", "/lib64", "/usr"}) {
      if (fs::exists(dir)) dash = withlibs.insert(dash, {"--ro-bind", dir, dir}) + 3;
    }
    spec.argv = withlibs;
    auto p = JobProcess::spawn(spec);
    REQUIRE(p.is_ok());
    auto exit = wait_exit(*p);
    CHECK_MESSAGE(exit.ok(), slurp(layout.stderr_path));
    CHECK(slurp(layout.out_dir + "/x") == "ran\n");
  }
  fs::remove_all(base);
}

}  // namespace vow::agent
