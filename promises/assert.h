// VOW_ASSERT: checks for bugs (never for bad input). Stays on in release builds, prints
// the failed condition, where it is, and a printf-style message with the values
// involved, then aborts. Wire data and config are validated where they enter and
// rejected with a Status instead.
//
//   VOW_ASSERT(seq > last_seq, "own sequence went backwards: %llu <= %llu", seq, last);
#pragma once

#include <cstdio>
#include <cstdlib>

#define VOW_ASSERT(cond, fmt, ...)                                                       \
  do {                                                                                   \
    if (!(cond)) [[unlikely]] {                                                          \
      std::fprintf(stderr, "vow: bug: %s:%d: assertion failed: %s: " fmt "\n", __FILE__, \
                   __LINE__, #cond __VA_OPT__(, ) __VA_ARGS__);                          \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
