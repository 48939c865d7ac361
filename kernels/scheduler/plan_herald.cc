// Policy `herald` (reference: herald_tf/scheduler/policies/herald.py): the exact plan of
// DESIGN §3. Dirty rows are flushed before a step where another worker reads them or when
// evicted; private keys are applied locally by their user (who then owns them); shared keys are
// pushed by all users and applied once by the PS; stale copies are dropped.
#include <algorithm>
#include <vector>

#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

namespace {
constexpr size_t kAhead = 16;  // prefetch distance of the loops below

// c ? a : b without a branch (the mask is opaque, so the compiler cannot make it one).
inline int64_t* Pick(int64_t c, int64_t* a, int64_t* b) {
  uintptr_t mask = 0 - static_cast<uintptr_t>(c);
  asm("" : "+r"(mask));
  const uintptr_t pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return reinterpret_cast<int64_t*>(pb ^ ((pa ^ pb) & mask));
}
}  // namespace

// Steps 2 and 3a of one worker, without branches (the conditions do not predict well): each
// row's key is written once to the list it goes to (local or push), and once to pull or init;
// a held row's pull/init key and slot, and a row's pull version and local slot, are written at
// the end of a list that grows only where the row goes to it.
template <bool kEmit>
void Engine::HeraldReads(int32_t w) {
  const uint64_t bit = 1ULL << w;
  const std::vector<WorkerKey>& wk = wkeys_[w];
  const size_t m = wk.size();
  int64_t* out[HERALD_SCHED_PUSH_KEYS + 1] = {};
  if (kEmit) {
    for (int32_t l = HERALD_SCHED_PULL_KEYS; l <= HERALD_SCHED_PUSH_KEYS; ++l) {
      L(w, l).resize(m);  // empty before; trimmed below
      out[l] = L(w, l).data();
    }
  }
  std::vector<int32_t>& mine = private_[w];
  mine.resize(m + 1);
  int64_t pulls = 0, inits = 0, locals = 0, pushes = 0, state_pulls = 0;
  const uint64_t* users = lusers_.data();
  for (size_t i = 0; i < m; ++i) {
    const WorkerKey& x = wk[i];
    const int64_t absent = x.entry < 0 ? 1 : 0;
    const int64_t pulled = absent & (x.touched ? 1 : 0);
    const int64_t local = users[x.local] == bit ? 1 : 0;
    if (kEmit) {
      // Destinations first (selects, not branches), then one store each.
      int64_t* const key_to =
          Pick(local, out[HERALD_SCHED_LOCAL_KEYS] + locals, out[HERALD_SCHED_PUSH_KEYS] + pushes);
      int64_t* const read_key_to =
          Pick(pulled, out[HERALD_SCHED_PULL_KEYS] + pulls, out[HERALD_SCHED_INIT_KEYS] + inits);
      int64_t* const read_slot_to =
          Pick(pulled, out[HERALD_SCHED_PULL_SLOTS] + pulls, out[HERALD_SCHED_INIT_SLOTS] + inits);
      *key_to = x.key;
      *read_key_to = x.key;
      *read_slot_to = x.slot;
      out[HERALD_SCHED_PULL_VERSIONS][pulls] = x.version;
      out[HERALD_SCHED_LOCAL_SLOTS][locals] = x.slot;
    }
    mine[locals] = static_cast<int32_t>(i);
    pulls += pulled;
    inits += absent - pulled;
    state_pulls += pulled & local;  // applied here: state comes along
    locals += local;
    pushes += 1 - local;
  }
  if (kEmit) {
    const int64_t sizes[] = {pulls, pulls, pulls, inits, inits, locals, locals, pushes};
    for (int32_t l = HERALD_SCHED_PULL_KEYS; l <= HERALD_SCHED_PUSH_KEYS; ++l) {
      L(w, l).resize(sizes[l - HERALD_SCHED_PULL_KEYS]);
    }
  }
  mine.resize(locals);
  traffic_.pull_rows += pulls;
  traffic_.pull_state_rows += state_pulls;
  traffic_.push_rows += pushes;
}

