"""``python -m herald_tf.data --out FILE --samples N [...]``: write a synthetic Criteo TSV."""

import sys

from herald_tf.data.synthetic import main

sys.exit(main())
