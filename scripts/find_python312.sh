#!/usr/bin/env bash
# Print the path of a working Python 3.12 interpreter: pyenv's 3.12.x first, then python3.12 on PATH.
# LeRobot 0.6 needs Python 3.12; under 3.11 pip would silently pick LeRobot 0.4.4, so never fall back.
set -u
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
    p=$(PYENV_VERSION="$v" pyenv which python3.12 2>/dev/null) && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$p"; exit 0; }
  done
fi
if p=$(command -v python3.12 2>/dev/null) && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  echo "$p"; exit 0
fi
echo "error: Python 3.12 not found. LeRobot 0.6 needs it: install it (e.g. 'pyenv install 3.12' or your OS package python3.12) and rerun." >&2
exit 1
