"""The text report of a raw migration stream file (``dissectors.analysis.stream_file``)."""

from __future__ import annotations

from typing import Any


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def render_stream_file(report: dict[str, Any]) -> str:
    cap, s = report["capture"], report["stream_file"]
    lines = [f"{cap['file']}: a raw migration stream file (QEVM version {s['version']}, no capture header), "
             "read as the main channel"]
    if s["status"] == "complete":
        vmdesc = (f", then its VMDESCRIPTION ({_size(s['vmdescription_bytes'])})"
                  if s["vmdescription_bytes"] is not None else "")
        lines.append(f"  COMPLETE: the stream ends with QEMU_VM_EOF at offset {s['eof_offset']}{vmdesc}")
    else:
        lines.append(f"  {s['status'].upper()}: " + s["findings"][0])
        lines += [f"  ! {f}" for f in s["findings"][1:]]
    lines += [f"  warning: {w}" for w in cap.get("warnings", ()) if w not in s["findings"]]   # lost nothing
    lines.append("  no TCP: no connections, accept order or roles race to judge (capture the migration with "
                 "tcpdump for those)")
    caps = ", ".join(s["capabilities"]) or "none announced"
    lines.append(f"  machine {s['machine']}, capabilities: {caps}, {_size(s['bytes'])} in all")
    ram = s["ram"]
    if ram["mapped_ram"]:
        lines.append(f"  RAM (mapped-ram): {ram['pages']} of {ram['guest_pages']} guest pages stored at fixed file "
                     "offsets (counted from the blocks' bitmaps); zero pages are not stored")
    else:
        lines.append(f"  RAM: {ram['pages']} pages and {ram['zero_pages']} zero pages ({_size(ram['bytes'])}) of "
                     f"{ram['guest_pages']} guest pages")
    names = [d["idstr"] for d in s["devices"]]
    shown = ", ".join(names[:12]) + (f", ... ({s['device_sections']} in all)" if s["device_sections"] > 12 else "")
    lines.append(f"  devices: {s['device_sections']} section(s), {_size(s['device_bytes'])} of state: {shown or '-'}")
    if s["commands"]:
        lines.append("  commands: " + ", ".join(f"{k} x{n}" for k, n in s["commands"].items()))
    return "\n".join(lines) + "\n"
