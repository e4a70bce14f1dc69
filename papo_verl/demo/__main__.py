"""``python -m papo_verl.demo``: the CPU demo (see :mod:`papo_verl.demo.run`)."""

import sys

from papo_verl.demo.run import main

sys.exit(main())
