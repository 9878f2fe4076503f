#include "agent/wal_sync.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "promises/assert.h"

namespace vow::agent {

WalSyncer::WalSyncer(std::string db_path, std::int64_t cheap_sync_us)
    : db_path_(std::move(db_path)), wal_path_(db_path_ + "-wal"), cheap_sync_us_(cheap_sync_us) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  VOW_ASSERT(event_fd_ >= 0, "eventfd failed");
  thread_ = std::thread([this] { run(); });
}

WalSyncer::~WalSyncer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (wal_fd_ >= 0) ::close(wal_fd_);
  ::close(event_fd_);
}

void WalSyncer::request(std::uint64_t ticket) {
  {
    std::lock_guard lock(mu_);
    if (ticket <= requested_) return;
    requested_ = ticket;
  }
  cv_.notify_one();
}

std::uint64_t WalSyncer::durable() const {
  std::lock_guard lock(mu_);
  return durable_;
}

Status WalSyncer::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void WalSyncer::clear() {
  std::uint64_t count = 0;
  ssize_t n = ::read(event_fd_, &count, sizeof(count));
  (void)n;
}

// The log is opened on first use (SQLite creates it with the first write) and again once
// the file held has no name left (SQLite removes the log when the last connection to the
// database closes, and makes a new one at the next write): one fstat a sync, no lookup
// of its path. Without a log there is nothing to sync but the database.
Status WalSyncer::sync_log() {
  struct stat open_file {};
  if (wal_fd_ >= 0 && (::fstat(wal_fd_, &open_file) != 0 || open_file.st_nlink == 0)) {
    ::close(wal_fd_);
    wal_fd_ = -1;
  }
  if (wal_fd_ < 0) {
    wal_fd_ = ::open(wal_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (wal_fd_ < 0) {
      if (errno != ENOENT) return Status::io(wal_path_ + ": open: " + std::strerror(errno));
      int db = ::open(db_path_.c_str(), O_RDONLY | O_CLOEXEC);
      if (db < 0) return Status::io(db_path_ + ": open: " + std::strerror(errno));
      int rc = ::fdatasync(db);
      int err = errno;
      ::close(db);
      if (rc != 0) return Status::io(db_path_ + ": fdatasync: " + std::strerror(err));
      return Status::ok();
    }
  }
  if (::fdatasync(wal_fd_) != 0) return Status::io(wal_path_ + ": fdatasync: " + std::strerror(errno));
  return Status::ok();
}

namespace {

std::int64_t micros_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

}  // namespace

bool WalSyncer::sync_if_cheap(std::uint64_t ticket) {
  {
    std::lock_guard lock(mu_);
    if (syncing_ || !error_.is_ok() || last_sync_us_ < 0 || last_sync_us_ > cheap_sync_us_) {
      return false;
    }
    syncing_ = true;  // the thread leaves the descriptor alone meanwhile
    requested_ = std::max(requested_, ticket);
  }
  if (sync_as(ticket).is_ok()) return true;
  signal_loop();
  return false;
}

// Called with syncing_ set (this thread owns the descriptor): syncs, and records how
// long it took and what it made durable (or the first error).
Status WalSyncer::sync_as(std::uint64_t target) {
  const auto t0 = std::chrono::steady_clock::now();
  Status s = sync_log();
  {
    std::lock_guard lock(mu_);
    syncing_ = false;
    last_sync_us_ = micros_since(t0);
    if (s.is_ok()) {
      durable_ = std::max(durable_, target);
    } else if (error_.is_ok()) {
      error_ = s;
    }
  }
  cv_.notify_all();
  return s;
}

void WalSyncer::signal_loop() {
  std::uint64_t one = 1;
  ssize_t n = ::write(event_fd_, &one, sizeof(one));
  (void)n;
}

void WalSyncer::run() {
  for (;;) {
    std::uint64_t target = 0;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] {
        return stopping_ || (!syncing_ && requested_ > durable_ && error_.is_ok());
      });
      if (stopping_) return;
      target = requested_;
      syncing_ = true;
    }
    (void)sync_as(target);
    signal_loop();
  }
}

Result<std::uint64_t> WalSyncer::sync_now() {
  std::uint64_t target = 0;
  {
    std::unique_lock lock(mu_);
    // The thread may be in a sync: wait for it (it owns the descriptor meanwhile).
    cv_.wait(lock, [this] { return !syncing_; });
    if (!error_.is_ok()) return error_;
    target = requested_;
    syncing_ = true;
  }
  Status s = sync_log();
  {
    std::lock_guard lock(mu_);
    syncing_ = false;
    if (s.is_ok()) durable_ = std::max(durable_, target);
  }
  cv_.notify_all();
  if (!s.is_ok()) return s;
  return target;
}

}  // namespace vow::agent
