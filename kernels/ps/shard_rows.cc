// Client-side row movement of the PS transport (see ps_api.h): the stable key -> shard partition
// (herald_tf/ps/sharding.py defines the function), a gather of rows that also finds non-finite
// values in the same pass, a socket send that gathers rows on the way, and a socket receive that
// lands rows at their places.
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <vector>

#include "kernels/core/initializer.h"
#include "kernels/core/scattered_rows.h"
#include "kernels/cpu/validate.h"
#include "kernels/ps/ps_api.h"

using herald::SetOk;
using herald::SetStatus;

namespace {

constexpr uint64_t kShardSalt = 0x5348415244484552ULL;  // "SHARDHER", as sharding.py

// h mod d without a division: exact for every 64-bit h and d > 0 (the direct remainder of Lemire,
// Kaser and Kurz, "Faster Remainder by Direct Computation", 2019, with 128-bit fractions:
// m = ceil(2^128 / d), h mod d = floor(((m * h) mod 2^128) * d / 2^128)). A 64-bit division per key
// was most of a partition's time.
class Remainder {
 public:
  explicit Remainder(uint64_t d) : m_(~static_cast<unsigned __int128>(0) / d + 1), d_(d) {}
  uint64_t operator()(uint64_t h) const {
    const unsigned __int128 fraction = m_ * h;
    const unsigned __int128 low =
        static_cast<unsigned __int128>(static_cast<uint64_t>(fraction)) * d_;
    const unsigned __int128 high =
        static_cast<unsigned __int128>(static_cast<uint64_t>(fraction >> 64)) * d_;
    return static_cast<uint64_t>((high + (low >> 64)) >> 64);
  }

 private:
  unsigned __int128 m_;
  uint64_t d_;
};

// Independent shard counters for consecutive keys: one counter per shard made every key wait for
// the previous increment of the same counter (every other key, with 2 shards).
constexpr int kCountLanes = 4;

// shard_of[i] = reduce(Mix64(keys[i] ^ salt)) and the keys counted per shard, key i in counter
// lane i % kCountLanes (counts: kCountLanes x num_shards). `reduce` is h mod num_shards: a mask for
// a power of two (faster still), else a Remainder.
template <typename Reduce>
void HashToShards(const int64_t* keys, int64_t n, int64_t num_shards, Reduce reduce,
                  int32_t* shard_of, int64_t* counts) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = static_cast<int32_t>(
        reduce(herald::Mix64(static_cast<uint64_t>(keys[i]) ^ kShardSalt)));
    shard_of[i] = s;
    ++counts[(i % kCountLanes) * num_shards + s];
  }
}

// After a recv or send that moved nothing (`result` <= 0): 0 to try again, having waited up to
// timeout_ms (< 0: no limit) for the socket to be ready for `events`, else the I/O outcome to
// report (-1: the peer closed, ETIMEDOUT, or the errno of the failed call).
int WaitForSocket(int fd, ssize_t result, short events, int64_t timeout_ms) {
  if (result == 0) return -1;
  if (errno == EINTR) return 0;
  if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
  struct pollfd p = {fd, events, 0};
  const int wait_ms = timeout_ms < 0 || timeout_ms > INT_MAX ? -1 : static_cast<int>(timeout_ms);
  const int ready = poll(&p, 1, wait_ms);
  if (ready == 0) return ETIMEDOUT;
  if (ready < 0 && errno != EINTR) return errno;
  return 0;
}

// A staging buffer of whole rows that stays in L2 (at least one row). On the 2-core Zen 5 machine
// 128 KiB beat 256 KiB in every round of alternating push and pull loops (2 % faster; 64 KiB and
// 1 MiB were slower).
int AllocateStage(int64_t row_bytes, std::vector<char>* stage, HeraldStatus* status) {
  constexpr int64_t kStageBytes = 128 << 10;
  const int64_t rows = kStageBytes > row_bytes ? kStageBytes / row_bytes : 1;
  try {
    stage->resize(static_cast<size_t>(rows * row_bytes));
  } catch (...) {
    return SetStatus(status, HERALD_INTERNAL, "Out of memory staging rows of %lld bytes",
                     static_cast<long long>(row_bytes));
  }
  return SetOk(status);
}

}  // namespace

