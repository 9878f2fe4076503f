#include "store/faulty_vfs.h"

#include <sqlite3.h>

#include "promises/assert.h"

namespace vow::store {
namespace {

struct FaultyFile {
  sqlite3_file base;
  FaultyVfs* owner;
  sqlite3_file* real;  // points just after this struct, in the same allocation
};

FaultyFile* ff(sqlite3_file* f) { return reinterpret_cast<FaultyFile*>(f); }
sqlite3_file* real(sqlite3_file* f) { return ff(f)->real; }
FaultyVfs* owner(sqlite3_vfs* v) { return static_cast<FaultyVfs*>(v->pAppData); }

int x_close(sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); }
int x_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  return real(f)->pMethods->xRead(real(f), buf, n, off);
}
int x_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  int rc = ff(f)->owner->on_write();
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xWrite(real(f), buf, n, off);
}
int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
  return real(f)->pMethods->xTruncate(real(f), size);
}
int x_sync(sqlite3_file* f, int flags) {
  int rc = ff(f)->owner->on_sync();
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xSync(real(f), flags);
}
int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
  return real(f)->pMethods->xFileSize(real(f), size);
}
int x_lock(sqlite3_file* f, int l) { return real(f)->pMethods->xLock(real(f), l); }
int x_unlock(sqlite3_file* f, int l) { return real(f)->pMethods->xUnlock(real(f), l); }
int x_check_reserved(sqlite3_file* f, int* out) {
  return real(f)->pMethods->xCheckReservedLock(real(f), out);
}
int x_file_control(sqlite3_file* f, int op, void* arg) {
  return real(f)->pMethods->xFileControl(real(f), op, arg);
}
int x_sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int x_device_chars(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
int x_shm_map(sqlite3_file* f, int pg, int pgsz, int extend, void volatile** pp) {
  return real(f)->pMethods->xShmMap(real(f), pg, pgsz, extend, pp);
}
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return real(f)->pMethods->xShmLock(real(f), offset, n, flags);
}
void x_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
int x_shm_unmap(sqlite3_file* f, int del) { return real(f)->pMethods->xShmUnmap(real(f), del); }
int x_fetch(sqlite3_file* f, sqlite3_int64 off, int amt, void** pp) {
  return real(f)->pMethods->xFetch(real(f), off, amt, pp);
}
int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return real(f)->pMethods->xUnfetch(real(f), off, p);
}

const sqlite3_io_methods kMethods = {
    3,
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_file_size,
    x_lock,
    x_unlock,
    x_check_reserved,
    x_file_control,
    x_sector_size,
    x_device_chars,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    x_fetch,
    x_unfetch,
};

int v_open(sqlite3_vfs* v, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  FaultyFile* file = ff(f);
  file->owner = owner(v);
  file->real = reinterpret_cast<sqlite3_file*>(file + 1);
  file->base.pMethods = nullptr;
  sqlite3_vfs* r = owner(v)->real();
  int rc = r->xOpen(r, name, file->real, flags, out_flags);
  if (file->real->pMethods != nullptr) {
    VOW_ASSERT(file->real->pMethods->iVersion >= 3, "VFS io methods version %d",
               file->real->pMethods->iVersion);
    file->base.pMethods = &kMethods;
  }
  return rc;
}
int v_delete(sqlite3_vfs* v, const char* name, int sync_dir) {
  auto* r = owner(v)->real();
  return r->xDelete(r, name, sync_dir);
}
int v_access(sqlite3_vfs* v, const char* name, int flags, int* out) {
  auto* r = owner(v)->real();
  return r->xAccess(r, name, flags, out);
}
int v_full_pathname(sqlite3_vfs* v, const char* name, int n, char* out) {
  auto* r = owner(v)->real();
  return r->xFullPathname(r, name, n, out);
}
void* v_dl_open(sqlite3_vfs* v, const char* name) {
  auto* r = owner(v)->real();
  return r->xDlOpen(r, name);
}
void v_dl_error(sqlite3_vfs* v, int n, char* msg) {
  auto* r = owner(v)->real();
  r->xDlError(r, n, msg);
}
void (*v_dl_sym(sqlite3_vfs* v, void* h, const char* sym))(void) {
  auto* r = owner(v)->real();
  return r->xDlSym(r, h, sym);
}
void v_dl_close(sqlite3_vfs* v, void* h) {
  auto* r = owner(v)->real();
  r->xDlClose(r, h);
}
int v_randomness(sqlite3_vfs* v, int n, char* out) {
  auto* r = owner(v)->real();
  return r->xRandomness(r, n, out);
}
int v_sleep(sqlite3_vfs* v, int us) {
  auto* r = owner(v)->real();
  return r->xSleep(r, us);
}
int v_current_time(sqlite3_vfs* v, double* out) {
  auto* r = owner(v)->real();
  return r->xCurrentTime(r, out);
}
int v_get_last_error(sqlite3_vfs* v, int n, char* out) {
  auto* r = owner(v)->real();
  return r->xGetLastError ? r->xGetLastError(r, n, out) : 0;
}
int v_current_time_int64(sqlite3_vfs* v, sqlite3_int64* out) {
  auto* r = owner(v)->real();
  return r->xCurrentTimeInt64(r, out);
}

}  // namespace

FaultyVfs::FaultyVfs(std::string name) : name_(std::move(name)), real_(sqlite3_vfs_find(nullptr)) {
  VOW_ASSERT(real_ != nullptr && real_->iVersion >= 2, "no default SQLite VFS");
  vfs_ = std::make_unique<sqlite3_vfs>();
  *vfs_ = sqlite3_vfs{};
  vfs_->iVersion = 2;
  vfs_->szOsFile = static_cast<int>(sizeof(FaultyFile)) + real_->szOsFile;
  vfs_->mxPathname = real_->mxPathname;
  vfs_->zName = name_.c_str();
  vfs_->pAppData = this;
  vfs_->xOpen = v_open;
  vfs_->xDelete = v_delete;
  vfs_->xAccess = v_access;
  vfs_->xFullPathname = v_full_pathname;
  vfs_->xDlOpen = v_dl_open;
  vfs_->xDlError = v_dl_error;
  vfs_->xDlSym = v_dl_sym;
  vfs_->xDlClose = v_dl_close;
  vfs_->xRandomness = v_randomness;
  vfs_->xSleep = v_sleep;
  vfs_->xCurrentTime = v_current_time;
  vfs_->xGetLastError = v_get_last_error;
  vfs_->xCurrentTimeInt64 = v_current_time_int64;
  int rc = sqlite3_vfs_register(vfs_.get(), 0);
  VOW_ASSERT(rc == SQLITE_OK, "sqlite3_vfs_register(%s): %d", name_.c_str(), rc);
}

FaultyVfs::~FaultyVfs() { sqlite3_vfs_unregister(vfs_.get()); }

int FaultyVfs::on_write() {
  std::uint64_t n = ++writes_;
  if (plan_.disk_full) {
    ++faults_;
    return SQLITE_FULL;
  }
  if (plan_.fail_write_n != 0 && n == plan_.fail_write_n) {
    ++faults_;
    return SQLITE_IOERR_WRITE;
  }
  return SQLITE_OK;
}

int FaultyVfs::on_sync() {
  if (plan_.fail_sync) {
    ++faults_;
    return SQLITE_IOERR_FSYNC;
  }
  ++syncs_;
  return SQLITE_OK;
}

}  // namespace vow::store
