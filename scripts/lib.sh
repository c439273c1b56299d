# Shared by scripts/run.sh and scripts/test.sh: install what is missing, idempotently.

# apt_install PKG...: installs the Debian packages not installed yet (one apt-get update first).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get (a second test run, unattended upgrades) may hold the dpkg lock: wait for it
  # rather than fail.
  local wait=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait[@]}" update -qq
  $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_cargo: fails with a clear message when there is no Rust toolchain.
need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

# python_venv DIR PKG...: makes a Python venv in DIR (once) and pip-installs the pinned PKGs into
# it from wheels (quiet; nothing is fetched when they are already there).
python_venv() {
  local dir="$1"; shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$@"
}
