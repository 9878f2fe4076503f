#include "agent/local_effects.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <filesystem>
#include <fstream>

#include "agent/job_layout.h"
#include "agent/output_check.h"
#include "agent/sandbox.h"

namespace fs = std::filesystem;

namespace vow::agent {

// ---- clock ----

std::int64_t SystemClock::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t SystemClock::wall_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- state ----

store::StoredStatement to_stored(const Statement& st, std::int64_t received_unix_ms) {
  store::StoredStatement s;
  s.author = st.author;
  s.seq = st.seq;
  s.kind = st.kind();
  s.job = st.job();
  std::visit(
      [&](const auto& b) {
        if constexpr (requires { b.epoch; }) s.epoch = b.epoch;
      },
      st.body);
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    s.outputs_digest = outputs_digest(*r);
    s.ok = r->ok;
  }
  s.bytes = st.signed_form.bytes;
  s.signature = st.signed_form.signature;
  s.path = st.signed_form.path;
  s.received_unix_ms = received_unix_ms;
  return s;
}

Status SqliteState::persist(const std::vector<Statement>& statements) {
  if (statements.empty()) return Status::ok();
  return persist_together([&]() -> Status {
    std::vector<store::StoredStatement> others;
    std::int64_t now = clock_->wall_ms();
    for (const auto& st : statements) {
      if (st.author == self_) {
        VOW_RETURN_IF_ERROR(ledger_->append_own(to_stored(st, now)));
      } else {
        others.push_back(to_stored(st, now));
      }
    }
    if (!others.empty()) VOW_RETURN_IF_ERROR(ledger_->insert_batch(others));
    return Status::ok();
  });
}

Status SqliteState::persist_proofs(const std::vector<Statement>& proofs) {
  if (proofs.empty()) return Status::ok();
  return persist_together([&]() -> Status {
    std::int64_t now = clock_->wall_ms();
    for (const auto& st : proofs) VOW_RETURN_IF_ERROR(ledger_->put_proof(to_stored(st, now)));
    return Status::ok();
  });
}

Status SqliteState::persist_voids(const std::vector<StatementRef>& slots) {
  if (slots.empty()) return Status::ok();
  return persist_together([&] { return ledger_->put_voids(slots); });
}

Status SqliteState::persist_retired(const std::vector<StatementRef>& retired) {
  if (retired.empty()) return Status::ok();
  return persist_together([&] { return ledger_->forget(retired); });
}

Status SqliteState::persist_index(const std::vector<store::ArtifactRecord>& rows) {
  if (rows.empty()) return Status::ok();
  return persist_together([&] { return ledger_->index_put(rows); });
}

Status SqliteState::persist_together(const std::function<Status()>& fn) {
  if (grouped_) return fn();  // part of the outer group
  grouped_ = true;
  VersionVector moved;
  // Any write that fails stops the agent (Agent::carry_out): the group is all or nothing.
  Status s = ledger_->write_all_or_nothing(fn, &moved);
  grouped_ = false;
  if (!s.is_ok()) return s;
  // A frontier only moves up; authors not in MOVED kept theirs.
  for (const auto& [author, seq] : moved) {
    auto& have = vv_[author];
    if (seq > have) have = seq;
  }
  return Status::ok();
}

void SqliteState::request_sync(std::uint64_t ticket) {
  if (syncer_ != nullptr) syncer_->request(ticket);
}

bool SqliteState::sync_if_cheap(std::uint64_t ticket) {
  return syncer_ != nullptr && syncer_->sync_if_cheap(ticket);
}

Status SqliteState::load_version_vector() {
  auto vv = ledger_->version_vector();
  if (!vv.is_ok()) return vv.status();
  vv_ = std::move(vv).value();
  return Status::ok();
}

Status SqliteState::put_running_job(const store::RunningJob& row) {
  return ledger_->put_running_job(row);
}

Status SqliteState::remove_running_job(const Digest& job) {
  return ledger_->remove_running_job(job);
}

// One write to the journal instead of a transaction of the row's own; where the journal
// cannot take it (a path with a newline in it, a failed write), the row itself.
Status SqliteState::note_running_job(const store::RunningJob& row) {
  if (journal_ && row.work_dir.find('\n') == std::string::npos && journal_->note(row).is_ok()) {
    return Status::ok();
  }
  return ledger_->put_running_job(row);
}

void SqliteState::running_rows_settled() {
  if (journal_) journal_->settle();
}

// ---- jobs ----

