#!/usr/bin/env bash
# The main job: set up (see setup.sh), then run recipes/quickstart.yaml into runs/quickstart/.
# Extra arguments are passed on as recipe overrides, e.g. data.simulate.users=500.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$root/scripts/setup.sh")"
cd "$root"
exec "$py" -m rlhf_organic run recipes/quickstart.yaml output.overwrite=true "$@"
