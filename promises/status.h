// Status and Result: the error currency of every vow layer.
//
// Expected failures (bad input, missing data, a peer that went away) are returned
// as values, never thrown. Each kind maps to one recovery the caller can take:
//   kInvalid      the input is wrong: report it to whoever supplied it, change nothing
//   kNotFound     the thing asked for does not exist (here): look elsewhere or give up
//   kCorrupt      stored or received bytes fail verification: discard, fetch again
//   kUnavailable  a resource (disk, peer, socket) failed: retry later, with backoff
//   kOverloaded   a named limit was reached: back off or drop, as the caller's policy says
//   kIo           an operating-system call failed (errno in the message): usually fatal
//                 for that operation, retry only if the caller knows it is transient
// Bugs are not Statuses: they abort through VOW_ASSERT (assert.h).
//
// Value types; thread-compatible (no shared state).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace vow {

enum class StatusCode { kOk = 0, kInvalid, kNotFound, kCorrupt, kUnavailable, kOverloaded, kIo };

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  static Status invalid(std::string m) { return {StatusCode::kInvalid, std::move(m)}; }
  static Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
  static Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status overloaded(std::string m) { return {StatusCode::kOverloaded, std::move(m)}; }
  static Status io(std::string m) { return {StatusCode::kIo, std::move(m)}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corrupt: artifact 3f2a...: digest mismatch"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace vow

// Early return of a failed Status (or Result) from a function returning Status.
#define VOW_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    auto vow_status_ = (expr);                    \
    if (!vow_status_.is_ok()) return vow_status_; \
  } while (0)
