#!/usr/bin/env bash
# Finds (or installs) the headless browser the storefront's browser suite drives: Chromium
# and its ChromeDriver. Prints two lines for `eval`:
#   CHROMIUM=/usr/bin/chromium
#   CHROMEDRIVER=/usr/bin/chromedriver
# Order: $CHROMIUM/$CHROMEDRIVER when set; binaries on PATH; else, on Debian or Ubuntu with
# root (or password-less sudo), `apt-get install chromium chromium-driver`. Otherwise it
# says how to install them and fails. Progress goes to stderr.
set -euo pipefail
say() { echo "chromium: $*" >&2; }

find_first() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}

browser="${CHROMIUM:-$(find_first chromium chromium-browser google-chrome-stable google-chrome || true)}"
driver="${CHROMEDRIVER:-$(find_first chromedriver || true)}"

if [[ -z "$browser" || -z "$driver" ]]; then
  as_root=""
  if [[ "$(id -u)" == 0 ]]; then as_root=" "; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && [[ -n "$as_root" ]]; then
    say "installing Debian's chromium and chromium-driver (once per machine)"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # $as_root is empty or a command and its flag
    $as_root apt-get install -y -q chromium chromium-driver >&2 \
      || { $as_root apt-get update -q >&2 && $as_root apt-get install -y -q chromium chromium-driver >&2; } \
      || say "apt-get could not install them"
    browser="$(find_first chromium chromium-browser || true)"
    driver="$(find_first chromedriver || true)"
  fi
fi

if [[ -z "$browser" || -z "$driver" ]]; then
  cat >&2 <<'MSG'
chromium: the browser suite needs Chromium and ChromeDriver, and neither could be found or installed.
  Debian/Ubuntu:  sudo apt-get install chromium chromium-driver
  Fedora:         sudo dnf install chromium chromedriver
  macOS:          brew install --cask chromium && brew install chromedriver
  Or point CHROMIUM and CHROMEDRIVER at the binaries (their major versions must match).
MSG
  exit 1
fi
say "using $browser and $driver"
echo "CHROMIUM=$browser"
echo "CHROMEDRIVER=$driver"
