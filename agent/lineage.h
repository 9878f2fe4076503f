// Where a result's inputs came from, for `vow lineage` (docs/cli.md): the statements
// one step upstream of a result, read from the ledger an agent holds. Pure: no I/O.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "promises/ledger.h"
#include "promises/statement.h"

namespace vow::agent {

// One edge of a lineage: the statement that made `digest`, which the result read as
// its input `input` ("name", or "name/entry" for an entry of a fan-in).
struct UpstreamEdge {
  const Statement* from = nullptr;
  std::string input;
  Digest digest;
};

class Upstream {
 public:
  // `canonical(job)`: the job's canonical result, or nullptr.
  Upstream(const promises::Ledger& ledger,
           std::function<const Statement*(const Digest&)> canonical);

  // The producers of `result`'s inputs. The result's bindings, else the accept of its
  // run (an older agent's): each binding that names one of its inputs, by the producer
  // it names when that statement is held and made the digest, else by digest. Without
  // bindings (an accept a horizon retired, a fan-in of more entries than a statement
  // lists): each input by digest, and an input no one made whole (a fan-in's directory)
  // by its entries.
  std::vector<UpstreamEdge> of(const Statement& result);

  // The statement that made `digest`: a canonical result that output it, else one that
  // output a tree holding it, else the newest source version of it (or holding it).
  // The index behind it is made on first need, once per Upstream.
  const Statement* made_by(const Digest& digest);

 private:
  const promises::Ledger& ledger_;
  std::function<const Statement*(const Digest&)> canonical_;
  std::optional<std::map<Digest, const Statement*>> index_;
};

}  // namespace vow::agent
