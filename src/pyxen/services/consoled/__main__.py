import sys

from pyxen.services.consoled.service import main

sys.exit(main())
