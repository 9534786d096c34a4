"""``python -m pyxen`` runs the ``pyxen`` command."""

import sys

from pyxen.toolstack.cli import main

sys.exit(main())
