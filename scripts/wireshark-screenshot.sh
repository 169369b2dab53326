#!/bin/sh
# Reproduces docs/wireshark-gui.png: the Wireshark GUI (Debian's wireshark-qt) with the qmig plugin that
# `migshark export-wireshark` writes, on a real corpus capture (a QEMU 7.2 destination that took a
# multifd channel as main), filtered to the misclassified channels, the first one's QMIG tree open with
# its expert info. Runs Wireshark under Xvfb as an unprivileged user (Wireshark 4.4 and later load no Lua
# as root; as root this script switches to `nobody`), drives it with xdotool and grabs the screen with
# ImageMagick's `import`.
#
#   sh scripts/wireshark-screenshot.sh [OUT.png] [CAPTURE] [FRAME]
#
# Needs: apt-get install wireshark-qt xvfb xdotool imagemagick (scripts/install-test-deps.sh has the first
# two). The image is made small with a 64-colour palette.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/docs/wireshark-gui.png}
CAPTURE=${2:-$ROOT/captures/netpath-multifd4-7.2-misorder.dst.pcap.gz}
FRAME=${3:-21}                       # the multifd channel taken as main (its first frame: the expert info)
POLICY=${POLICY:-qemu-7.2}
FILTER=${FILTER:-qmig.expert.misclassified}
DETAILS_Y=${DETAILS_Y:-312}           # a row of the packet details pane, at the geometry set below
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
for tool in wireshark Xvfb xdotool import; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install wireshark-qt xvfb xdotool imagemagick)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/migshark-shot.XXXXXX)
XPID=""
WPID=""
cleanup() {
    [ -n "$WPID" ] && kill "$WPID" 2>/dev/null || true
    [ -n "$XPID" ] && kill "$XPID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

HOMEDIR=$WORK/home
PLUGINS=$HOMEDIR/.local/lib/wireshark/plugins
mkdir -p "$PLUGINS" "$HOMEDIR/.config/wireshark" "$WORK/run"
(cd "$ROOT" && "$PY" -m dissectors.cli.main export-wireshark "$PLUGINS/qmig.lua" >/dev/null)
cp "$CAPTURE" "$WORK/capture.pcap.gz"
# a fresh profile: the packet list, details and bytes stacked; no welcome dialogs
cat > "$HOMEDIR/.config/wireshark/recent_common" <<EOF
privs.warn_if_elevated: FALSE
gui.geometry_main_x: 0
gui.geometry_main_y: 0
gui.geometry_main_width: 1280
gui.geometry_main_height: 860
gui.geometry_main_maximized: FALSE
EOF
cat > "$HOMEDIR/.config/wireshark/recent" <<EOF
gui.packet_list_show: TRUE
gui.tree_view_show: TRUE
gui.byte_view_show: FALSE
gui.geometry_main_upper_pane: 190
gui.packet_list_colorize: FALSE
EOF
chmod -R a+rwX "$WORK"

RUN=""
if [ "$(id -u)" = 0 ]; then
    chown -R nobody "$WORK"
    RUN="runuser -u nobody --"
fi

DISP=:$(( 90 + $$ % 500 ))
Xvfb "$DISP" -screen 0 1280x860x24 -nolisten tcp >/dev/null 2>&1 &
XPID=$!
i=0
until DISPLAY="$DISP" xdotool getdisplaygeometry >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 "$XPID" 2>/dev/null; then
        echo "$0: Xvfb did not start on $DISP" >&2
        exit 1
    fi
    sleep 0.25
done

# shellcheck disable=SC2086
$RUN env HOME="$HOMEDIR" XDG_RUNTIME_DIR="$WORK/run" DISPLAY="$DISP" QT_QPA_PLATFORM=xcb \
    wireshark -n -r "$WORK/capture.pcap.gz" -o "qmig.policy:$POLICY" -o tcp.reassemble_out_of_order:TRUE \
    -o gui.update.enabled:FALSE >"$WORK/wireshark.log" 2>&1 &
WPID=$!

# Wait until Wireshark has used no CPU for a second: it has read, filtered, moved or drawn what it was
# just asked to, however long a busy machine made that take (fixed sleeps were too short under load);
# at most 30 s a step.
settle() {
    last=-1; still=0; n=0
    while [ $still -lt 2 ] && [ $n -lt 60 ]; do
        now=$(awk '{print $14 + $15}' "/proc/$GPID/stat" 2>/dev/null) || break
        [ -n "$now" ] || break
        if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
        last=$now
        n=$((n + 1))
        sleep 0.5
    done
}

export DISPLAY="$DISP"
i=0
until WIN=$(xdotool search --onlyvisible --name 'capture.pcap.gz' 2>/dev/null | head -1) && [ -n "$WIN" ]; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 "$WPID" 2>/dev/null; then
        echo "$0: no Wireshark window (log: $(tail -5 "$WORK/wireshark.log"))" >&2
        exit 1
    fi
    sleep 0.5
done
GPID=$(xdotool getwindowpid "$WIN" 2>/dev/null || echo "$WPID")
settle                                    # the file read twice (the plugin's verdicts), the list filled
xdotool windowmove "$WIN" 0 0 windowsize "$WIN" 1280 860 windowfocus --sync "$WIN" 2>/dev/null || true
settle
# the display filter, applied once the file is read (the GUI then knows every channel's verdict)
xdotool key --window "$WIN" ctrl+slash
settle
xdotool type --window "$WIN" --delay 20 "$FILTER"
xdotool key --window "$WIN" Return
settle
# go to the frame, then in the packet details select the last top-level item (QMIG) and open it
xdotool key --window "$WIN" ctrl+g
settle
xdotool type --window "$WIN" --delay 20 "$FRAME"
xdotool key --window "$WIN" Return
settle
xdotool mousemove --window "$WIN" 300 "$DETAILS_Y" click 1
settle
xdotool key --window "$WIN" End shift+Right
settle
import -window root -depth 8 "$WORK/shot.png"
# small: a 64-colour palette PNG
import_conv=$(command -v /usr/bin/convert || true)
if [ -n "$import_conv" ]; then
    "$import_conv" "$WORK/shot.png" -colors 64 -strip "PNG8:$OUT"
else
    cp "$WORK/shot.png" "$OUT"
fi
echo "wrote $OUT ($(wc -c < "$OUT") bytes)"
