// TomlReader: typed, located reads from a toml++ document for the config parsers.
// Each getter returns the value when it is present and of the right type, and otherwise
// records a Diagnostic at the offending key or value (or at the table, for a missing
// key) and returns nullopt, so a parser reads on and reports every problem in one pass.
//
// toml++ throws on syntax errors; parse() catches that here, at the edge of this layer.
//
// Borrows the diagnostics vector it appends to; not thread-safe (one per parse).
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "promises/pipeline.h"

namespace vow::promises {

// A string read from a file and where it was written.
struct Located {
  std::string value;
  Location where;
};

// Where the first NUL byte of `text` is, if it has one (TOML allows none).
std::optional<Location> find_nul(std::string_view text, const std::string& file);

class TomlReader {
 public:
  TomlReader(std::string file, std::vector<Diagnostic>& errors)
      : file_(std::move(file)), errors_(errors) {}

  const std::string& file() const { return file_; }
  Location at(const toml::source_region& region) const;
  Location at(const toml::node& node) const { return at(node.source()); }
  void error(const Location& where, std::string message);

  // Parses a document; on a syntax error (or text over kMaxConfigBytes) records it and
  // returns nullopt.
  std::optional<toml::table> parse(std::string_view text);

  // Records every key of `table` that is not in `allowed`, suggesting a near one.
  // `what` names the table in messages ("[[stage]]").
  void check_keys(const toml::table& table, std::string_view what,
                  std::initializer_list<std::string_view> allowed);

  // The node at `key`; records a missing required key at the table.
  const toml::node* get(const toml::table& table, std::string_view key, std::string_view what,
                        bool required);

  std::optional<Located> string(const toml::table& t, std::string_view key, std::string_view what,
                                bool required);
  std::optional<std::vector<Located>> string_array(const toml::table& t, std::string_view key,
                                                   std::string_view what, bool required);
  // An integer in [min, max].
  std::optional<std::int64_t> integer(const toml::table& t, std::string_view key,
                                      std::string_view what, std::int64_t min, std::int64_t max);
  std::optional<bool> boolean(const toml::table& t, std::string_view key, std::string_view what);
  // A duration string, in milliseconds, at least 1ms.
  std::optional<std::int64_t> duration(const toml::table& t, std::string_view key,
                                       std::string_view what);

  // The table at `key`, or nullptr (recorded when required or of another type).
  const toml::table* table(const toml::table& root, std::string_view key, bool required);
  // The tables of an array of tables ([[key]]); records elements that are not tables.
  std::vector<const toml::table*> table_array(const toml::table& root, std::string_view key);

  // "a string", "an integer", ...
  static std::string type_name(const toml::node& node);

 private:
  void wrong_type(const toml::node& node, std::string_view key, std::string_view what,
                  std::string_view expected);

  std::string file_;
  std::vector<Diagnostic>& errors_;
};

}  // namespace vow::promises
