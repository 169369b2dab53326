# SPDX-License-Identifier: GPL-2.0-or-later
"""vmstate: device state decoded from a precopy stream's VMDESCRIPTION. Sans-IO, knows nothing of files
or captures; the section and subsection wire structure comes from ``dissectors.layers``.

``parse_description(json_bytes)`` checks QEMU's VMDESCRIPTION JSON (bounded: size, nesting, entries) and
``decode_device(body, device_description)`` walks one device section's body along it: integers, bools,
timers, floats, buffers, bitmaps, arrays, nested structs, ``tmp`` structs and subsections; a type it does
not know is shown as hex with its size, a body that does not fit its description says where.
"""

from dissectors.vmstate.decode import DecodedDevice, decode_device
from dissectors.vmstate.description import Description, DescriptionError, parse_description

__all__ = ["DecodedDevice", "Description", "DescriptionError", "decode_device", "parse_description"]
