// Sparse ("lazy") optimizer math, defined once for every party that updates a row: the worker's
// CPU and CUDA kernels and the parameter server all call ApplyElement/ApplyRow, so an update is
// the same computation wherever it happens (DESIGN §2: one implementation of each piece of math).
//
// A row is (value[dim], state[StateWidth(kind, dim)], version). `version` counts the updates
// applied so far; Adam uses t = version + 1 for the update being applied.
//   SGD:     w -= lr * g
//   Adagrad: a += g*g;  w -= lr * g / (sqrt(a) + eps)                       state = [a]
//   Adam:    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//            w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)        state = [m, v]
#ifndef HERALD_KERNELS_CORE_OPTIMIZER_H_
#define HERALD_KERNELS_CORE_OPTIMIZER_H_

#include <math.h>
#include <stdint.h>

#include "kernels/core/platform.h"

#ifdef __cplusplus
extern "C" {
#endif

// Fixed integer values, mirrored by herald_tf._core.OptimizerKind.
typedef enum {
  HERALD_OPT_SGD = 0,
  HERALD_OPT_ADAGRAD = 1,
  HERALD_OPT_ADAM = 2,
} HeraldOptimizerKind;

// Hyper-parameters of one update. The learning rate is passed per step so that a schedule gives
// the PS and the worker the same value.
typedef struct {
  int32_t kind;                 // a HeraldOptimizerKind
  float learning_rate;          // lr of this step
  float beta1;                  // Adam first-moment decay
  float beta2;                  // Adam second-moment decay
  float epsilon;                // Adagrad and Adam denominator guard
  float initial_accumulator;    // Adagrad accumulator of a new row
} HeraldOptimizerParams;

#ifdef __cplusplus
}  // extern "C"

namespace herald {

// Number of optimizer-state floats per row.
HERALD_INLINE int64_t StateWidth(int32_t kind, int64_t dim) {
  return kind == HERALD_OPT_ADAGRAD ? dim : (kind == HERALD_OPT_ADAM ? 2 * dim : 0);
}

// Initial state of element j of a new row (value of state[j] for every j < StateWidth).
HERALD_INLINE float InitialStateValue(const HeraldOptimizerParams& p) {
  return p.kind == HERALD_OPT_ADAGRAD ? p.initial_accumulator : 0.0f;
}

// Per-row factors that depend on the row's step only (Adam's bias corrections).
struct RowCoefficients {
  float inv_bias1;  // 1 / (1 - beta1^t)
  float inv_bias2;  // 1 / (1 - beta2^t)
};

HERALD_INLINE RowCoefficients RowCoefficientsFor(const HeraldOptimizerParams& p,
                                                 int64_t version_before) {
  RowCoefficients rc{1.0f, 1.0f};
  if (p.kind == HERALD_OPT_ADAM) {
    const double t = static_cast<double>(version_before + 1);
    rc.inv_bias1 = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(p.beta1), t)));
    rc.inv_bias2 = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(p.beta2), t)));
  }
  return rc;
}

// One element of each optimizer; `state` points at the row's state block.
HERALD_INLINE void SgdElement(const HeraldOptimizerParams& p, float* value, int64_t j, float g) {
  value[j] = value[j] - p.learning_rate * g;
}

HERALD_INLINE void AdagradElement(const HeraldOptimizerParams& p, float* value, float* state,
                                  int64_t j, float g) {
  const float a = state[j] + g * g;
  state[j] = a;
  value[j] = value[j] - p.learning_rate * g / (sqrtf(a) + p.epsilon);
}

HERALD_INLINE void AdamElement(const HeraldOptimizerParams& p, const RowCoefficients& rc,
                               float* value, float* state, int64_t j, int64_t dim, float g) {
  const float m = p.beta1 * state[j] + (1.0f - p.beta1) * g;
  const float v = p.beta2 * state[dim + j] + (1.0f - p.beta2) * (g * g);
  state[j] = m;
  state[dim + j] = v;
  const float m_hat = m * rc.inv_bias1;
  const float v_hat = v * rc.inv_bias2;
  value[j] = value[j] - p.learning_rate * m_hat / (sqrtf(v_hat) + p.epsilon);
}

// Applies gradient g to element j of a row (one GPU thread per element uses this).
HERALD_INLINE void ApplyElement(const HeraldOptimizerParams& p, const RowCoefficients& rc,
                                float* value, float* state, int64_t j, int64_t dim, float g) {
  switch (p.kind) {
    case HERALD_OPT_SGD:
      SgdElement(p, value, j, g);
      break;
    case HERALD_OPT_ADAGRAD:
      AdagradElement(p, value, state, j, g);
      break;
    case HERALD_OPT_ADAM:
      AdamElement(p, rc, value, state, j, dim, g);
      break;
    default:
      break;
  }
}

// Applies a whole row's gradient; the caller increments the row's version afterwards. The
// dispatch sits outside the element loops so that each loop vectorises.
HERALD_INLINE void ApplyRow(const HeraldOptimizerParams& p, float* value, float* state,
                            int64_t version_before, const float* grad, int64_t dim) {
  const RowCoefficients rc = RowCoefficientsFor(p, version_before);
  switch (p.kind) {
    case HERALD_OPT_SGD:
      for (int64_t j = 0; j < dim; ++j) SgdElement(p, value, j, grad[j]);
      break;
    case HERALD_OPT_ADAGRAD:
      for (int64_t j = 0; j < dim; ++j) AdagradElement(p, value, state, j, grad[j]);
      break;
    case HERALD_OPT_ADAM:
      for (int64_t j = 0; j < dim; ++j) AdamElement(p, rc, value, state, j, dim, grad[j]);
      break;
    default:
      break;
  }
}

HERALD_INLINE bool IsValidOptimizerKind(int32_t kind) {
  return kind == HERALD_OPT_SGD || kind == HERALD_OPT_ADAGRAD || kind == HERALD_OPT_ADAM;
}

}  // namespace herald
#endif  // __cplusplus

#endif  // HERALD_KERNELS_CORE_OPTIMIZER_H_
