// Plan wire format: see plan_wire.h and herald_tf/scheduler/plan_codec.py.
#include "kernels/scheduler/plan_wire.h"

#include <string.h>

#include <algorithm>

namespace herald {
namespace sched {
namespace {

constexpr int64_t kMagic = 0x324e4c50444c5248;  // "HRLDPLN2", little-endian
// Header: magic, step, rank, digest, checksum, fields, flags, then the sizes of the sent
// arrays: 6 int64 (keys, flush keys, drop keys, write-back keys, pull versions, push keys),
// 5 int32 (key slots, flush slots, write-back slots, install destinations, samples) and 5
// position arrays (occurrences, pulls, inits, locals, installs).
constexpr int kFixed = 7;
constexpr int kWide = 6;
constexpr int kNarrow = 5;
constexpr int kPositions = 5;
constexpr int kHeader = kFixed + kWide + kNarrow + kPositions;
constexpr int64_t kPushIsRest = 1;     // push keys = keys not applied locally (not sent)
constexpr int64_t kWidePositions = 2;  // positions are int32 (>= 65,536 keys), else uint16
constexpr int64_t kMaxEntries = int64_t{1} << 40;

// Subset lists sent as positions into keys: (keys list, slots list).
constexpr int kSubsets[4][2] = {
    {HERALD_SCHED_PULL_KEYS, HERALD_SCHED_PULL_SLOTS},
    {HERALD_SCHED_INIT_KEYS, HERALD_SCHED_INIT_SLOTS},
    {HERALD_SCHED_LOCAL_KEYS, HERALD_SCHED_LOCAL_SLOTS},
    {HERALD_SCHED_INSTALL_KEYS, HERALD_SCHED_INSTALL_SRC},
};

template <typename T>
uint8_t* Put(uint8_t* p, T v) {
  memcpy(p, &v, sizeof(T));
  return p + sizeof(T);
}

template <typename T>
T Get(const uint8_t* p, int64_t i) {
  T v;
  memcpy(&v, p + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

// The header of a blob, checked against the expected stamp and the blob's length.
struct Layout {
  int64_t h[kHeader];
  const int64_t* wide() const { return h + kFixed; }
  const int64_t* narrow() const { return h + kFixed + kWide; }
  const int64_t* positions() const { return h + kFixed + kWide + kNarrow; }
  int64_t position_bytes() const { return (h[6] & kWidePositions) ? 4 : 2; }
  const uint8_t* wide_data = nullptr;
  const uint8_t* narrow_data = nullptr;
  const uint8_t* position_data = nullptr;
};

int Parse(const uint8_t* blob, int64_t length, const HeraldPlanStamp& expect, Layout* l,
          HeraldStatus* st) {
  if (blob == nullptr || length < 8 * kHeader) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected a plan of at least %d bytes. Received: %lld bytes for step %lld, "
                     "rank %lld", 8 * kHeader, static_cast<long long>(length),
                     static_cast<long long>(expect.step), static_cast<long long>(expect.rank));
  }
  memcpy(l->h, blob, sizeof(l->h));
  const int64_t* h = l->h;
  if (h[0] != kMagic) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected an encoded plan. Received: %lld other bytes",
                     static_cast<long long>(length));
  }
  if (h[1] != expect.step || h[2] != expect.rank) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected the plan of step %lld, rank %lld. Received: the plan of step "
                     "%lld, rank %lld", static_cast<long long>(expect.step),
                     static_cast<long long>(expect.rank), static_cast<long long>(h[1]),
                     static_cast<long long>(h[2]));
  }
  if (h[3] != expect.digest) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected a plan made under this worker's scheduler configuration. "
                     "Received: one made under another (digest %#llx, this worker %#llx); every "
                     "worker must run the same mode, batch size, cache, allocation and table",
                     static_cast<unsigned long long>(h[3]),
                     static_cast<unsigned long long>(expect.digest));
  }
  if (h[4] != expect.checksum) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected the plan of this worker's global batch of step %lld. Received: "
                     "one for a batch with other keys; every worker must read the same data in "
                     "the same order", static_cast<long long>(expect.step));
  }
  int64_t wide = 0, narrow = 0, positions = 0;
  for (int i = kFixed; i < kHeader; ++i) {
    if (h[i] < 0 || h[i] > kMaxEntries) {
      return SetStatus(st, HERALD_INVALID_ARGUMENT,
                       "Expected plan array sizes in [0, 2**40]. Received: %lld",
                       static_cast<long long>(h[i]));
    }
  }
  for (int i = 0; i < kWide; ++i) wide += l->wide()[i];
  for (int i = 0; i < kNarrow; ++i) narrow += l->narrow()[i];
  for (int i = 0; i < kPositions; ++i) positions += l->positions()[i];
  const int64_t bytes = 8 * kHeader + 8 * wide + 4 * narrow + l->position_bytes() * positions;
  const int64_t n = l->wide()[0];
  const int64_t fields = h[5];
  const int64_t samples = l->narrow()[4];
  const bool consistent =
      l->narrow()[0] == n && l->narrow()[1] == l->wide()[1] && l->narrow()[2] == l->wide()[3] &&
      l->narrow()[3] == l->positions()[4] && l->wide()[4] == l->positions()[1] &&
      fields >= 0 && fields < (int64_t{1} << 30) && samples < (int64_t{1} << 31) &&
      l->positions()[0] == samples * fields &&
      l->positions()[3] <= n && ((h[6] & kPushIsRest) == 0 || l->wide()[5] == 0) &&
      (h[6] & ~(kPushIsRest | kWidePositions)) == 0;
  if (bytes != length || !consistent) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected %lld consistent plan bytes. Received: %lld (step %lld, rank %lld)",
                     static_cast<long long>(bytes), static_cast<long long>(length),
                     static_cast<long long>(expect.step), static_cast<long long>(expect.rank));
  }
  l->wide_data = blob + 8 * kHeader;
  l->narrow_data = l->wide_data + 8 * wide;
  l->position_data = l->narrow_data + 4 * narrow;
  return SetOk(st);
}

