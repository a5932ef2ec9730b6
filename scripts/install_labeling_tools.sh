#!/bin/sh
# Installs the labeling tools the export tests drive as real programs (tests/export/tools.py):
# Label Studio (its server) and FiftyOne (its bundled database), into their own venv .tools/
# because their pins (Django, pydantic, mongo drivers, ...) conflict with raysel's. Idempotent.
# pycocotools, which fits raysel's own dependencies, comes with the `test` extra instead.
set -eu
cd "$(dirname "$0")/.."
TOOLS=.tools
if [ -x "$TOOLS/bin/label-studio" ] && "$TOOLS/bin/python" -c "import fiftyone" >/dev/null 2>&1; then
    echo "labeling tools present: $TOOLS"
    exit 0
fi
python3 -m venv "$TOOLS"
"$TOOLS/bin/pip" install -q --upgrade pip
"$TOOLS/bin/pip" install -q label-studio fiftyone
"$TOOLS/bin/label-studio" --version >/dev/null 2>&1 || true
echo "labeling tools installed: $TOOLS"
