// Status codes returned across herald's C ABI. Functions never throw across the boundary:
// they return a code and, on failure, fill a caller-owned message buffer.
#ifndef HERALD_KERNELS_CORE_STATUS_H_
#define HERALD_KERNELS_CORE_STATUS_H_

#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// Fixed integer values, mirrored by herald_tf._core.StatusCode (an IntEnum).
typedef enum {
  HERALD_OK = 0,
  HERALD_INVALID_ARGUMENT = 1,  // bad shape, dtype, id or value from the caller
  HERALD_OUT_OF_RANGE = 2,      // slot or index outside the storage
  HERALD_INTERNAL = 3,          // a bug or a failed device call
  HERALD_UNIMPLEMENTED = 4,     // built without the requested backend (e.g. CUDA)
} HeraldStatusCode;

#define HERALD_MESSAGE_LEN 512

// A status the caller allocates (usually on its stack) and the callee fills.
typedef struct {
  int code;                         // a HeraldStatusCode
  char message[HERALD_MESSAGE_LEN];  // NUL-terminated; empty when code == HERALD_OK
} HeraldStatus;

#ifdef __cplusplus
}  // extern "C"

namespace herald {

// Sets `status` to `code` with a printf-style message and returns `code`, so a
// validation failure reads `return SetStatus(st, HERALD_INVALID_ARGUMENT, "...", x);`.
inline int SetStatus(HeraldStatus* status, int code, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

inline int SetStatus(HeraldStatus* status, int code, const char* fmt, ...) {
  if (status != nullptr) {
    status->code = code;
    va_list args;
    va_start(args, fmt);
    vsnprintf(status->message, HERALD_MESSAGE_LEN, fmt, args);
    va_end(args);
  }
  return code;
}

inline int SetOk(HeraldStatus* status) {
  if (status != nullptr) {
    status->code = HERALD_OK;
    status->message[0] = '\0';
  }
  return HERALD_OK;
}

}  // namespace herald
#endif  // __cplusplus

#endif  // HERALD_KERNELS_CORE_STATUS_H_