void Sizes(const Layout& l, int64_t* sizes) {
  const int64_t* w = l.wide();
  const int64_t* p = l.positions();
  const int64_t n = w[0];
  sizes[HERALD_SCHED_KEYS] = sizes[HERALD_SCHED_KEY_SLOTS] = n;
  sizes[HERALD_SCHED_FLUSH_KEYS] = sizes[HERALD_SCHED_FLUSH_SLOTS] = w[1];
  sizes[HERALD_SCHED_PULL_KEYS] = sizes[HERALD_SCHED_PULL_SLOTS] = p[1];
  sizes[HERALD_SCHED_PULL_VERSIONS] = w[4];
  sizes[HERALD_SCHED_INIT_KEYS] = sizes[HERALD_SCHED_INIT_SLOTS] = p[2];
  sizes[HERALD_SCHED_LOCAL_KEYS] = sizes[HERALD_SCHED_LOCAL_SLOTS] = p[3];
  sizes[HERALD_SCHED_PUSH_KEYS] = (l.h[6] & kPushIsRest) ? n - p[3] : w[5];
  sizes[HERALD_SCHED_DROP_KEYS] = w[2];
  sizes[HERALD_SCHED_WRITEBACK_KEYS] = sizes[HERALD_SCHED_WRITEBACK_SLOTS] = w[3];
  sizes[HERALD_SCHED_INSTALL_KEYS] = sizes[HERALD_SCHED_INSTALL_SRC] = p[4];
  sizes[HERALD_SCHED_INSTALL_DST] = p[4];
  sizes[HERALD_SCHED_OCCURRENCE_SLOTS] = p[0];
  sizes[HERALD_SCHED_NUM_LISTS] = l.narrow()[4];
  sizes[HERALD_SCHED_NUM_LISTS + 1] = l.h[5];
}

}  // namespace

