import sys

from pyxen.services.netback.service import main

sys.exit(main())
