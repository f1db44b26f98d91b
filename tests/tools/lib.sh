# Shared by the installers in this directory (sourced, not run). See README.md here for the contract.
#
#   need_command <command> <apt package> [<argument that makes it print its version>]
#   python_tool <name> <pip requirement>      a venv in $tools/<name>, the requirement installed into it
#   fail <message>                            says what to run instead, exits 1
#
# $repo is the repository root and $tools the directory installers put things in: $CARGO_TARGET_DIR/tools, or
# target/tools.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")/tools"
mkdir -p "$tools"

# The installer's own name, for messages.
installer="tests/tools/$(basename "$0")"

fail() {
  echo "$installer: $*" >&2
  exit 1
}

# Installs Debian packages with apt-get, as root or through passwordless sudo; otherwise fails naming the command
# that would do it. Only called when something is missing, so a machine that has everything never runs apt-get.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    fail "no apt-get on this machine: install $* with the system's package manager (dnf install, apk add, …), then run \`cargo xtask test\` again"
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
      sudo=(sudo -n)
    else
      fail "not root and no passwordless sudo: run \`sudo apt-get update && sudo apt-get install -y $*\`, then \`cargo xtask test\` again"
    fi
  fi
  echo "$installer: apt-get install $*"
  "${sudo[@]}" apt-get update -qq || fail "\`apt-get update\` failed (above); run \`${sudo[*]:+${sudo[*]} }apt-get update && ${sudo[*]:+${sudo[*]} }apt-get install -y $*\` by hand"
  # Use-Pty=0: no dpkg progress bar in a log.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" \
    || fail "\`apt-get install $*\` failed (above)"
}

need_command() {
  local command=$1 package=$2 version_arg=${3:---version} path
  # The executable on PATH, never a shell builtin of the same name (`kill`).
  if path=$(type -P "$command") && "$path" "$version_arg" >/dev/null 2>&1; then
    echo "$command: $("$path" "$version_arg" 2>&1 | head -n 1)"
    return
  fi
  apt_install "$package"
  path=$(type -P "$command") && "$path" "$version_arg" >/dev/null 2>&1 \
    || fail "\`apt-get install $package\` ran but \`$command $version_arg\` still fails"
  echo "$command: $("$path" "$version_arg" 2>&1 | head -n 1)"
}

# python3 with venv and pip (Debian ships ensurepip, which venv needs, in python3-venv).
need_python_venv() {
  if python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    return
  fi
  apt_install python3 python3-venv
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 \
    || fail "python3 can still not create a venv; install python3 (3.9 or newer) with venv and ensurepip"
}

python_tool() {
  local name=$1 requirement=$2
  local venv="$tools/$name" package=${2%%==*} version=${2##*==}
  if "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$package') != '$version')" \
    >/dev/null 2>&1; then
    echo "$name: $requirement in $venv"
    return
  fi
  need_python_venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || fail "\`python3 -m venv $venv\` failed (above)"
  echo "$installer: installing $requirement into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" \
    || fail "\`$venv/bin/python -m pip install $requirement\` failed (above); it needs PyPI"
  echo "$name: $requirement in $venv"
}
