#include "agent/cli/table.h"

#include <doctest/doctest.h>

#include <iostream>
#include <sstream>

namespace vow::agent::cli {
namespace {

// What Graphviz shows for a double-quoted DOT label: the lexer turns \" into " (and
// drops a backslash-newline); the label renderer then reads \n, \l, \r as line breaks,
// \\ as a backslash, and \N, \G, \E, \H, \T, \L as names it substitutes (marked here).
std::string rendered(const std::string& quoted) {
  REQUIRE(quoted.size() >= 2);
  REQUIRE(quoted.front() == '"');
  REQUIRE(quoted.back() == '"');
  std::string lexed;
  for (std::size_t i = 1; i + 1 < quoted.size(); ++i) {
    char c = quoted[i];
    REQUIRE_MESSAGE(c != '"', "an unescaped quote ends the string early: " << quoted);
    if (c == '\\' && quoted[i + 1] == '"') {
      lexed += '"';
      ++i;
    } else if (c == '\\' && quoted[i + 1] == '\n') {
      ++i;
    } else {
      lexed += c;
      if (c == '\\') lexed += quoted[++i];  // kept for the renderer
    }
  }
  std::string shown;
  for (std::size_t i = 0; i < lexed.size(); ++i) {
    if (lexed[i] != '\\' || i + 1 == lexed.size()) {
      shown += lexed[i];
      continue;
    }
    char e = lexed[++i];
    if (e == 'n' || e == 'l' || e == 'r') {
      shown += '\n';
    } else if (std::string("NGEHTL").find(e) != std::string::npos) {
      shown += "<name>";
    } else {
      shown += e;
    }
  }
  return shown;
}

std::string table_output(const Row& header, const std::vector<Row>& rows) {
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  print_table(header, rows);
  std::cout.rdbuf(old);
  return out.str();
}

}  // namespace

TEST_CASE("a DOT label renders as the text it was made from") {
  for (std::string text : {std::string("wordcount/count[part-aa]\njob 3f2a9c\nby b"),
                           std::string("say \"hi\""), std::string("C:\\dir\\N"),
                           std::string("ends with a backslash \\"), std::string("two\n\nbreaks")}) {
    CAPTURE(text);
    CHECK(rendered(dot_quote(text)) == text);
  }
  // A multi-line label has no literal escape left in it once rendered.
  std::string shown = rendered(dot_quote("count\njob abc"));
  CHECK(shown.find('\\') == std::string::npos);
}

TEST_CASE("names with control characters stay on their line, escaped") {
  CHECK(escape_text("part-aa") == "part-aa");
  CHECK(escape_text("a\nb") == "a\\nb");
  CHECK(escape_text("tab\there\r") == "tab\\there\\r");
  CHECK(escape_text(std::string("nul\0bell\a", 9)) == "nul\\x00bell\\x07");
  CHECK(escape_text("back\\slash") == "back\\\\slash");
  // A file literally named `a\nb` reads differently from one with a newline.
  CHECK(escape_text("a\\nb") != escape_text("a\nb"));
  CHECK(escape_text("näme") == "näme");

  std::string out = table_output(
      {"JOB", "STAGE"}, {{"3f2a9c", "wc/count[evil\nname]"}, {"4b1e00", "wc/count[fine]"}});
  CHECK(out ==
        "JOB     STAGE\n"
        "3f2a9c  wc/count[evil\\nname]\n"
        "4b1e00  wc/count[fine]\n");
}

}  // namespace vow::agent::cli