extern "C" {

int herald_ps_partition(const int64_t* keys, int64_t n, int64_t num_shards, int64_t* order,
                        int64_t* offsets, HeraldStatus* status) {
  if (n < 0 || num_shards <= 0 || offsets == nullptr || (n > 0 && (keys == nullptr ||
                                                                    order == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected keys, n >= 0, num_shards > 0 and output buffers. Received: "
                     "n=%lld, num_shards=%lld",
                     static_cast<long long>(n), static_cast<long long>(num_shards));
  }
  std::vector<int32_t> shard_of;
  std::vector<int64_t> counts;
  try {
    shard_of.resize(static_cast<size_t>(n));
    counts.assign(static_cast<size_t>(kCountLanes * num_shards), 0);
  } catch (...) {
    return SetStatus(status, HERALD_INTERNAL, "Out of memory partitioning %lld keys",
                     static_cast<long long>(n));
  }
  const uint64_t shards = static_cast<uint64_t>(num_shards);
  if ((shards & (shards - 1)) == 0) {
    HashToShards(keys, n, num_shards, [m = shards - 1](uint64_t h) { return h & m; },
                 shard_of.data(), counts.data());
  } else {
    HashToShards(keys, n, num_shards, Remainder(shards), shard_of.data(), counts.data());
  }
  offsets[0] = 0;
  for (int64_t s = 0; s < num_shards; ++s) {
    int64_t total = 0;
    for (int lane = 0; lane < kCountLanes; ++lane) total += counts[lane * num_shards + s];
    offsets[s + 1] = offsets[s] + total;
  }
  std::vector<int64_t> next(offsets, offsets + num_shards);
  for (int64_t i = 0; i < n; ++i) order[next[shard_of[i]]++] = i;
  return SetOk(status);
}

int herald_ps_gather_rows_checked(const float* src, int64_t src_rows, int64_t width,
                                  const int64_t* positions, int64_t n, float* out,
                                  int64_t* first_bad, HeraldStatus* status) {
  if (src_rows < 0 || width < 0 || n < 0 || first_bad == nullptr ||
      (n > 0 && width > 0 && (src == nullptr || positions == nullptr || out == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected rows, positions and outputs with n, width >= 0. Received: "
                     "n=%lld, width=%lld",
                     static_cast<long long>(n), static_cast<long long>(width));
  }
  if (herald::CheckIdsInRange(positions, n, src_rows, "position", status)) return status->code;
  *first_bad = -1;
  for (int64_t k = 0; k < n; ++k) {
    if (k + herald::kRowsAhead < n) {
      herald::PrefetchRow(src + positions[k + herald::kRowsAhead] * width, width, false);
    }
    const float* row = src + positions[k] * width;
    float* dst = out + k * width;
    uint32_t any = 0;
    for (int64_t j = 0; j < width; ++j) {
      dst[j] = row[j];
      any |= static_cast<uint32_t>(herald::IsNonFinite(row[j]));
    }
    if (any && *first_bad < 0) {
      for (int64_t j = 0; j < width; ++j) {
        if (herald::IsNonFinite(row[j])) {
          *first_bad = k * width + j;
          break;
        }
      }
    }
  }
  return SetOk(status);
}

int herald_ps_recv_rows(int fd, char* out, int64_t out_rows, int64_t row_bytes,
                        const int64_t* positions, int64_t n, int64_t timeout_ms, int* io_error,
                        HeraldStatus* status) {
  if (fd < 0 || out_rows < 0 || row_bytes <= 0 || n < 0 || io_error == nullptr ||
      (n > 0 && (out == nullptr || positions == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected a socket, an output and positions. Received: fd=%d, n=%lld", fd,
                     static_cast<long long>(n));
  }
  if (herald::CheckIdsInRange(positions, n, out_rows, "position", status)) return status->code;
  *io_error = 0;
  // Rows arrive into a cache-sized staging buffer with plain recv calls and are copied to their
  // places from there: a readv of one 256-byte iovec per row cost the kernel about twice the
  // copy time (per-segment iterator and usercopy checks).
  std::vector<char> stage;
  if (AllocateStage(row_bytes, &stage, status)) return status->code;
  // a large pull's output outgrows the caches long before the caller reads it
  const bool stream = herald::StreamsRows(out, out_rows * row_bytes, row_bytes);
  int64_t row = 0;   // next row to place
  int64_t have = 0;  // bytes of rows row, row + 1, ... in the stage
  while (row < n) {
    const int64_t left = (n - row) * row_bytes - have;  // never read past this array
    const int64_t room = static_cast<int64_t>(stage.size()) - have;
    const ssize_t got =
        recv(fd, stage.data() + have, static_cast<size_t>(left < room ? left : room), 0);
    if (got > 0) {
      have += got;
      const int64_t full = have / row_bytes;
      for (int64_t k = 0; k < full; ++k) {
        herald::CopyRow(out + positions[row + k] * row_bytes, stage.data() + k * row_bytes,
                        row_bytes, stream);
      }
      row += full;
      const int64_t rest = have - full * row_bytes;
      if (rest > 0 && full > 0) memmove(stage.data(), stage.data() + full * row_bytes, rest);
      have = rest;
      continue;
    }
    *io_error = WaitForSocket(fd, got, POLLIN, timeout_ms);
    if (*io_error != 0) break;
  }
  if (stream) herald::StreamFence();
  return SetOk(status);
}

int herald_ps_recv_floats_checked(int fd, float* out, int64_t n, int64_t timeout_ms,
                                  int64_t* first_bad, int* io_error, HeraldStatus* status) {
  if (fd < 0 || n < 0 || first_bad == nullptr || io_error == nullptr ||
      (n > 0 && out == nullptr)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected a socket, an output, n >= 0 and output pointers. Received: n=%lld",
                     static_cast<long long>(n));
  }
  *io_error = 0;
  *first_bad = -1;
  // Pieces small enough to be checked while in L1/L2 right after the kernel copied them.
  constexpr int64_t kPieceBytes = 64 << 10;
  char* bytes = reinterpret_cast<char*>(out);
  const int64_t total = n * static_cast<int64_t>(sizeof(float));
  int64_t got = 0;
  int64_t checked = 0;  // floats checked so far
  while (got < total) {
    const int64_t want = total - got < kPieceBytes ? total - got : kPieceBytes;
    const ssize_t r = recv(fd, bytes + got, static_cast<size_t>(want), 0);
    if (r > 0) {
      got += r;
      const int64_t whole = got / static_cast<int64_t>(sizeof(float));
      if (*first_bad < 0 && whole > checked) {
        const int64_t bad = herald::FindNonFinite(out + checked, whole - checked);
        if (bad >= 0) *first_bad = checked + bad;
      }
      checked = whole;
      continue;
    }
    *io_error = WaitForSocket(fd, r, POLLIN, timeout_ms);
    if (*io_error != 0) break;
  }
  return SetOk(status);
}

int herald_ps_send_rows(int fd, const char* src, int64_t src_rows, int64_t row_bytes,
                        const int64_t* positions, int64_t n, int64_t timeout_ms, int* io_error,
                        HeraldStatus* status) {
  if (fd < 0 || src_rows < 0 || row_bytes <= 0 || n < 0 || io_error == nullptr ||
      (n > 0 && (src == nullptr || positions == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected a socket, source rows and positions. Received: fd=%lld, n=%lld",
                     static_cast<long long>(fd), static_cast<long long>(n));
  }
  if (herald::CheckIdsInRange(positions, n, src_rows, "position", status)) return status->code;
  *io_error = 0;
  // Rows are gathered into a cache-sized stage and sent from there: the kernel's copy then reads
  // cache-warm bytes, and the gathered rows never travel to memory and back (a gather of the
  // whole part before one send cost about twice the CPU on the 2-core machine).
  std::vector<char> stage;
  if (AllocateStage(row_bytes, &stage, status)) return status->code;
  const int64_t stage_rows = static_cast<int64_t>(stage.size()) / row_bytes;
  const int64_t width = row_bytes / static_cast<int64_t>(sizeof(float));
  const bool prefetch = row_bytes % static_cast<int64_t>(sizeof(float)) == 0;
  for (int64_t row = 0; row < n && *io_error == 0;) {
    const int64_t rows = n - row < stage_rows ? n - row : stage_rows;
    for (int64_t k = 0; k < rows; ++k) {
      if (prefetch && row + k + herald::kRowsAhead < n) {
        herald::PrefetchRow(
            reinterpret_cast<const float*>(src + positions[row + k + herald::kRowsAhead] *
                                                     row_bytes),
            width, false);
      }
      memcpy(stage.data() + k * row_bytes, src + positions[row + k] * row_bytes,
             static_cast<size_t>(row_bytes));
    }
    int64_t sent = 0;
    const int64_t bytes = rows * row_bytes;
    while (sent < bytes) {
      const ssize_t put = send(fd, stage.data() + sent, static_cast<size_t>(bytes - sent),
                               MSG_NOSIGNAL);
      if (put > 0) {
        sent += put;
        continue;
      }
      *io_error = WaitForSocket(fd, put, POLLOUT, timeout_ms);  // a send of bytes never gives 0
      if (*io_error != 0) break;
    }
    row += rows;
  }
  return SetOk(status);
}

}  // extern "C"
