"""Dense gradient synchronisation: Horovod, tf.distribute, or a single process (DESIGN §4).

``make_dense_sync(name)`` returns a :class:`DenseSync`; pass it to ``HeraldModel.compile(...,
dense_sync=sync)`` and build the model inside ``sync.scope()``. Each backend states how its dense
averaging matches DESIGN §2a's gradient scale through ``embedding_gradient_scale``. The Horovod
and tf.distribute backends import their frameworks only when created.
"""

from herald_tf.dense.factory import make_dense_sync
from herald_tf.dense.none import NoneDenseSync
from herald_tf.dense.types import DenseSync, DenseSyncKind, dense_variables

__all__ = [
    "DenseSync",
    "DenseSyncKind",
    "NoneDenseSync",
    "dense_variables",
    "make_dense_sync",
]