int PlanEncoder::Encode(const PlanList* lists, int64_t num_fields, const int64_t* samples,
                        int64_t num_samples, const HeraldPlanStamp& stamp, uint8_t* out,
                        int64_t capacity, int64_t* size_out, HeraldStatus* st) {
  const PlanList& keys = lists[HERALD_SCHED_KEYS];
  const PlanList& key_slots = lists[HERALD_SCHED_KEY_SLOTS];
  const PlanList& occurrences = lists[HERALD_SCHED_OCCURRENCE_SLOTS];
  const int64_t n = static_cast<int64_t>(keys.size());
  const int64_t total_slots = static_cast<int64_t>(position_of_slot_.size());
  if (static_cast<int64_t>(key_slots.size()) != n ||
      static_cast<int64_t>(occurrences.size()) != num_samples * num_fields) {
    return SetStatus(st, HERALD_INTERNAL, "Expected a plan of %lld keys and slots and %lld "
                     "occurrences. Received: %zu slots, %zu occurrences",
                     static_cast<long long>(n), static_cast<long long>(num_samples * num_fields),
                     key_slots.size(), occurrences.size());
  }
  const int paired[][2] = {
      {HERALD_SCHED_PULL_KEYS, HERALD_SCHED_PULL_SLOTS},
      {HERALD_SCHED_PULL_KEYS, HERALD_SCHED_PULL_VERSIONS},
      {HERALD_SCHED_INIT_KEYS, HERALD_SCHED_INIT_SLOTS},
      {HERALD_SCHED_LOCAL_KEYS, HERALD_SCHED_LOCAL_SLOTS},
      {HERALD_SCHED_INSTALL_KEYS, HERALD_SCHED_INSTALL_SRC},
      {HERALD_SCHED_INSTALL_KEYS, HERALD_SCHED_INSTALL_DST},
      {HERALD_SCHED_FLUSH_KEYS, HERALD_SCHED_FLUSH_SLOTS},
      {HERALD_SCHED_WRITEBACK_KEYS, HERALD_SCHED_WRITEBACK_SLOTS},
  };
  for (const auto& pair : paired) {
    if (lists[pair[0]].size() != lists[pair[1]].size()) {
      return SetStatus(st, HERALD_INTERNAL, "Expected plan lists %d and %d of one length. "
                       "Received: %zu and %zu", pair[0], pair[1], lists[pair[0]].size(),
                       lists[pair[1]].size());
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = key_slots[i];
    if (s < 0 || s >= total_slots) {
      return SetStatus(st, HERALD_INTERNAL, "Expected read slots in [0, %lld). Received: %lld",
                       static_cast<long long>(total_slots), static_cast<long long>(s));
    }
    position_of_slot_[s] = static_cast<int32_t>(i);
  }
  // The position of a read slot's key; a stale map entry points at a key read elsewhere.
  auto position = [&](int64_t slot, int64_t* pos) {
    if (slot < 0 || slot >= total_slots) return false;
    const int64_t p = position_of_slot_[slot];
    *pos = p;
    return p >= 0 && p < n && key_slots[p] == slot;
  };
  int64_t counts[kPositions] = {static_cast<int64_t>(occurrences.size())};
  for (int k = 0; k < 4; ++k) counts[k + 1] = static_cast<int64_t>(lists[kSubsets[k][0]].size());
  positions_.resize(counts[0] + counts[1] + counts[2] + counts[3] + counts[4]);
  int64_t* pos = positions_.data();
  for (int64_t i = 0; i < counts[0]; ++i) {
    if (!position(occurrences[i], pos++)) {
      return SetStatus(st, HERALD_INTERNAL, "Expected every occurrence's slot to be the read "
                       "slot of one of the plan's keys. Received: slot %lld",
                       static_cast<long long>(occurrences[i]));
    }
  }
  is_local_.assign(n, 0);
  for (int k = 0; k < 4; ++k) {
    const PlanList& list_keys = lists[kSubsets[k][0]];
    const PlanList& list_slots = lists[kSubsets[k][1]];
    for (size_t i = 0; i < list_keys.size(); ++i) {
      if (!position(list_slots[i], pos) || keys[*pos] != list_keys[i]) {
        return SetStatus(st, HERALD_INTERNAL, "Expected the rows a plan pulls, initialises, "
                         "applies and installs to be rows it reads at their read slots. "
                         "Received: key %lld at slot %lld", static_cast<long long>(list_keys[i]),
                         static_cast<long long>(list_slots[i]));
      }
      if (kSubsets[k][0] == HERALD_SCHED_LOCAL_KEYS) is_local_[*pos] = 1;
      ++pos;
    }
  }
  const PlanList& push = lists[HERALD_SCHED_PUSH_KEYS];
  bool push_is_rest = true;
  size_t j = 0;
  for (int64_t i = 0; i < n && push_is_rest; ++i) {
    if (is_local_[i]) continue;
    push_is_rest = j < push.size() && push[j] == keys[i];
    ++j;
  }
  push_is_rest = push_is_rest && j == push.size();
  int64_t flags = push_is_rest ? kPushIsRest : 0;
  if (n >= (int64_t{1} << 16)) flags |= kWidePositions;

  const PlanList* wide[kWide] = {&keys, &lists[HERALD_SCHED_FLUSH_KEYS],
                                 &lists[HERALD_SCHED_DROP_KEYS],
                                 &lists[HERALD_SCHED_WRITEBACK_KEYS],
                                 &lists[HERALD_SCHED_PULL_VERSIONS], &push};
  const PlanList* narrow[kNarrow - 1] = {&key_slots, &lists[HERALD_SCHED_FLUSH_SLOTS],
                                         &lists[HERALD_SCHED_WRITEBACK_SLOTS],
                                         &lists[HERALD_SCHED_INSTALL_DST]};
  int64_t header[kHeader] = {kMagic, stamp.step, stamp.rank, stamp.digest, stamp.checksum,
                             num_fields, flags};
  int64_t bytes = 8 * kHeader;
  for (int i = 0; i < kWide; ++i) {
    header[kFixed + i] = (i == kWide - 1 && push_is_rest) ? 0 : wide[i]->size();
    bytes += 8 * header[kFixed + i];
  }
  for (int i = 0; i < kNarrow - 1; ++i) {
    header[kFixed + kWide + i] = narrow[i]->size();
    bytes += 4 * header[kFixed + kWide + i];
  }
  header[kFixed + kWide + kNarrow - 1] = num_samples;
  bytes += 4 * num_samples;
  const int64_t position_bytes = (flags & kWidePositions) ? 4 : 2;
  for (int i = 0; i < kPositions; ++i) header[kFixed + kWide + kNarrow + i] = counts[i];
  bytes += position_bytes * static_cast<int64_t>(positions_.size());
  *size_out = bytes;
  if (out == nullptr || capacity < bytes) {
    return SetStatus(st, HERALD_OUT_OF_RANGE, "Expected an output of at least %lld bytes. "
                     "Received: %lld", static_cast<long long>(bytes),
                     static_cast<long long>(capacity));
  }
  uint8_t* p = out;
  memcpy(p, header, sizeof(header));
  p += sizeof(header);
  for (int i = 0; i < kWide; ++i) {
    const int64_t count = header[kFixed + i];
    if (count) memcpy(p, wide[i]->data(), 8 * count);
    p += 8 * count;
  }
  // Slots and sample indices are below 2**31 (the configuration's bound on slots per worker).
  for (int i = 0; i < kNarrow - 1; ++i) {
    for (int64_t v : *narrow[i]) p = Put(p, static_cast<int32_t>(v));
  }
  for (int64_t i = 0; i < num_samples; ++i) p = Put(p, static_cast<int32_t>(samples[i]));
  if (flags & kWidePositions) {
    for (int64_t v : positions_) p = Put(p, static_cast<int32_t>(v));
  } else {
    for (int64_t v : positions_) p = Put(p, static_cast<uint16_t>(v));
  }
  return SetOk(st);
}

int DecodedSizes(const uint8_t* blob, int64_t length, const HeraldPlanStamp& expect,
                 int64_t* sizes_out, HeraldStatus* st) {
  Layout l;
  const int code = Parse(blob, length, expect, &l, st);
  if (code != HERALD_OK) return code;
  Sizes(l, sizes_out);
  return SetOk(st);
}

int Decode(const uint8_t* blob, int64_t length, const HeraldPlanStamp& expect, int64_t* out,
           int64_t capacity, HeraldStatus* st) {
  Layout l;
  const int code = Parse(blob, length, expect, &l, st);
  if (code != HERALD_OK) return code;
  int64_t sizes[HERALD_SCHED_NUM_LISTS + 2];
  Sizes(l, sizes);
  int64_t* at[HERALD_SCHED_NUM_LISTS + 1];
  int64_t total = 0;
  for (int i = 0; i <= HERALD_SCHED_NUM_LISTS; ++i) {
    at[i] = out + total;
    total += sizes[i];
  }
  if (out == nullptr || capacity < total) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT, "Expected an output of at least %lld "
                     "entries. Received: %lld", static_cast<long long>(total),
                     static_cast<long long>(capacity));
  }
  const int64_t n = l.wide()[0];
  // int64 arrays as sent
  const int wide_lists[kWide] = {HERALD_SCHED_KEYS, HERALD_SCHED_FLUSH_KEYS,
                                 HERALD_SCHED_DROP_KEYS, HERALD_SCHED_WRITEBACK_KEYS,
                                 HERALD_SCHED_PULL_VERSIONS, HERALD_SCHED_PUSH_KEYS};
  const uint8_t* p = l.wide_data;
  for (int i = 0; i < kWide; ++i) {
    const int64_t count = l.wide()[i];
    if (count) memcpy(at[wide_lists[i]], p, 8 * count);
    p += 8 * count;
  }
  const int narrow_lists[kNarrow] = {HERALD_SCHED_KEY_SLOTS, HERALD_SCHED_FLUSH_SLOTS,
                                     HERALD_SCHED_WRITEBACK_SLOTS, HERALD_SCHED_INSTALL_DST,
                                     HERALD_SCHED_NUM_LISTS /* samples */};
  p = l.narrow_data;
  for (int i = 0; i < kNarrow; ++i) {
    int64_t* dst = at[narrow_lists[i]];
    for (int64_t k = 0; k < l.narrow()[i]; ++k) dst[k] = Get<int32_t>(p, k);
    p += 4 * l.narrow()[i];
  }
  const int64_t* keys = at[HERALD_SCHED_KEYS];
  const int64_t* key_slots = at[HERALD_SCHED_KEY_SLOTS];
  const bool wide_positions = (l.h[6] & kWidePositions) != 0;
  int64_t next = 0;  // positions read so far
  auto read_position = [&](int64_t* pos) {
    const int64_t v = wide_positions ? Get<int32_t>(l.position_data, next)
                                     : Get<uint16_t>(l.position_data, next);
    ++next;
    *pos = v;
    return v >= 0 && v < n;
  };
  int64_t pos = 0;
  int64_t* occurrence = at[HERALD_SCHED_OCCURRENCE_SLOTS];
  for (int64_t i = 0; i < l.positions()[0]; ++i) {
    if (!read_position(&pos)) break;
    occurrence[i] = key_slots[pos];
  }
  std::vector<uint8_t> is_local;
  bool ok = next == l.positions()[0];
  const bool push_is_rest = (l.h[6] & kPushIsRest) != 0;
  if (push_is_rest) is_local.assign(n, 0);
  for (int k = 0; k < 4 && ok; ++k) {
    int64_t* list_keys = at[kSubsets[k][0]];
    int64_t* list_slots = at[kSubsets[k][1]];
    for (int64_t i = 0; i < sizes[kSubsets[k][0]] && ok; ++i) {
      ok = read_position(&pos);
      if (!ok) break;
      list_keys[i] = keys[pos];
      list_slots[i] = key_slots[pos];
      if (push_is_rest && kSubsets[k][0] == HERALD_SCHED_LOCAL_KEYS) {
        ok = !is_local[pos];  // distinct local rows, so that the rest has the size announced
        is_local[pos] = 1;
      }
    }
  }
  if (!ok) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT, "Expected positions into the plan's %lld "
                     "keys (distinct for local rows). Received: others (step %lld, rank %lld)",
                     static_cast<long long>(n), static_cast<long long>(expect.step),
                     static_cast<long long>(expect.rank));
  }
  if (push_is_rest) {
    int64_t* push = at[HERALD_SCHED_PUSH_KEYS];
    for (int64_t i = 0; i < n; ++i) {
      if (!is_local[i]) *push++ = keys[i];
    }
  }
  return SetOk(st);
}

int64_t BatchChecksum(const int64_t* keys, int64_t rows, int64_t cols) {
  // unsigned arithmetic wraps modulo 2^64 by definition. Key i is mixed by an xor-shift (a
  // bijection) and weighted by (2i + 1) * kGolden: odd, distinct, one multiply per key.
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  uint64_t sums[4] = {0, 0, 0, 0};  // independent chains, so the multiplies overlap
  uint64_t weight = kGolden;        // (2i + 1) * kGolden for i = 0
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (uint64_t j = 0; j < 4; ++j) {
      const uint64_t x = static_cast<uint64_t>(keys[i + j]);
      sums[j] += (x ^ (x >> 29)) * weight;
      weight += 2 * kGolden;
    }
  }
  for (; i < n; ++i) {
    const uint64_t x = static_cast<uint64_t>(keys[i]);
    sums[0] += (x ^ (x >> 29)) * weight;
    weight += 2 * kGolden;
  }
  uint64_t h = sums[0] + sums[1] + sums[2] + sums[3];
  for (const uint64_t d : {static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)}) {
    h = h * 0x94D049BB133111EBull + d + 1;
  }
  return static_cast<int64_t>(h);
}

}  // namespace sched
}  // namespace herald
