"""`python -m privimage ...` (also what `torchrun -m privimage` launches): the same CLI as `privimage`."""

import sys

from privimage.cli import main

sys.exit(main())
