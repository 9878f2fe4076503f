// Small outputs' bytes kept in memory for a while (docs/coordination.md, "Small outputs
// travel with their result"): the own ones from a run's collect until its result is
// sent, and peers' from their results until a fetch takes them or newer ones push them
// out. Bounded by count and by bytes; the oldest go first.
//
// Not thread-safe: used from the event-loop thread.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

#include "promises/digest.h"

namespace vow::agent {

class AttachedBytes {
 public:
  AttachedBytes(std::size_t max_items, std::size_t max_bytes)
      : max_items_(max_items), max_bytes_(max_bytes) {}
  // Keeps BYTES for DIGEST (replacing what it held for it), dropping the oldest past the
  // bounds.
  void put(const Digest& digest, std::string bytes);
  // The bytes held for DIGEST, forgotten here; nullopt if none are.
  std::optional<std::string> take(const Digest& digest);
  bool has(const Digest& digest) const { return held_.count(digest) != 0; }
  bool empty() const { return held_.empty(); }
  std::size_t size() const { return held_.size(); }
  std::size_t bytes() const { return bytes_; }
  std::size_t order_entries() const { return order_.size(); }  // for tests: the bound

 private:
  struct Held {
    std::string bytes;
    std::uint64_t no = 0;  // its order of arrival
  };
  std::size_t max_items_;
  std::size_t max_bytes_;
  std::unordered_map<Digest, Held> held_;
  std::deque<std::pair<Digest, std::uint64_t>> order_;  // oldest first; stale entries skipped
  std::uint64_t next_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace vow::agent