void Engine::PlanHerald() {
  constexpr uint8_t kFlush = 1, kDrop = 2;
  const size_t unique = local_.size();
  // Per key, in LocalKey order (reads keys_ and local_ in sequence): the new owner and version
  // (3b below), and whether its dirty copy is flushed (1) and its copy dropped (3b). The flags
  // come from the snapshot: keys_ held the same holders and entry until this pass.
  flags_.resize(unique);
  for (size_t l = 0; l < unique; ++l) {
    if (l + kAhead < unique) __builtin_prefetch(&keys_[local_[l + kAhead].kidx]);
    const LocalKey& lk = local_[l];
    KeyState& ks = keys_[lk.kidx];
    const uint64_t owner_bit = lk.owner >= 0 ? 1ULL << lk.owner : 0;
    const bool flush = owner_bit != 0 && lk.users != owner_bit;
    const bool is_private = (lk.users & (lk.users - 1)) == 0;
    const uint64_t keep = is_private ? lk.users : 0;
    const bool drop = (lk.holders & ~keep) != 0;
    flags_[l] = static_cast<uint8_t>((flush ? kFlush : 0) | (drop ? kDrop : 0));
    ks.owner = static_cast<int8_t>(is_private ? __builtin_ctzll(lk.users) : -1);
    ks.holders = drop ? 0 : ks.holders;
    ks.entry = drop ? -1 : ks.entry;
    ks.version += 1;
    ks.touched = true;
  }
  // 2. Pull what is not held (held copies are always usable), initialise what is untouched.
  // 3a. After the backward pass: local update of private keys, push of shared ones.
  for (int32_t w = 0; w < n_; ++w) {
    if (Emits(w)) {
      HeraldReads<true>(w);
    } else {
      HeraldReads<false>(w);
    }
  }
  // 1 and 3b, in one pass over the rows flagged for either, in order_ (neither list depends on
  // the other, and 2/3a above read the snapshot, not the directories):
  // 1. Flush dirty rows that another worker reads at this step. Herald keeps at most one copy
  // of a row, and the key table snapshot has its slot. A flushed copy is also dropped (the key
  // is shared, or private to another worker), so its dirty bit needs no update.
  // 3b. A copy held elsewhere than at the key's only user is stale: drop it (owner and version
  // were updated above).
  // The rows are picked without branching on their data (a candidate is written, and counted
  // only where it qualifies).
  std::vector<int32_t>& picked = picked_;
  picked.resize(unique + 1);
  size_t flagged = 0;
  for (size_t i = 0; i < unique; ++i) {
    picked[flagged] = order_[i];
    flagged += flags_[order_[i]] != 0 ? 1 : 0;
  }
  size_t flushes = 0;
  for (size_t k = 0; k < flagged; ++k) {
    if (k + 2 * kAhead < flagged) {  // the local key whose entry is hinted kAhead rows later
      const char* later = reinterpret_cast<const char*>(&local_[picked[k + 2 * kAhead]]);
      __builtin_prefetch(later);
      __builtin_prefetch(later + sizeof(LocalKey) - 1);
    }
    if (k + kAhead < flagged) {
      const LocalKey& ahead = local_[picked[k + kAhead]];
      if (ahead.holders != 0) dirs_[__builtin_ctzll(ahead.holders)].PrefetchEntry(ahead.entry);
    }
    const LocalKey& lk = local_[picked[k]];
    const uint8_t f = flags_[picked[k]];
    if (f & kFlush) {
      Add(lk.owner, HERALD_SCHED_FLUSH_KEYS, lk.key);
      Add(lk.owner, HERALD_SCHED_FLUSH_SLOTS, lk.slot);
      ++flushes;
    }
    if (f & kDrop) {  // the only copy is stale: drop it
      const int32_t w = __builtin_ctzll(lk.holders);
      dirs_[w].Remove(lk.entry);
      Add(w, HERALD_SCHED_DROP_KEYS, lk.key);
    }
  }
  traffic_.flush_rows += static_cast<int64_t>(flushes);
  // 4. Private keys enter their user's directory (dirty); evict to capacity; write back.
  for (int32_t w = 0; w < n_; ++w) {
    Directory& dir = dirs_[w];
    const uint64_t bit = 1ULL << w;
    const std::vector<WorkerKey>& wk = wkeys_[w];
    const std::vector<int32_t>& mine = private_[w];  // positions in wk of its private keys
    // Keys new to the directory take recycled entries in turn: count them ahead of the loop.
    size_t inserted_ahead = 0;  // new keys among mine[0, k + kAhead)
    for (size_t k = 0; k < std::min(kAhead, mine.size()); ++k) {
      if (wk[mine[k]].entry < 0) dir.PrefetchInsertion(inserted_ahead++);
    }
    for (size_t k = 0; k < mine.size(); ++k) {
      if (k + kAhead < mine.size()) {
        const WorkerKey& y = wk[mine[k + kAhead]];
        if (y.entry < 0) {
          dir.PrefetchInsertion(inserted_ahead++);
        } else {
          dir.PrefetchEntry(y.entry);
        }
        __builtin_prefetch(&keys_[y.kidx]);
      }
      const WorkerKey& x = wk[mine[k]];
      // A private key's entry survived step 3b (only other workers' copies are dropped).
      const int32_t e = dir.TouchKnown(x.entry, x.key, x.kidx, step_, x.slot);
      dir.at(e).dirty = true;
      KeyState& ks = keys_[x.kidx];
      ks.holders = bit;
      ks.entry = e;
      // A held row keeps its slot (x.slot, the key table's); a new one has none until
      // AssignPending below.
      ks.slot = x.entry < 0 ? kPending : x.slot;
    }
    dir.EvictToCapacity([&](const DirEntry& d) {
      KeyState& ks = keys_[d.kidx];
      ks.holders = 0;
      ks.entry = -1;
      if (d.slot >= 0) Add(w, HERALD_SCHED_DROP_KEYS, d.key);
      if (d.dirty) {
        Add(w, HERALD_SCHED_WRITEBACK_KEYS, d.key);
        Add(w, HERALD_SCHED_WRITEBACK_SLOTS, d.slot >= 0 ? d.slot : d.staging);
        ++traffic_.flush_rows;
        ks.owner = -1;
      }
    });
    dir.AssignPending([&](const DirEntry& d) {
      keys_[d.kidx].slot = d.slot;
      Add(w, HERALD_SCHED_INSTALL_KEYS, d.key);
      Add(w, HERALD_SCHED_INSTALL_SRC, d.staging);
      Add(w, HERALD_SCHED_INSTALL_DST, d.slot);
    });
  }
}

}  // namespace sched
}  // namespace herald
