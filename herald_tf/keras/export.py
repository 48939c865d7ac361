"""Serving-side pieces written in stock TensorFlow only, so exported models need no herald_tf.

``initial_rows`` recomputes the deterministic initializer of kernels/core/initializer.h with
uint64 xor/shift/multiply and float32 casts: for the uniform initializer the bits equal the
op's; the normal one depends on the platform's log/cos (a few ulp).
"""

from __future__ import annotations

import tensorflow as tf

from herald_tf.config import InitializerConfig, InitializerKind

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _mix64(x: tf.Tensor) -> tf.Tensor:
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(30)))
    x = tf.math.multiply(x, _u64(0xBF58476D1CE4E5B9))
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(27)))
    x = tf.math.multiply(x, _u64(0x94D049BB133111EB))
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(31)))


def _unit(bits: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.bitwise.right_shift(bits, _u64(40)), tf.float32) * (1.0 / 16777216.0)


def _init_bits(seed: int, keys: tf.Tensor, counters: tf.Tensor) -> tf.Tensor:
    """InitBits(seed, key, counter) for keys [n] x counters [c] -> [n, c] uint64."""
    inner = _mix64(tf.bitwise.bitwise_xor(tf.bitcast(keys, tf.uint64), _mix64(_u64(seed))))
    salt = tf.math.multiply(counters + _u64(1), _u64(_GOLDEN_GAMMA))
    return _mix64(tf.bitwise.bitwise_xor(inner[:, tf.newaxis], salt[tf.newaxis, :]))


def initial_rows(keys: tf.Tensor, dim: int, seed: int, initializer: InitializerConfig) -> tf.Tensor:
    """Initial rows [n, dim] of int64 ``keys`` with stock TF ops (no herald op library)."""
    keys = tf.convert_to_tensor(keys, tf.int64)
    columns = tf.range(dim, dtype=tf.int64)
    if initializer.kind == InitializerKind.ZEROS:
        return tf.zeros([tf.size(keys), dim], tf.float32)
    if initializer.kind == InitializerKind.UNIFORM:
        u = _unit(_init_bits(seed, keys, tf.cast(columns, tf.uint64)))
        low, high = tf.constant(initializer.a, tf.float32), tf.constant(initializer.b, tf.float32)
        return low + u * (high - low)
    even = tf.cast(2 * columns, tf.uint64)
    u1 = _unit(_init_bits(seed, keys, even)) + (1.0 / 16777216.0)
    u2 = _unit(_init_bits(seed, keys, even + _u64(1)))
    r = tf.sqrt(-2.0 * tf.math.log(u1))
    z = r * tf.cos(tf.constant(6.28318530717958647692, tf.float32) * u2)
    return initializer.a + initializer.b * z
