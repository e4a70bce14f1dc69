"""``python -m papo_verl.compare PATH ... [--out DIR] [--svg]``."""

import sys

from papo_verl.compare.cli import main

sys.exit(main())
