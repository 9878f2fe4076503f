#include "promises/claim_book.h"

#include <doctest/doctest.h>

#include <cstdint>

#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

const Digest kStage = blake2b("stage");
const Digest kJob = blake2b("job");

JobRef ref() {
  JobRef r;
  r.job = kJob;
  r.pipeline = "p";
  r.stage = "s";
  r.stage_digest = kStage;
  return r;
}

Statement advert(std::uint8_t author, std::uint64_t seq, bool promises) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  Advert a;
  if (promises) a.promises = {AdvertPromise{"p", "s", kStage, 1}};
  st.body = a;
  return st;
}

Statement claim(std::uint8_t author, std::uint64_t seq, std::uint32_t epoch,
                std::optional<StatementRef> supersedes = std::nullopt) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  st.body = Claim{ref(), epoch, 0, supersedes};
  return st;
}

Statement result(std::uint8_t author, std::uint64_t seq, std::uint32_t epoch, bool ok = true) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  JobResult r;
  r.job = ref();
  r.epoch = epoch;
  r.ok = ok;
  if (ok) r.outputs = {NamedArtifact{"out", ArtifactRef{blake2b("out"), false, 1, {}}}};
  st.body = r;
  return st;
}

struct Book {
  Ledger ledger;
  ClaimBook book{ledger, key(99)};
  void add(const Statement& st) {
    REQUIRE(ledger.add(st) == Ledger::AddResult::kNew);
    book.note(*ledger.get(st.author, st.seq));
  }
  ClaimBinding binding(std::uint8_t author, std::uint64_t seq) {
    return book.claim_binding(kJob, *ledger.get(key(author), seq));
  }
};

TEST_CASE("claim book: an epoch is earned from a bound claim at the one below") {
  Book b;
  b.add(advert(1, 1, true));
  b.add(advert(2, 1, true));
  b.add(advert(3, 1, false));
  b.add(claim(1, 2, 1));
  b.add(claim(2, 2, 2, StatementRef{key(1), 2}));  // a takeover naming its predecessor
  b.add(claim(2, 3, 9, StatementRef{key(2), 2}));  // a jump: names epoch 2, not 8
  b.add(claim(2, 4, UINT32_MAX));                  // chosen, names nothing
  b.add(claim(2, 5, 0));
  b.add(claim(1, 3, 1, StatementRef{key(2), 2}));  // epoch 1 names nothing
  b.add(claim(3, 2, 3, StatementRef{key(2), 2}));  // its stage is not promised
  CHECK(b.binding(1, 2) == ClaimBinding::kBound);
  CHECK(b.binding(2, 2) == ClaimBinding::kBound);
  CHECK(b.binding(2, 3) == ClaimBinding::kNotEarned);
  CHECK(b.binding(2, 4) == ClaimBinding::kNotEarned);
  CHECK(b.binding(2, 5) == ClaimBinding::kNotEarned);
  CHECK(b.binding(1, 3) == ClaimBinding::kNotEarned);
  CHECK(b.binding(3, 2) == ClaimBinding::kNotPromised);
  CHECK(b.book.max_epoch(kJob) == 2);
  REQUIRE(b.book.top_claim(kJob) != nullptr);
  CHECK(b.book.top_claim(kJob)->author == key(2));
  CHECK(b.book.claims(kJob).size() == 2);
}

TEST_CASE("claim book: a claim that arrives before its predecessor binds when it comes") {
  Book b;
  b.add(advert(1, 1, true));
  b.add(advert(2, 1, true));
  b.add(claim(2, 2, 2, StatementRef{key(1), 2}));
  CHECK(b.binding(2, 2) == ClaimBinding::kNotEarned);
  CHECK(b.book.max_epoch(kJob) == 0);
  b.add(claim(1, 2, 1));
  CHECK(b.binding(2, 2) == ClaimBinding::kBound);
  CHECK(b.book.max_epoch(kJob) == 2);
}

TEST_CASE("claim book: results bind to their author's claim at their epoch") {
  Book b;
  b.add(advert(1, 1, true));
  b.add(advert(2, 1, true));
  b.add(result(2, 2, 0));  // epoch 0, no claim: first in the min-register, if it counted
  b.add(result(2, 3, 1));  // no claim of its author at epoch 1
  CHECK(b.book.canonical(kJob) == nullptr);
  b.add(claim(1, 2, 1));
  b.add(result(1, 3, 1, /*ok=*/false));
  CHECK(b.book.failed_attempts(kJob) == 1);
  CHECK(b.book.canonical(kJob) == nullptr);
  b.add(claim(1, 4, 2, StatementRef{key(1), 2}));
  b.add(result(1, 5, 2));
  REQUIRE(b.book.canonical(kJob) != nullptr);
  CHECK(b.book.canonical(kJob)->author == key(1));
  CHECK(b.book.result_binding(kJob, *b.ledger.get(key(2), 2)) == ResultBinding::kNoClaim);
  CHECK(b.book.result_binding(kJob, *b.ledger.get(key(2), 3)) == ResultBinding::kNoClaim);
}

TEST_CASE("claim book: an advert given after a claim does not rewrite it") {
  Book b;
  b.add(advert(1, 1, true));
  b.add(claim(1, 2, 1));
  b.add(result(1, 3, 1));
  b.add(advert(1, 4, false));  // the promise is withdrawn later
  CHECK(b.binding(1, 2) == ClaimBinding::kBound);
  CHECK(b.book.canonical(kJob) != nullptr);
}

}  // namespace
}  // namespace vow::promises
