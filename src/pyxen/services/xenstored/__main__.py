"""Entry point: ``python -m pyxen.services.xenstored``."""

import sys

from pyxen.services.xenstored.cli import main

sys.exit(main())
