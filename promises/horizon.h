// The ledger horizon (docs/storage.md, "The ledger horizon"): which statements behind a
// cut are finished with, as a pure function of the statements at or below the cut, so
// that every agent holding them computes the same proposal and can endorse it.
//
// A job is settled at a cut when, among its statements at or below the cut, a bound
// successful result stands (bound as ClaimBook reads it, with only statements at or
// below the cut: a claim that names one above the cut earns nothing). Its bound
// successful results are settled (they stay, and count without their claims from then
// on); its other statements at epochs up to the highest settled one (claims whose run
// ended behind the cut, releases, failed or unbound results, accepts) are retired. Statements at higher epochs (a
// regeneration under way) and every statement of an unsettled job stay, as do adverts,
// pipeline definitions, source versions, retries and horizons.
#pragma once

#include <cstddef>
#include <cstdint>

#include "promises/ledger.h"
#include "promises/statement.h"

namespace vow::promises {

// The proposal of horizon `number` (after the one whose content is `previous`) at `cut`
// (per author, a seq at or below its contiguous mark here and at or above its floor).
// Its content digest is set. nullopt if `cut` is not within those bounds.
//
// With `superseded`, it also retires every statement behind the cut of each settled job
// that is superseded: its stage's jobs are fixed by the plan made from the statements at
// the cut (the stage is planned or done there) and that plan does not have it, and no
// claim of it is still open at the cut, and it was superseded at the last horizon's cut
// already. Its results go too: the plan at the cut names no job that consumes them
// (docs/storage.md, "Superseded jobs"). `superseded_waiting`, if given, is set when a
// superseded job stays for the next horizon to retire (superseded only since the last
// horizon's cut).
std::optional<Horizon> compute_horizon(const Ledger& ledger, const VersionVector& cut,
                                       std::uint64_t number, const Digest& previous,
                                       bool superseded = false,
                                       bool* superseded_waiting = nullptr);

// The checkpoint form of `delta` (docs/storage.md, "Checkpoints"), a proposal this
// ledger computed (compute_horizon) at a cut that names every author with a floor here:
// the same number, previous and cut, with lists stating everything the chain leaves
// once `delta` applies: `retired` every slot behind the cut not kept (the horizon
// statements there among them), `settled` every settled result kept, `bases` every line
// base. Applied to this ledger it leaves what `delta` would, less the earlier horizon
// statements; applied to a ledger without the horizons before it, the same. Its cost is
// the statements held, not the slots behind the cut. nullopt if an author with a floor
// here is not cut, or a list would be over kMaxCheckpointEntries.
std::optional<Horizon> checkpoint_of(const Ledger& ledger, const Horizon& delta);

// Statements a proposal retires (the lengths of its ranges).
std::uint64_t horizon_retired_statements(const Horizon& h);

}  // namespace vow::promises
