import sys

from pyxen.services.blkback.service import main

sys.exit(main())
