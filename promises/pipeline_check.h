// The meaning checks of a pipeline, past its syntax, shared by the TOML parser
// (config.h) and the canonical decoder (parse_canonical_pipeline): names are
// identifiers, no duplicates, every input resolves, foreach and root name inputs, the stages
// form a DAG. On success it puts the stages in topological order and fills the digests.
//
// PipelineSpans says where each checked part was written so errors point at it; a
// decoded pipeline has no text, and missing spans fall back to Stage::where.
//
// Free functions over values; thread-safe.
#pragma once

#include <vector>

#include "promises/pipeline.h"

namespace vow::promises {

// Where the parts of one stage were written (parallel to the Stage's fields).
struct StageSpans {
  Location name;
  std::vector<Location> inputs;   // parallel to Stage::inputs
  std::vector<Location> outputs;  // parallel to Stage::outputs
  Location foreach;
  Location root;
};

struct PipelineSpans {
  Location name;
  std::vector<Location> sources;   // the name of each Source, parallel to Pipeline::sources
  std::vector<StageSpans> stages;  // parallel to Pipeline::stages (as written)
  bool name_reported = false;      // the name was missing, and that is already reported
};

// Appends one diagnostic per problem found. Returns true, with `pipeline`'s stages
// sorted topologically (file order among stages that do not depend on each other) and
// its digests filled, when there was none; otherwise leaves the order as it was.
bool check_pipeline(Pipeline& pipeline, const PipelineSpans& spans,
                    std::vector<Diagnostic>& errors);

}  // namespace vow::promises
