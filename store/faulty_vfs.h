// FaultyVfs: a SQLite VFS shim for tests that wraps the default VFS and fails chosen
// file operations beneath SQLite (SQLite's own test approach), so ledger tests see the
// errors a dying disk produces: the Nth write, every fsync, a full disk.
//
// Usage: FaultyVfs vfs("faulty-1"); open_sqlite_ledger(path, {.vfs_name = vfs.name()});
// then set vfs.plan() fields. The VFS is registered in the constructor and unregistered
// in the destructor, which must run after every connection using it has closed.
//
// Thread-safety: counters are atomics, but the plan is meant to be set by the one thread
// that uses the ledger. Not copyable.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

struct sqlite3_vfs;

namespace vow::store {

struct VfsFaultPlan {
  std::atomic<std::uint64_t> fail_write_n{0};  // fail the Nth xWrite (1-based, from now)
  std::atomic<bool> fail_sync{false};          // every xSync fails (SQLITE_IOERR_FSYNC)
  std::atomic<bool> disk_full{false};          // every xWrite fails (SQLITE_FULL)
};

class FaultyVfs {
 public:
  explicit FaultyVfs(std::string name);
  ~FaultyVfs();
  FaultyVfs(const FaultyVfs&) = delete;
  FaultyVfs& operator=(const FaultyVfs&) = delete;

  const std::string& name() const { return name_; }
  VfsFaultPlan& plan() { return plan_; }
  // Fails the Nth write counted from this call.
  void fail_nth_write_from_now(std::uint64_t n) { plan_.fail_write_n = writes_.load() + n; }
  void clear() {
    plan_.fail_write_n = 0;
    plan_.fail_sync = false;
    plan_.disk_full = false;
  }
  std::uint64_t writes() const { return writes_.load(); }
  std::uint64_t faults() const { return faults_.load(); }
  std::uint64_t syncs() const { return syncs_.load(); }  // xSync calls that reached the disk

  // Called from the shim (internal).
  int on_write();
  int on_sync();
  sqlite3_vfs* real() const { return real_; }

 private:
  std::string name_;
  VfsFaultPlan plan_;
  std::atomic<std::uint64_t> writes_{0};
  std::atomic<std::uint64_t> faults_{0};
  std::atomic<std::uint64_t> syncs_{0};
  sqlite3_vfs* real_;
  std::unique_ptr<sqlite3_vfs> vfs_;
};

}  // namespace vow::store
