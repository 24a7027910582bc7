#!/bin/sh
# Fetch what images/packages.lock pins (see images/fetch.py): packages into .cache/debs/<id>/,
# self-contained program roots (QEMU with its library closure) into .cache/roots/<id>/.
#   images/fetch.sh                 fetch what is missing
#   images/fetch.sh --update-lock [ID…]   re-pin every entry (or those ids) to the newest version
exec python3 "$(dirname "$0")/fetch.py" "$@"
