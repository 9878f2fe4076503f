// Human output of the command line: aligned tables, and colour only when stdout is a
// terminal (and NO_COLOR is unset). Not thread-safe (writes to std::cout).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vow::agent::cli {

using Row = std::vector<std::string>;

// Prints the header and rows with each column as wide as its widest cell; the header
// is bold on a terminal. Cells may hold colour codes from paint(): they are not counted.
void print_table(const Row& header, const std::vector<Row>& rows, int indent = 0);

enum class Colour { kGreen, kYellow, kRed, kDim, kBold };
// `text` wrapped in the colour's escape codes on a terminal, else unchanged.
std::string paint(const std::string& text, Colour colour);
// The colour of a job state: done green, running/ready yellow, failed red.
std::string paint_state(const std::string& state);

// `text` with every control character written as an escape (\n, \t, \r, \xHH) and
// each backslash doubled, so that a name (a shard is a file name, which may hold a
// newline) stays on its line and reads back unambiguously. print_table applies it to
// every cell; lines printed outside tables apply it to the names they show.
std::string escape_text(std::string_view text);

// A Graphviz DOT double-quoted string showing `text` as is when rendered: quotes and
// backslashes escaped (DOT would read "\n" as a line break, "\N" as the node's name),
// and a newline in `text` written as \n, which Graphviz renders as a line break.
// The one quoting of `vow graph --dot` and `vow lineage --dot`.
std::string dot_quote(std::string_view text);

std::string short_id(const std::string& hex_or_id, std::size_t n = 12);
// "1.2s", "350ms", "3m04s".
std::string human_ms(std::int64_t ms);
// "2026-11-25 10:04:05" (UTC) from Unix milliseconds; "-" for 0.
std::string human_time(std::int64_t unix_ms);
std::string human_bytes(std::uint64_t bytes);

}  // namespace vow::agent::cli
