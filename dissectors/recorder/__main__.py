# SPDX-License-Identifier: GPL-2.0-or-later
"""``python -m dissectors.recorder`` = ``migshark record``."""

import sys

from .command import main

sys.exit(main())
