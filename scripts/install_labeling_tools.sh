#!/bin/sh
# Installs the labeling tools the export tests drive as real programs (tests/labeling_tools.py):
# Label Studio (its server) and FiftyOne, into their own venv .tools/ because their pins (Django,
# pydantic, mongo drivers, ...) conflict with raysel's; then migrates a template Label Studio
# database once, so each test session starts the server in seconds. Idempotent.
# pycocotools, which fits raysel's own dependencies, comes with the `test` extra instead.
set -eu
cd "$(dirname "$0")/.."
TOOLS=.tools
if [ -x "$TOOLS/bin/label-studio" ] && "$TOOLS/bin/python" -c "import label_studio, fiftyone" >/dev/null 2>&1 \
   && [ -d "$TOOLS/label-studio-template" ]; then
    echo "labeling tools present: $TOOLS"
    exit 0
fi
python3 -m venv "$TOOLS"
"$TOOLS/bin/pip" install -q --upgrade pip
"$TOOLS/bin/pip" install -q label-studio fiftyone
"$TOOLS/bin/python" -c "import label_studio, fiftyone" || { echo "labeling tools do not import" >&2; exit 1; }
python3 tests/labeling_tools.py prepare
echo "labeling tools installed: $TOOLS"
