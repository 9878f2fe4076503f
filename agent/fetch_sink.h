// Where a fetched artifact's bytes arrive (docs/storage.md, "Fetched artifacts").
//
// A small artifact (at most kInMemoryFetchBytes: a shard, a log, a tree encoding) is
// held in memory and handed to ReceivedInMemory once the transfer verified it; the
// worker takes it from there into the store. A larger one spills to a file in
// STATE/incoming, which the store adopts. So the common per-job hand-off of a few bytes
// makes no file only to delete it (each job created and unlinked one, and on ext4 each
// new inode then searches past the ones freed recently: a cost that grew with the jobs
// run, BENCHMARKS.md).
//
// Thread-safety: a FetchSink belongs to the transport's thread (the loop); a
// ReceivedInMemory is shared by the loop (put) and the worker (take), under its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include "promises/digest.h"
#include "promises/status.h"
#include "transport/stream.h"

namespace vow::agent {

// Largest artifact kept in memory while it arrives.
inline constexpr std::size_t kInMemoryFetchBytes = 64 << 10;
// Received artifacts waiting for the worker, at most (a bound on memory should some
// never be taken: a fetch cancelled after it completed). Past it the oldest is dropped,
// and storing it fails like a lost file: the fetch is tried again.
inline constexpr std::size_t kMaxInMemoryReceived = 1024;

class ReceivedInMemory {
 public:
  void put(const Digest& digest, std::string bytes);
  // The bytes received for DIGEST, removed; nullopt if none are held.
  std::optional<std::string> take(const Digest& digest);
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<Digest, std::pair<std::uint64_t, std::string>> bytes_;  // with arrival no.
  std::uint64_t next_ = 0;
};

// The transport's sink for one fetch of DIGEST: in memory up to kInMemoryFetchBytes
// (finish() hands the bytes to RECEIVED), else in the file PATH (finish() leaves it for
// the store to adopt).
std::unique_ptr<transport::ChunkSink> make_fetch_sink(std::string path, const Digest& digest,
                                                      ReceivedInMemory* received);

}  // namespace vow::agent
