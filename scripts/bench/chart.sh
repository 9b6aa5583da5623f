#!/bin/sh
# Draw gpu-bench's PNG chart from its JSON report: scripts/bench/chart.sh REPORT.json OUT.png
# Installs its own dependency (matplotlib, pinned) with pip into a virtual environment, once:
# $GPU_BENCH_VENV, default target/bench-venv in the repository. Needs python3 with venv
# (Debian: python3-venv).
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT.json OUT.png" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${GPU_BENCH_VENV:-$root/target/bench-venv}
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "chart.sh: installing matplotlib into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
exec "$venv/bin/python" "$here/chart.py" "$1" "$2"
