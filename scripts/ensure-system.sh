#!/usr/bin/env bash
# Make sure a system dependency is present; install Debian's package where it is missing and we may.
# usage: ensure-system.sh python|redis|chromium|node
set -euo pipefail
want=${1:?usage: ensure-system.sh python|redis|chromium|node}

can_apt() { command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; }
apt_install() {
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

case "$want" in
  python)
    if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      echo "keeper needs Python >= 3.11 as python3" >&2; exit 1
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      if can_apt; then apt_install python3-venv; else
        echo "python3 cannot create virtual environments: install python3-venv (sudo apt-get install python3-venv)" >&2; exit 1
      fi
    fi
    # a C compiler and Python's headers: setup.py compiles the hot modules with mypyc (without
    # them the build is pure Python, correct but slower)
    if ! command -v cc >/dev/null 2>&1 || ! python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
      if can_apt; then echo "installing gcc and python3-dev (compiled hot path)"; apt_install gcc python3-dev || true
      else echo "no C compiler or Python headers: keeper builds as pure Python (slower)" >&2; fi
    fi ;;
  redis)
    if ! command -v redis-server >/dev/null 2>&1 && [ -z "${KEEPER_REDIS_SERVER:-}" ]; then
      if can_apt; then echo "installing Debian's redis-server package"; apt_install redis-server; else
        echo "no redis-server binary found: install it (sudo apt-get install redis-server) or set KEEPER_REDIS_SERVER" >&2; exit 1
      fi
    fi ;;
  chromium)
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
      if can_apt; then echo "installing Debian's chromium package (status page test)"; apt_install chromium || true; fi
    fi ;;
  node)
    # the chain venues: npm installs anvil (make setup); node compiles the contracts (make artifacts)
    pkgs=()
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
    if [ ${#pkgs[@]} -gt 0 ]; then
      if can_apt; then echo "installing Debian's ${pkgs[*]} package(s) (anvil, make artifacts)"; apt_install "${pkgs[@]}"; else
        echo "no ${pkgs[*]} found: install them (sudo apt-get install nodejs npm)" >&2; exit 1
      fi
    fi ;;
  *) echo "unknown dependency: $want" >&2; exit 2 ;;
esac
