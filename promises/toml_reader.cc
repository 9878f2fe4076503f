#include "promises/toml_reader.h"

#include <algorithm>

#include "promises/config.h"

namespace vow::promises {

Location TomlReader::at(const toml::source_region& region) const {
  return Location{file_, static_cast<int>(region.begin.line),
                  static_cast<int>(region.begin.column)};
}

void TomlReader::error(const Location& where, std::string message) {
  errors_.push_back({where, std::move(message)});
}

std::optional<Location> find_nul(std::string_view text, const std::string& file) {
  auto nul = text.find('\0');
  if (nul == std::string_view::npos) return std::nullopt;
  std::string_view before = text.substr(0, nul);
  auto line_start = before.rfind('\n');
  int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
  int column = static_cast<int>(line_start == std::string_view::npos ? nul + 1 : nul - line_start);
  return Location{file, line, column};
}

std::optional<toml::table> TomlReader::parse(std::string_view text) {
  if (text.size() > kMaxConfigBytes) {
    error({file_, 1, 1}, "file is larger than " + std::to_string(kMaxConfigBytes) + " bytes");
    return std::nullopt;
  }
  // TOML allows no NUL byte anywhere, and toml++ 3.3 trips an internal assertion on some
  // (e.g. after "[["), so they are refused before it sees them.
  if (auto nul = find_nul(text, file_)) {
    error(*nul, "TOML syntax error: NUL byte");
    return std::nullopt;
  }
  try {
    return toml::parse(text, std::string_view(file_));
  } catch (const toml::parse_error& e) {
    Location where = at(e.source());
    if (where.line == 0) where = {file_, 1, 1};
    error(where, "TOML syntax error: " + std::string(e.description()));
    return std::nullopt;
  }
}

std::string TomlReader::type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

void TomlReader::wrong_type(const toml::node& node, std::string_view key, std::string_view what,
                            std::string_view expected) {
  error(at(node), "'" + std::string(key) + "' in " + std::string(what) + " must be " +
                      std::string(expected) + ", not " + type_name(node));
}

void TomlReader::check_keys(const toml::table& table, std::string_view what,
                            std::initializer_list<std::string_view> allowed) {
  std::vector<std::string> names(allowed.begin(), allowed.end());
  for (auto&& [key, node] : table) {
    if (std::find(names.begin(), names.end(), key.str()) != names.end()) continue;
    auto best = closest_name(key.str(), names);
    Location where = at(key.source());
    if (where.line == 0) where = at(node);
    error(where, "unknown key '" + std::string(key.str()) + "' in " + std::string(what) +
                     (best ? " (did you mean '" + *best + "'?)" : ""));
  }
}

const toml::node* TomlReader::get(const toml::table& table, std::string_view key,
                                  std::string_view what, bool required) {
  const toml::node* node = table.get(key);
  if (!node && required) {
    error(at(table), "missing required key '" + std::string(key) + "' in " + std::string(what));
  }
  return node;
}

std::optional<Located> TomlReader::string(const toml::table& t, std::string_view key,
                                          std::string_view what, bool required) {
  const toml::node* node = get(t, key, what, required);
  if (!node) return std::nullopt;
  if (!node->is_string()) {
    wrong_type(*node, key, what, "a string");
    return std::nullopt;
  }
  return Located{node->as_string()->get(), at(*node)};
}

std::optional<std::vector<Located>> TomlReader::string_array(const toml::table& t,
                                                             std::string_view key,
                                                             std::string_view what, bool required) {
  const toml::node* node = get(t, key, what, required);
  if (!node) return std::nullopt;
  const toml::array* arr = node->as_array();
  if (!arr) {
    wrong_type(*node, key, what, "an array of strings");
    return std::nullopt;
  }
  std::vector<Located> out;
  bool ok = true;
  for (const toml::node& el : *arr) {
    if (!el.is_string()) {
      error(at(el), "'" + std::string(key) + "' in " + std::string(what) +
                        " must hold strings only, not " + type_name(el));
      ok = false;
      continue;
    }
    out.push_back({el.as_string()->get(), at(el)});
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::int64_t> TomlReader::integer(const toml::table& t, std::string_view key,
                                                std::string_view what, std::int64_t min,
                                                std::int64_t max) {
  const toml::node* node = get(t, key, what, false);
  if (!node) return std::nullopt;
  if (!node->is_integer()) {
    wrong_type(*node, key, what, "an integer");
    return std::nullopt;
  }
  std::int64_t v = node->as_integer()->get();
  std::string prefix = "'" + std::string(key) + "' in " + std::string(what) + " must be ";
  if (v < min) {
    error(at(*node), prefix + "at least " + std::to_string(min) + ", not " + std::to_string(v));
    return std::nullopt;
  }
  if (v > max) {
    error(at(*node), prefix + "at most " + std::to_string(max) + ", not " + std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<bool> TomlReader::boolean(const toml::table& t, std::string_view key,
                                        std::string_view what) {
  const toml::node* node = get(t, key, what, false);
  if (!node) return std::nullopt;
  if (!node->is_boolean()) {
    wrong_type(*node, key, what, "a boolean (true or false)");
    return std::nullopt;
  }
  return node->as_boolean()->get();
}

std::optional<std::int64_t> TomlReader::duration(const toml::table& t, std::string_view key,
                                                 std::string_view what) {
  const toml::node* node = get(t, key, what, false);
  if (!node) return std::nullopt;
  if (!node->is_string()) {
    wrong_type(*node, key, what, "a duration string like \"90s\"");
    return std::nullopt;
  }
  auto ms = parse_duration_ms(node->as_string()->get());
  std::string prefix = "'" + std::string(key) + "' in " + std::string(what);
  if (!ms) {
    error(at(*node), prefix + ": " + ms.status().message());
    return std::nullopt;
  }
  if (*ms == 0) {
    error(at(*node), prefix + " must be longer than 0");
    return std::nullopt;
  }
  return *ms;
}

const toml::table* TomlReader::table(const toml::table& root, std::string_view key, bool required) {
  const toml::node* node = root.get(key);
  if (!node) {
    if (required) error({file_, 1, 1}, "missing [" + std::string(key) + "] table");
    return nullptr;
  }
  if (!node->is_table()) {
    error(at(*node), "'" + std::string(key) + "' must be a table ([" + std::string(key) +
                         "]), not " + type_name(*node));
    return nullptr;
  }
  return node->as_table();
}

std::vector<const toml::table*> TomlReader::table_array(const toml::table& root,
                                                        std::string_view key) {
  std::vector<const toml::table*> out;
  const toml::node* node = root.get(key);
  if (!node) return out;
  const toml::array* arr = node->as_array();
  if (!arr) {
    error(at(*node), "'" + std::string(key) + "' must be an array of tables ([[" +
                         std::string(key) + "]]), not " + type_name(*node));
    return out;
  }
  for (const toml::node& el : *arr) {
    if (!el.is_table()) {
      error(at(el), "'" + std::string(key) + "' must hold tables ([[" + std::string(key) +
                        "]]), not " + type_name(el));
      continue;
    }
    out.push_back(el.as_table());
  }
  return out;
}

}  // namespace vow::promises
