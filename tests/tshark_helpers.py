"""The tshark installations the plugin tests run on, each as an unprivileged user.

* Debian 12's own tshark (4.0) on this machine;
* tshark 4.4 and 4.6 in the minimal Debian roots that ``scripts/install-tshark-roots.sh`` makes
  (``$MIGSHARK_TSHARK_ROOTS``, default ``/opt/migshark-trixie /opt/migshark-sid``), run with chroot.

Wireshark 4.4 and later load no Lua script (``-X lua_script:``, personal plugin folder) when run as
root, so every run switches to ``nobody`` when the tests run as root (4.0 would load it, but the tests
run it as users do). A run only reads files from its installation's stage directory: a world-readable
folder that has the same path inside the chroot and out (in the root's /tmp, with a symlink of the same
name in the host's /tmp), so pyshark, which checks the capture path on the host, and tshark, which
opens it inside the root, see the same path. Each installation has an executable ``wrapper`` there,
which pyshark runs as its ``tshark_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOTS = "/opt/migshark-trixie /opt/migshark-sid"
USER, GROUP = "nobody", "nogroup"


@dataclass
class TsharkInstall:
    root: Path | None            # None: the host's tshark
    stage_dir: Path              # same path inside the root and out
    wrapper: Path                # runs this installation's tshark as an unprivileged user
    version: str = ""            # "4.0.17"
    _staged: dict[Path, Path] = field(default_factory=dict)

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def stage(self, src: Path | str) -> Path:
        """A world-readable copy of ``src`` in the stage directory (once per file)."""
        src = Path(src).resolve()
        got = self._staged.get(src)
        if got is None:
            got = self.stage_dir / f"{len(self._staged)}-{src.name}"
            shutil.copyfile(src, got)
            got.chmod(0o644)
            self._staged[src] = got
        return got

    def run(self, args: list[str], timeout: int = 300, home: Path | None = None,
            as_root: bool = False) -> subprocess.CompletedProcess[str]:
        """tshark ``args`` as the unprivileged user (``as_root``: as root, to show what root gets), with
        ``HOME`` in the stage directory or ``home`` (a personal plugin folder)."""
        if home is None and not as_root:
            cmd = [str(self.wrapper), *args]
        else:
            cmd = [*_prefix(self.root, home or self.stage_dir, as_root), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def cleanup(self) -> None:
        if self.root is None:
            shutil.rmtree(self.stage_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.root / str(self.stage_dir).lstrip("/"), ignore_errors=True)
            self.stage_dir.unlink(missing_ok=True)


def _prefix(root: Path | None, home: Path, as_root: bool = False) -> list[str]:
    """The command that runs this installation's tshark (unprivileged unless ``as_root``)."""
    env = ["env", f"HOME={home}", "LC_ALL=C"]
    if root is not None:
        user = [] if as_root else [f"--userspec={USER}:{GROUP}"]
        return ["chroot", *user, str(root), *env, "/usr/bin/tshark"]
    if os.geteuid() == 0 and not as_root:
        return ["runuser", "-u", USER, "--", *env, "tshark"]
    return [*env, "tshark"]


def _wrapper_text(root: Path | None, home: Path) -> str:
    return "#!/bin/sh\nexec " + " ".join(_prefix(root, home)) + ' "$@"\n'


def _make(root: Path | None) -> TsharkInstall | None:
    if root is None:
        if shutil.which("tshark") is None:
            return None
        stage = Path(tempfile.mkdtemp(prefix="migshark-tshark-", dir="/tmp"))
    else:
        if os.geteuid() != 0 or not (root / "usr/bin/tshark").exists():
            return None
        inside = Path(tempfile.mkdtemp(prefix="migshark-tshark-", dir=root / "tmp"))
        stage = Path("/tmp") / inside.name
        stage.symlink_to(inside)
    stage.chmod(0o755)
    wrapper = stage / "tshark"
    wrapper.write_text(_wrapper_text(root, stage))
    wrapper.chmod(0o755)
    inst = TsharkInstall(root, stage, wrapper)
    res = inst.run(["--version"], timeout=60)
    m = re.search(r"TShark \(Wireshark\) (\d+\.\d+\.\d+)", res.stdout)
    if res.returncode != 0 or not m:
        inst.cleanup()
        return None
    inst.version = m.group(1)
    return inst


def discover() -> list[TsharkInstall]:
    """Every tshark installation present: the host's first, then the roots'."""
    out = []
    host = _make(None)
    if host is not None:
        out.append(host)
    for root in os.environ.get("MIGSHARK_TSHARK_ROOTS", DEFAULT_ROOTS).split():
        inst = _make(Path(root))
        if inst is not None:
            out.append(inst)
    return out


_INSTALLS: list[TsharkInstall] | None = None


def installs() -> list[TsharkInstall]:
    """The installations, found once per test session (cleaned up at exit)."""
    global _INSTALLS
    if _INSTALLS is None:
        import atexit

        _INSTALLS = discover()
        for inst in _INSTALLS:
            atexit.register(inst.cleanup)
    return _INSTALLS


def install_named(series: str) -> TsharkInstall | None:
    return next((i for i in installs() if i.series == series), None)
