"""``python -m herald_tf.launch`` is ``herald-run``."""

import sys

from herald_tf.launch.cli import main

sys.exit(main())
