# SPDX-License-Identifier: GPL-2.0-or-later
"""Build hook for the optional compiled pcap fast path; everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python headers the build goes on and migshark runs its
pure-Python reader (the same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dissectors.capture._pcapscan", ["dissectors/capture/_pcapscan.c"],
                             optional=True, extra_compile_args=["-O2"]),
                   Extension("dissectors.channels._ramrun", ["dissectors/channels/_ramrun.c"],
                             optional=True, extra_compile_args=["-O2"])])
