"""``python -m albor …`` is the ``albor`` command."""

import sys

from albor.cli import main

sys.exit(main())
