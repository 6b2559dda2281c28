#!/bin/sh
# The commands and libraries the tests use beyond Python, make and git, each with the Debian package
# that has it. As root the missing ones are installed here (one apt-get for all); otherwise this says
# what to install, and the tests that need one skip with the reason (under FORWARDPASS_REQUIRE_TOOLS=1,
# as CI sets it, they fail instead). Usage: tools.sh [NAME...], the names from the table; none: all.
# A name ending in .so.* is a shared library (looked up with ldconfig), any other a command.
set -eu
TABLE="
npm npm
node nodejs
curl curl
openssl openssl
h2load nghttp2-client
chromium-headless-shell chromium-headless-shell
libb64.so.0d libb64-0d
"
# npm: make test's interop step and the page's onnxruntime-web; node: the onnxruntime-node interop
# test; curl: the README's examples; openssl: the test certificates; h2load: the serving benchmark;
# chromium-headless-shell: the page's Playwright tests; libb64-0d: Triton's perf_analyzer (make bench).

present() {
    case $1 in
        *.so.*) /sbin/ldconfig -p | grep -q "^[[:space:]]$1 " ;;
        *) command -v "$1" >/dev/null ;;
    esac
}

wanted=${*:-$(echo "$TABLE" | awk 'NF {print $1}')}
missing= packages=
for name in $wanted; do
    package=$(echo "$TABLE" | awk -v n="$name" '$1 == n {print $2}')
    [ -n "$package" ] || { echo "tools.sh: unknown tool $name" >&2; exit 2; }
    present "$name" || { missing="$missing $name"; packages="$packages $package"; }
done
[ -n "$packages" ] || exit 0

if [ "$(id -u)" != 0 ]; then
    echo "not installed:$missing; the tests that need them skip. As root: apt-get install$packages"
    exit 0
fi
echo "installing$packages (for$missing)"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
if apt-get update -qq && apt-get install -y -qq $packages >/dev/null; then
    exit 0
fi
echo "apt-get could not install$packages: the tests that need$missing skip (CI fails them)" >&2
