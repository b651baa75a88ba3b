#!/usr/bin/env bash
# The tests: set up (see setup.sh), then run pytest. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$root/scripts/setup.sh")"
cd "$root"
exec "$py" -m pytest "$@"