namespace {

// Writes all of BYTES to FD; false (errno set) at the first write that fails.
bool write_all_fd(int fd, std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

JobLayout layout_of(const std::string& state_dir, const promises::StartJob& s) {
  return job_layout(state_dir, s.job.job, s.epoch);
}

// Opens the directory NAME under DIR (not through a symlink), first giving its owner
// every permission on it if a run took some away; -1 if it is not such a directory.
int open_dir_at(int dir, const char* name) {
  struct stat st {};
  if (::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) return -1;
  if ((st.st_mode & S_IRWXU) != S_IRWXU &&
      ::fchmodat(dir, name, (st.st_mode & 07777) | S_IRWXU, 0) != 0) {
    return -1;
  }
  return ::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

// Calls FN with each entry of the directory open as DIR but "." and "..", while FN
// returns true; false if FN did not, or the directory could not be read. DIR stays open
// (the caller's).
static_assert(offsetof(struct dirent, d_reclen) == 16 && offsetof(struct dirent, d_type) == 18 &&
                  offsetof(struct dirent, d_name) == 19,
              "struct dirent is laid out as the kernel's linux_dirent64");
template <typename Fn>
bool each_entry_at(int dir, Fn&& fn) {
  // getdents64(2) on DIR itself: no descriptor of its own to make and close, and none of
  // fdopendir's checks (a dup, an fstat, an fcntl) for a directory this file opened.
  // Its offset is DIR's, at the start: each directory is read once, when just opened.
  constexpr std::size_t kBuf = 8192;
  auto buf = std::make_unique<char[]>(kBuf);
  for (;;) {
    const ssize_t n = ::getdents64(dir, buf.get(), kBuf);
    if (n < 0) return false;
    if (n == 0) return true;
    for (ssize_t off = 0; off < n;) {
      // The kernel's linux_dirent64 is glibc's struct dirent on 64-bit Linux.
      const auto* e = reinterpret_cast<const struct dirent*>(buf.get() + off);
      off += e->d_reclen;
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      if (!fn(*e)) return false;
    }
  }
}

bool empty_dir_at(int dir);

// Removes the directory NAME under DIR and all it holds.
bool remove_dir_at(int dir, const char* name) {
  const int sub = open_dir_at(dir, name);
  if (sub < 0) return false;
  const bool ok = empty_dir_at(sub);
  ::close(sub);
  return ok && ::unlinkat(dir, name, AT_REMOVEDIR) == 0;
}

// Removes everything in the directory open as DIR, descending into subdirectories by
// their descriptors (no path is looked up twice); false at the first thing it cannot
// remove.
bool empty_dir_at(int dir) {
  return each_entry_at(dir, [dir](const struct dirent& e) {
    // A name of unknown type is tried as a file first: most are.
    if (e.d_type != DT_DIR && ::unlinkat(dir, e.d_name, 0) == 0) return true;
    if (e.d_type != DT_DIR && e.d_type != DT_UNKNOWN) return false;
    return remove_dir_at(dir, e.d_name);
  });
}

void remove_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  (void)store::make_writable_recursive(dir);
  fs::remove_all(dir, ec);
}

}  // namespace

std::string LocalExecutor::work_dir(const promises::StartJob& start) const {
  return layout_of(state_dir_, start).work_dir;
}

Status LocalExecutor::create_work_dir(const promises::StartJob& start) {
  JobLayout l = layout_of(state_dir_, start);
  remove_dir(l.work_dir);
  std::error_code ec;
  sweep_spares();
  while (!spare_dirs_.empty()) {
    std::string spare = std::move(spare_dirs_.back());
    spare_dirs_.pop_back();
    if (::rename(spare.c_str(), l.work_dir.c_str()) == 0) {
      jobs_dir_made_ = true;
      return Status::ok();
    }
    remove_dir(spare);
  }
  // Three mkdirs, no more: std::filesystem::create_directories looks at every parent
  // first, and this is on every job's way to its start. A missing jobs/ (the first job,
  // or an operator's clean-up) or a directory left in place takes the long way.
  if (::mkdir(l.work_dir.c_str(), 0777) == 0) {
    for (const std::string* d : {&l.in_dir, &l.out_dir}) {
      if (!ec && ::mkdir(d->c_str(), 0777) != 0) ec = std::error_code(errno, std::generic_category());
    }
  } else if (errno == ENOENT || errno == EEXIST) {
    fs::create_directories(l.in_dir, ec);
    if (!ec) fs::create_directories(l.out_dir, ec);
  } else {
    ec = std::error_code(errno, std::generic_category());
  }
  if (ec) return Status::io("cannot create work directory " + l.work_dir + ": " + ec.message());
  jobs_dir_made_ = true;
  return Status::ok();
}

void LocalExecutor::sweep_spares() {
  if (spares_swept_) return;
  // Spares of an earlier incarnation are not known to be empty: they go.
  spares_swept_ = true;
  std::error_code ec;
  std::vector<std::string> stale;
  for (auto it = fs::directory_iterator(state_dir_ + "/jobs", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (it->path().filename().string().rfind(".spare-", 0) == 0) stale.push_back(it->path());
  }
  for (const auto& s : stale) remove_dir(s);
}

// A fresh spare is what create_work_dir would make, and the two logs the job host would
// create (empty, as it finds them: it truncates only one that is not): with it, a start
// is one rename. Nothing of
// a run has been in it, so it serves a bare run as well as a sandboxed one (an ended
// run's directory is kept only from the sandbox, recycle_work_dir).
void LocalExecutor::keep_spares() {
  if (!jobs_dir_made_ || spare_dirs_.size() >= kFreshSpares) return;
  sweep_spares();
  const std::string spare = state_dir_ + "/jobs/.spare-" + pid_text_ + "-" +
                            std::to_string(++spares_made_);
  bool ok = ::mkdir(spare.c_str(), 0777) == 0 && ::mkdir((spare + "/in").c_str(), 0777) == 0 &&
            ::mkdir((spare + "/out").c_str(), 0777) == 0;
  for (const char* log : {"/stdout", "/stderr"}) {
    if (!ok) break;
    const int fd = ::open((spare + log).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ok = fd >= 0;
    if (fd >= 0) ::close(fd);
  }
  if (!ok) {
    remove_dir(spare);  // jobs/ gone, or no room: the long way, until a job makes one
    jobs_dir_made_ = false;
    return;
  }
  spare_dirs_.push_back(spare);
}

Status LocalExecutor::materialize_inputs(const promises::StartJob& start) {
  JobLayout l = layout_of(state_dir_, start);
  for (const auto& in : start.inputs) {
    // A fan-in input (the directory of every shard's output) is a tree no job wrote:
    // make it from its children, which are held.
    // (Only a tree with entries is looked up: any other input is found by materialize.)
    const bool fan_in = in.artifact.is_tree && !in.artifact.entries.empty();
    auto held = fan_in ? store_->has(in.artifact.digest) : Result<bool>(true);
    if (held.is_ok() && !*held) {
      auto made = store_->put_tree(in.artifact.entries);
      if (made.status().code() == StatusCode::kNotFound) {
        // Entries placed ahead of being stored (StoreSink::place) are stored now: a tree
        // names only held children.
        for (const auto& e : in.artifact.entries) {
          if (e.kind != EntryKind::kFile) continue;
          auto has = store_->has(e.digest);
          if (has.is_ok() && !*has) (void)store_->store_placed(e.digest, promises::kMaxAttachedBytes);
        }
        made = store_->put_tree(in.artifact.entries);
      }
      if (made.is_ok() && *made != in.artifact.digest) {
        return Status::corrupt("input '" + in.name + "': fan-in tree made as " + made->hex());
      }
    }
    Status s = store_->materialize(in.artifact.digest, l.input_path(in.name));
    if (s.code() == StatusCode::kNotFound && !in.artifact.is_tree &&
        in.artifact.size_bytes <= promises::kMaxAttachedBytes) {
      // Placed ahead of being stored (StoreSink::place): its row comes with the store.
      Status placed = store_->materialize_placed(in.artifact.digest, l.input_path(in.name),
                                                 promises::kMaxAttachedBytes);
      if (placed.code() != StatusCode::kNotFound) s = placed;
    }
    if (!s.is_ok()) return Status(s.code(), "input '" + in.name + "': " + s.message());
  }
  return Status::ok();
}

// Each input a placed object (StoreSink::place: whole, checked against its digest,
// 0444), linked by its path alone: no index row is read or written, so the loop may do
// it while the worker owns the store. The store's later put of the same bytes renames a
// file of the same content over the name, which leaves this link as it is.
Status LocalExecutor::link_placed_inputs(const promises::StartJob& start,
                                         const PlacedSource& source) {
  JobLayout l = layout_of(state_dir_, start);
  std::vector<std::string> made;
  Status s = Status::ok();
  for (const auto& in : start.inputs) {
    if (in.artifact.is_tree || in.artifact.size_bytes > promises::kMaxAttachedBytes) {
      s = Status::unavailable("input '" + in.name + "' was not placed");
      break;
    }
    std::string dest = l.input_path(in.name);
    PlacedFile from = source ? source(in.artifact.digest) : PlacedFile{};
    if (from.fd < 0 && from.path.empty()) {
      from.path = store_->object_path(in.artifact.digest, store::ArtifactKind::kFile);
    }
    if ((from.fd >= 0 ? link_open_file(from.fd, dest) : ::link(from.path.c_str(), dest.c_str())) !=
        0) {
      s = Status::io("link input '" + in.name + "' to " + dest + ": " + std::strerror(errno));
      break;
    }
    made.push_back(std::move(dest));
  }
  if (!s.is_ok()) {
    // An unnamed file linked once cannot be linked again once its last name goes: each
    // gets its name in the store first (as name_placed would; the worker's way then
    // finds it there), then the job's directory loses it.
    for (std::size_t k = 0; k < made.size(); ++k) {
      const Digest& d = start.inputs[k].artifact.digest;
      (void)::link(made[k].c_str(), store_->object_path(d, store::ArtifactKind::kFile).c_str());
      ::unlink(made[k].c_str());
    }
  }
  return s;
}

LimitCounts LocalExecutor::end_cgroup(const std::string& name, const promises::Stage& stage) {
  LimitCounts counted = cgroups_.counts(name, stage);
  if (!cgroups_.remove(name)) to_remove_.insert(name);
  return counted;
}

Result<std::int64_t> LocalExecutor::spawn(const promises::StartJob& start) {
  ++spawned_;
  JobLayout l = layout_of(state_dir_, start);
  SpawnSpec spec;
  spec.env = job_environment(l, start.stage, {start.job.job, start.job.pipeline, start.job.shard});
  std::optional<JobRoot> root;
  if (start.stage.root) {
    // Checked at start too (docs/sandbox.md): never run on the host's files instead.
    if (bwrap_.empty()) {
      return Status::unavailable("the stage runs in root '" + start.stage.root->to_string() +
                                 "', which only the bubblewrap sandbox makes, and jobs here "
                                 "run without it (docs/sandbox.md)");
    }
    std::string path;
    for (const auto& e : spec.env) {
      if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    }
    auto made = job_root(l, start.stage, path);
    if (!made.is_ok()) return made.status();
    root = std::move(made).value();
  }
  // The limits a cgroup applies leave the limit wrapper (its rlimits and affinity).
  promises::Stage wrapped = start.stage;
  std::string cgroup;
  if (cgroups_.active()) {
    if (!swept_) {
      // After the restart's adoptions: what is left empty belongs to no job.
      std::set<std::string> keep;
      for (const auto& [id, c] : in_cgroup_) keep.insert(c.name);
      cgroups_.sweep(keep);
      swept_ = true;
    }
  }
  if (cgroups_.wants(start.stage)) {
    cgroup = cgroups_.name_for(l.work_dir);
    // bubblewrap's two processes (itself and the namespace's init) count against
    // pids.max besides the command's; so does a supervisor shell, where no job host
    // (which joins the command itself to the cgroup) is to be had.
    int overhead = (job_host_exe_.empty() ? 1 : 0) + (bwrap_.empty() ? 0 : 2);
    auto procs = cgroups_.make(cgroup, start.stage, overhead);
    if (!procs.is_ok()) return procs.status();
    spec.cgroup_procs = std::move(procs).value();
    if (cgroups_.limits_memory()) wrapped.memory_bytes = 0;
    if (cgroups_.limits_pids()) wrapped.pids = 0;
    if (cgroups_.limits_cpu()) wrapped.cpus = 0;
  }
  // bwrap supervises the job itself where nothing goes before it (no cgroup to join
  // first, no limit wrapper before a root): one process less per job.
  const bool bwrap_supervises = !bwrap_.empty() && spec.cgroup_procs.empty();
  spec.argv = sandboxed_argv(bwrap_, state_dir_, l, wrapped, cpus_, root ? &*root : nullptr,
                             bwrap_supervises);
  spec.bwrap_supervises = bwrap_supervises && !spec.argv.empty() && spec.argv[0] == bwrap_;
  spec.cwd = l.work_dir;
  spec.stdout_path = l.stdout_path;
  spec.stderr_path = l.stderr_path;
  spec.status_path = l.status_path;
  Result<JobProcess> proc = Status::unavailable("no job host");
  const JobHost* by = nullptr;
  if (!bwrap_.empty() && !root && !start.stage.network && spec.cgroup_procs.empty()) {
    // A job in the sandbox that needs nothing of a bwrap of its own (no root, no
    // network, no cgroup to join first) goes to the sandboxed job host (docs/sandbox.md,
    // "A sandbox that stays"): the limit wrapper, if any, and the command.
    SpawnSpec hosted = spec;
    hosted.argv = sandboxed_argv("", state_dir_, l, wrapped, cpus_);
    hosted.bwrap_supervises = false;
    proc = spawn_hosted(hosted, true, &by);
    // Whatever kept it from the host (none to be had, or a clone that failed), the job
    // gets a bwrap of its own below.
    if (!proc.is_ok()) proc = Status::unavailable(proc.status().message());
  }
  // A job bwrap does not supervise goes to the job host: one process (its command)
  // where a supervisor shell would make two.
  if (!proc.is_ok() && !spec.bwrap_supervises) proc = spawn_hosted(spec, false, &by);
  if (!proc.is_ok() && proc.status().code() == StatusCode::kUnavailable) {
    by = nullptr;
    proc = JobProcess::spawn(spec);
  }
  if (!proc.is_ok()) {
    if (!cgroup.empty()) (void)end_cgroup(cgroup, start.stage);
    return proc.status();
  }
  std::int64_t pid = proc->pid();
  procs_.insert_or_assign(start.job.job, std::move(proc).value());
  if (by != nullptr) host_of_.insert_or_assign(start.job.job, by);
  if (!cgroup.empty()) in_cgroup_.insert_or_assign(start.job.job, InCgroup{cgroup, start.stage});
  return pid;
}

Result<JobHost*> LocalExecutor::job_host(bool sandboxed) {
  if (job_host_exe_.empty()) return Status::unavailable("no job host");
  std::unique_ptr<JobHost>& slot = sandboxed ? sandbox_host_ : host_;
  if (slot && slot->alive()) return slot.get();
  if (sandboxed && !sandbox_host_problem_.empty()) {
    return Status::unavailable(sandbox_host_problem_);
  }
  if (slot) {
    // Gone: its jobs' ends are seen on their pidfds from now on.
    for (auto& [id, p] : procs_) {
      auto it = host_of_.find(id);
      if (it != host_of_.end() && it->second == slot.get()) {
        p.watch_pidfd();
        host_of_.erase(it);
      }
    }
  }
  if (sandboxed) {
    // The sandbox binds the jobs' directory: it must be there first.
    std::error_code ec;
    fs::create_directories(state_dir_ + "/jobs", ec);
  }
  auto started = sandboxed ? JobHost::start(job_host_exe_, bwrap_, state_dir_)
                           : JobHost::start(job_host_exe_);
  if (!started.is_ok()) {
    // A sandboxed host that cannot be had here is not tried again: its jobs get a
    // bwrap each, as before.
    if (sandboxed) sandbox_host_problem_ = started.status().message();
    return Status::unavailable(started.status().message());
  }
  slot = std::move(started).value();
  return slot.get();
}

Result<JobProcess> LocalExecutor::spawn_hosted(const SpawnSpec& spec, bool sandboxed,
                                               const JobHost** by) {
  auto host = job_host(sandboxed);
  if (!host.is_ok()) return host.status();
  auto pid = (*host)->spawn(spec);
  if (!pid.is_ok()) return pid.status();
  *by = *host;
  return JobProcess::hosted(*pid, spec.status_path);
}

std::string LocalExecutor::start_job_hosts() {
  if (job_host_exe_.empty()) return "";
  auto bare = job_host(false);
  std::string out = bare.is_ok() ? "jobs start from a job host (pid " +
                                       std::to_string((*bare)->pid()) + ")"
                                 : "no job host (" + bare.status().message() +
                                       "): each job gets a supervisor shell";
  if (bwrap_.empty()) return out;
  auto sandboxed = job_host(true);
  if (sandboxed.is_ok()) {
    return out + "; sandboxed jobs from a job host in one sandbox (pid " +
           std::to_string((*sandboxed)->pid()) + "), each in its own mount and PID namespaces";
  }
  return out + "; sandboxed jobs get a bwrap each (no job host in one sandbox here: " +
         sandboxed.status().message() + ")";
}

void LocalExecutor::kill(const Digest& job) {
  auto it = procs_.find(job);
  if (it != procs_.end()) it->second.kill_group(SIGKILL);
}

Adoption LocalExecutor::adopt(const store::RunningJob& row, const promises::StartJob& start) {
  JobLayout l = layout_of(state_dir_, start);
  Adoption a;
  if (row.work_dir != l.work_dir) return a;
  // The job's cgroup, if it has one, is found again by its name.
  const std::string cgroup = cgroups_.name_for(l.work_dir);
  const bool has_cgroup = cgroups_.active() && cgroups_.exists(cgroup);
  auto status = read_status_file(l.status_path);
  if (status.is_ok() && status->has_value()) {
    a.kind = Adoption::Kind::kFinished;
    a.exit_status = (*status)->exit_status;
    a.signaled = (*status)->signaled;
    a.started_unix_ms = row.started_unix_ms;
    if (has_cgroup) a.limits = end_cgroup(cgroup, start.stage);
    return a;
  }
  auto proc = JobProcess::adopt(static_cast<pid_t>(row.pid), l.status_path);
  if (!proc.is_ok()) return a;  // gone: discard_leftover removes its cgroup
  procs_.insert_or_assign(start.job.job, std::move(proc).value());
  if (has_cgroup) in_cgroup_.insert_or_assign(start.job.job, InCgroup{cgroup, start.stage});
  a.kind = Adoption::Kind::kRunning;
  a.started_unix_ms = row.started_unix_ms;
  return a;
}

void LocalExecutor::discard_leftover(const store::RunningJob& row) {
  auto proc = JobProcess::adopt(static_cast<pid_t>(row.pid), row.work_dir + "/status");
  if (proc.is_ok()) proc->kill_group(SIGKILL);
  if (cgroups_.active()) {
    // Whatever is left in its cgroup is killed with it.
    std::string cgroup = cgroups_.name_for(row.work_dir);
    if (!cgroups_.remove(cgroup)) to_remove_.insert(cgroup);
  }
  remove_dir(row.work_dir);
}

void LocalExecutor::remove_work_dir(const promises::StartJob& start) {
  procs_.erase(start.job.job);
  if (auto it = in_cgroup_.find(start.job.job); it != in_cgroup_.end()) {
    (void)end_cgroup(it->second.name, it->second.stage);
    in_cgroup_.erase(it);
  }
  JobLayout l = layout_of(state_dir_, start);
  const bool alone = ended_alone_.erase(start.job.job) != 0;
  if (!recycle_work_dir(l, alone)) remove_dir(l.work_dir);
}

// Empties an ended run's work directory for the next run, or says it cannot (then it is
// removed). What stays: `in` and `out` (emptied), and the logs and status file as plain
// files of one link, truncated (the next run's spawn truncates the logs again, and an
// empty status is no status). Anything else the run left goes, and so does anything
// that is not what it should be (a log replaced by a symlink would have the next run's
// output written through it). Only for runs in the sandbox, where no process of theirs
// outlives bwrap's PID namespace, and for bare runs their job host saw end ALONE (it is
// a subreaper, so what a run leaves running becomes its child: it had none that was not
// a running job's command): one left by a bare run could still write into the directory
// it was given (its working directory), and so into the next run's.
bool LocalExecutor::recycle_work_dir(const JobLayout& l, bool alone) {
  if ((bwrap_.empty() && !alone) || spare_dirs_.size() >= kSpareWorkDirs) return false;
  // One pass by directory descriptors: each name is looked at once, and a directory the
  // run made read-only is made writable only when it is reached.
  const int work = ::open(l.work_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (work < 0) return false;
  struct stat st {};
  bool has_in = false;
  bool has_out = false;
  bool ok =
      ::fstat(work, &st) == 0 &&
      ((st.st_mode & S_IRWXU) == S_IRWXU || ::fchmod(work, (st.st_mode & 07777) | S_IRWXU) == 0) &&
      each_entry_at(work, [&](const struct dirent& e) {
        const std::string_view name = e.d_name;
        if (name == "in" || name == "out") {
          // Looked at once, by open_dir_at: one that is not a directory (or cannot be
          // made writable and opened) has the whole directory removed.
          const int sub = open_dir_at(work, e.d_name);
          if (sub < 0) return false;
          (name == "in" ? has_in : has_out) = true;
          const bool emptied = empty_dir_at(sub);
          ::close(sub);
          return emptied;
        }
        if (::fstatat(work, e.d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
        if ((name == "stdout" || name == "stderr" || name == "status") && S_ISREG(st.st_mode) &&
            st.st_nlink == 1) {
          if (st.st_size == 0) return true;  // nothing to truncate (most logs)
          const int f = ::openat(work, e.d_name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
          if (f >= 0) ::close(f);
          return f >= 0;
        }
        if (S_ISDIR(st.st_mode)) return remove_dir_at(work, e.d_name);
        return ::unlinkat(work, e.d_name, 0) == 0;
      });
  ::close(work);
  if (!ok || !has_in || !has_out) return false;
  std::string spare = state_dir_ + "/jobs/.spare-" + pid_text_ + "-" +
                      std::to_string(++spares_made_);
  if (::rename(l.work_dir.c_str(), spare.c_str()) != 0) return false;
  spare_dirs_.push_back(std::move(spare));
  return true;
}

std::vector<int> LocalExecutor::pidfds() const {
  std::vector<int> out;
  if (host_ && host_->alive()) out.push_back(host_->fd());
  if (sandbox_host_ && sandbox_host_->alive()) out.push_back(sandbox_host_->fd());
  for (const auto& [id, p] : procs_) {
    if (p.watched_by_pidfd() && p.pidfd() >= 0) out.push_back(p.pidfd());
  }
  return out;
}

std::vector<std::pair<Digest, ProcessExit>> LocalExecutor::reap(const std::vector<int>* fired) {
  std::vector<std::pair<Digest, ProcessExit>> out;
  // Ended jobs' cgroups still busy: once per turn, without waiting.
  for (auto it = to_remove_.begin(); it != to_remove_.end();) {
    it = cgroups_.remove(*it, 1) ? to_remove_.erase(it) : std::next(it);
  }
  std::vector<JobHost::Exit> ended;
  for (auto* host : {host_.get(), sandbox_host_.get()}) {
    if (host == nullptr) continue;
    const bool said = fired == nullptr || !host->alive() ||
                      std::find(fired->begin(), fired->end(), host->fd()) != fired->end();
    for (const auto& e : host->take_exits(said)) ended.push_back(e);
  }
  for (auto it = host_of_.begin(); it != host_of_.end();) {
    auto p = procs_.find(it->first);
    if (p == procs_.end()) {
      it = host_of_.erase(it);
      continue;
    }
    auto e = std::find_if(ended.begin(), ended.end(),
                          [&](const JobHost::Exit& x) { return x.pid == p->second.pid(); });
    if (e != ended.end()) {
      p->second.host_ended(e->alone);
    } else if (!it->second->alive()) {
      p->second.watch_pidfd();  // its host is gone: its end is seen on its pidfd
      it = host_of_.erase(it);
      continue;
    }
    ++it;
  }
  for (auto it = procs_.begin(); it != procs_.end();) {
    if (auto e = it->second.poll_exit()) {
      ProcessExit exit{e->exit_status, e->signaled};
      if (auto c = in_cgroup_.find(it->first); c != in_cgroup_.end()) {
        // Read before the cgroup goes; what is left in it (a daemon the job started
        // outside its process group) is killed with it.
        exit.limits = end_cgroup(c->second.name, c->second.stage);
        in_cgroup_.erase(c);
      }
      out.emplace_back(it->first, exit);
      if (it->second.ended_alone()) {
        // A failed run keeps its directory (and so its entry, which only its removal
        // takes): bounded, all forgotten at once past it, which costs only the keeping
        // of the directories of runs that ended then (they are removed instead).
        if (ended_alone_.size() >= kMaxEndedAlone) ended_alone_.clear();
        ended_alone_.insert(it->first);
      }
      it = procs_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::string LocalExecutor::refused_outputs(const promises::StartJob& start) {
  // Jobs run as vowd's own uid (the sandbox adds no user namespace). An output the store
  // already took by a link (a run collected again after a restart) keeps that link.
  return refused_output(layout_of(state_dir_, start).out_dir, start.stage.outputs, ::geteuid(),
                        [this](const std::string& path) {
                          auto ours = store_->is_object(path);
                          return ours.is_ok() && *ours;
                        });
}

promises::JobOutcome LocalExecutor::collect(const promises::StartJob& start,
                                            const ProcessExit& exit, const std::string& error,
                                            std::vector<store::ArtifactRecord>* index_rows) {
  JobLayout l = layout_of(state_dir_, start);
  promises::JobOutcome o;
  o.exit_status = exit.exit_status;
  // The logs and outputs reach the disk together (ArtifactStore::import_together): one
  // sync pass for all of them, before the result naming them is persisted; their index
  // rows are committed with that result.
  Status stored = store_->import_together([&]() -> Status {
    // An empty log (most jobs' stderr) is the empty object. Once the store holds it (or
    // this group imports it), importing it again would only rewrite it for nothing.
    const Digest empty = blake2b(std::string_view());
    bool empty_imported = false;
    auto log_digest = [&](const std::string& path) -> std::optional<Digest> {
      std::error_code ec;
      bool is_empty = fs::file_size(path, ec) == 0 && !ec;
      if (is_empty) {
        if (empty_imported) return empty;
        auto held = store_->has(empty);
        if (held.is_ok() && *held) return empty;
      }
      auto ref = store_->import_path(path);
      if (!ref.is_ok()) return std::nullopt;
      if (is_empty) empty_imported = true;
      return ref->digest;
    };
    o.stdout_digest = log_digest(l.stdout_path);
    o.stderr_digest = log_digest(l.stderr_path);
    if (!error.empty()) {
      o.error = error;
      return Status::ok();
    }
    o.ok = true;
    for (const auto& name : start.stage.outputs) {
      std::string path = l.output_path(name);
      std::error_code ec;
      if (!fs::exists(fs::symlink_status(path, ec))) {
        o.ok = false;
        o.error = "output '" + name + "' missing: the command exited 0 but wrote nothing at " +
                  "$VOW_OUT_" + name;
        break;
      }
      // A sandboxed job's output file is linked into the store, not copied: none of its
      // processes outlived bwrap's PID namespace to write to it again. A directory, or a
      // bare job's output, is copied.
      std::error_code kind_ec;
      const bool take = !bwrap_.empty() && fs::is_regular_file(fs::symlink_status(path, kind_ec));
      auto ref = take ? store_->take_file(path) : store_->import_path(path);
      if (!ref.is_ok()) {
        o.ok = false;
        o.error = "output '" + name + "': " + ref.status().to_string();
        break;
      }
      o.outputs.push_back({name, *ref});
    }
    return Status::ok();
  }, index_rows);
  if (!stored.is_ok()) {
    // Nothing imported may be named: the logs are lost, the run fails (and is retried).
    o.stdout_digest.reset();
    o.stderr_digest.reset();
    o.ok = false;
    if (o.error.empty()) o.error = "storing outputs and logs: " + stored.to_string();
  }
  if (!o.ok) o.outputs.clear();
  return o;
}

// ---- fetched artifacts ----

namespace {
constexpr std::string_view kTreeTag = "vow-tree-v1\n";
}  // namespace

std::string incoming_path(const std::string& state_dir, const Digest& digest) {
  return state_dir + "/incoming/" + digest.hex() + ".part";
}

Result<Received> StoreSink::store_received(const Digest& digest, std::optional<bool> is_tree) {
  std::optional<std::string> held = received_ != nullptr ? received_->take(digest) : std::nullopt;
  std::string part = incoming_path(state_dir_, digest);
  std::string head;
  if (held) {
    head = held->substr(0, kTreeTag.size());
  } else {
    std::ifstream in(part, std::ios::binary);
    head.resize(kTreeTag.size());
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<std::size_t>(in.gcount()));
  }
  Received r;
  if (!is_tree.value_or(head == kTreeTag)) {
    Digest stored;
    if (held) {
      // Adopted where place() put it (synced, its name synced), or, where it is not
      // there, written, hashed again, synced and renamed into place like any new object.
      auto d = store_->put_placed(*held);
      if (!d.is_ok()) return d.status();
      stored = *d;
    } else {
      // Moved into the store, not copied, nor hashed again: the stream checked every byte
      // against the digest as it arrived (transport/stream.h, ChunkSink::finish); synced,
      // renamed. Verified again when first materialized, as every object is.
      auto ref = store_->adopt_file(part, digest);
      ::unlink(part.c_str());  // left behind only on failure
      if (!ref.is_ok()) return ref.status();
      stored = ref->digest;
    }
    if (stored != digest) {
      return Status::corrupt("artifact " + digest.hex() + " arrived with digest " + stored.hex());
    }
    return r;
  }
  std::string encoding;
  if (held) {
    encoding = std::move(*held);
  } else {
    std::ifstream in(part, std::ios::binary);
    encoding.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    ::unlink(part.c_str());
  }
  auto entries = decode_tree(encoding);
  if (!entries.is_ok() || blake2b(encoding) != digest) {
    return Status::corrupt("tree " + digest.hex() + " arrived malformed");
  }
  for (const auto& e : *entries) {
    auto has = store_->has(e.digest);
    if (!has.is_ok() || !*has) r.missing.emplace_back(e.digest, e.kind == EntryKind::kTree);
  }
  r.tree = std::move(entries).value();
  return r;
}

// Objects that arrived in memory (the small ones) are written as one group: their bytes
// and names synced in one round for all of them, and their index rows handed back for
// the agent's next commit rather than committed and synced here, one transaction each
// (docs/agent.md, "Fetched objects, stored together"). A file the stream wrote, and a
// tree's encoding, are stored as store_received stores them.
std::vector<Result<Received>> StoreSink::store_received_together(
    const std::vector<std::pair<Digest, std::optional<bool>>>& items,
    std::vector<store::ArtifactRecord>* rows) {
  std::vector<Result<Received>> out;
  out.reserve(items.size());
  Status group = store_->import_together(
      [&]() -> Status {
        for (const auto& [digest, is_tree] : items) out.push_back(store_received(digest, is_tree));
        return Status::ok();
      },
      rows);
  if (!group.is_ok()) {
    // The group's syncs or renames failed: its objects are not stored (a file adopted on
    // its own may be; fetched again, it is stored again).
    for (auto& r : out) {
      if (r.is_ok()) r = group;
    }
  }
  return out;
}

// Hashed on the loop: at most kMaxAttachedBytes, a few microseconds; bytes that are not
// the digest's are dropped on arrival and never reach the worker or the store.
bool StoreSink::bytes_match(const Digest& digest, std::string_view bytes) {
  return blake2b(bytes) == digest;
}

void StoreSink::hold(const Digest& digest, std::string bytes) {
  if (received_ != nullptr) received_->put(digest, std::move(bytes));
}

// On the loop, with plain file calls and no store state (the store is the worker's): the
// object's bytes in an unnamed file, read-only like every object, neither synced nor
// indexed, named in the store after the start it lets go (name_placed). What a crash
// leaves of it is nothing (an unnamed file), a temporary (removed by the store's next
// open) or an object without a row (verified, and indexed or removed, by the next open);
// the worker's store_received then syncs it where it lies (ArtifactStore::put_placed)
// and hands back its row. An object already in place is left as it is, and none is
// named in a fan-out directory the store has not made yet.
Status StoreSink::place(const Digest& digest, std::string_view bytes) {
  if (unnamed_.count(digest) != 0) return Status::ok();  // placed already, whole
  const std::string path = store_->object_path(digest, store::ArtifactKind::kFile);
  // An unnamed file, named once it is whole (linkat): no temporary to look for, name and
  // rename, and a crash leaves nothing behind. Made in tmp/, where the named temporaries
  // were, not in the object's fan-out directory: a file system allocates a new inode near
  // its directory's, and on ext4 without a journal one allocated among recently freed
  // ones searches past each of them (two back-to-back profiles of the hand-off: the
  // allocation 26% of the loop's samples from a result to the next spawn in a fan-out
  // directory, 17% in tmp/). Where the file system has no O_TMPFILE, or the fan-out
  // directory is missing, the named temporary as before (which says so).
  //
  // The file is one made ahead (make_spares) where there is one: its inode allocated off
  // the way to the start (on ext4 without a journal, up to a fifth of the loop's time
  // from a result's arrival to the job's spawn in a profile of the hand-off).
  int fd = take_spare();
  if (fd < 0) fd = ::open((store_->root() + "/tmp").c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
  if (fd < 0) return place_renamed(digest, bytes, path);
  if (!write_all_fd(fd, bytes)) {
    const int e = errno;
    ::close(fd);
    return Status::io("place " + path + ": " + std::strerror(e));
  }
  // Named later (name_placed), once the start it lets go is made: the job's input is
  // linked from this file meanwhile (placed_source), so the way to the start makes one
  // link, into the job's fresh directory, and not a second into a fan-out directory of
  // thousands of names (a tenth of the downstream loop's time from a result's arrival to
  // the start decided, in a profile of the hand-off).
  unnamed_.emplace(digest, fd);
  return Status::ok();
}

PlacedFile StoreSink::placed_source(const Digest& digest) {
  auto it = unnamed_.find(digest);
  if (it == unnamed_.end()) return {-1, store_->object_path(digest, store::ArtifactKind::kFile)};
  return {it->second, ""};
}

namespace {
// Once refused (an older kernel, no capability), not asked again: each refusal is a
// system call on the way to a start.
std::atomic<bool> link_by_descriptor{true};
}  // namespace

void link_open_file_by_descriptor(bool on) { link_by_descriptor.store(on); }

int link_open_file(int fd, const std::string& dest) {
  // A refusal reads as ENOENT (or EPERM), told apart from a missing directory by the
  // link through /proc working where it did not.
  std::atomic<bool>& empty_path = link_by_descriptor;
  const bool tried = empty_path.load(std::memory_order_relaxed);
  if (tried) {
    if (::linkat(fd, "", AT_FDCWD, dest.c_str(), AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT && errno != EPERM && errno != EINVAL) return -1;
  }
  char self[64];
  std::snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  const int rc = ::linkat(AT_FDCWD, self, AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW);
  if (rc == 0 && tried) empty_path.store(false, std::memory_order_relaxed);
  return rc;
}

// Each unnamed placed file linked to its object's name. EEXIST: an object already in
// place is left as it is. Only into a fan-out directory the store has (one made here
// would not be synced by the store, which syncs `objects/` for the directories it makes
// itself): where there is none (ENOENT), or the link fails otherwise (no /proc to name
// the file through), the file goes with its descriptor, and the worker's store writes
// the object from the bytes held (ArtifactStore::put_placed finds nothing in place).
void StoreSink::name_placed() {
  for (const auto& [digest, fd] : unnamed_) {
    (void)link_open_file(fd, store_->object_path(digest, store::ArtifactKind::kFile));
    ::close(fd);
  }
  unnamed_.clear();
}

StoreSink::~StoreSink() {
  for (int fd : spares_) ::close(fd);
  for (const auto& [digest, fd] : unnamed_) ::close(fd);
}

// A crash leaves nothing of them: an unnamed file is freed when its last descriptor
// closes (on a file system without a journal, by its next check).
void StoreSink::make_spares() {
  while (!no_spares_ && spares_.size() < kSpareFiles) {
    int fd = ::open((store_->root() + "/tmp").c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0) {
      // A file system without unnamed files is not asked again each turn (place() takes
      // the long way, and says so where that fails too); any other failure is tried
      // again in a later turn.
      no_spares_ = errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL;
      return;
    }
    spares_.push_back(fd);
  }
}

int StoreSink::take_spare() {
  if (spares_.empty()) return -1;
  int fd = spares_.back();
  spares_.pop_back();
  return fd;
}

// StoreSink::place without O_TMPFILE: a temporary in the store's tmp/, renamed to the
// object's name.
Status StoreSink::place_renamed(const Digest& digest, std::string_view bytes,
                                const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return Status::ok();
  const std::string dir = path.substr(0, path.rfind('/'));
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::unavailable("no fan-out directory " + dir + " yet");
  }
  const std::string tmp =
      store_->root() + "/tmp/placed-" + digest.hex() + "-" + std::to_string(++placed_);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) return Status::io("create " + tmp + ": " + std::strerror(errno));
  const bool whole = write_all_fd(fd, bytes);
  const int err = errno;
  ::close(fd);
  if (!whole || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int why = !whole ? err : errno;
    ::unlink(tmp.c_str());
    return Status::io("place " + path + ": " + std::strerror(why));
  }
  return Status::ok();
}

// The object's file as the collect just wrote it (its index row is committed with the
// result that names it, after this), read by path and checked against its digest.
std::optional<std::string> StoreSink::held_bytes(const Digest& digest, std::size_t max_bytes) {
  auto bytes = store_->read_placed(digest, max_bytes);
  if (!bytes.is_ok()) return std::nullopt;
  return std::move(bytes).value();
}

Status StoreSink::store_tree(const Digest& digest, const std::vector<TreeEntry>& entries) {
  auto d = store_->put_tree(entries);
  if (!d.is_ok()) return d.status();
  if (*d != digest) return Status::corrupt("tree " + digest.hex() + " rebuilt wrong");
  return Status::ok();
}

}  // namespace vow::agent
