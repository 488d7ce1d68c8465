#!/bin/sh
# Fetches the pinned front-end files from the npm registry into this
# directory (run by `go generate ./webui/`). The files are committed, so a
# build needs no network; running this again must leave no git diff.
set -eu

HTMX_VERSION=2.0.11
PICO_VERSION=2.1.1

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
npm pack --silent "htmx.org@$HTMX_VERSION" >/dev/null
npm pack --silent "@picocss/pico@$PICO_VERSION" >/dev/null
tar -xzf "htmx.org-$HTMX_VERSION.tgz"
cp package/dist/htmx.min.js "$here/htmx.min.js"
rm -rf package
tar -xzf "picocss-pico-$PICO_VERSION.tgz"
cp package/css/pico.min.css "$here/pico.min.css"
cp package/LICENSE.md "$here/pico.LICENSE.md"
rm -rf package
tar -xzf "htmx.org-$HTMX_VERSION.tgz"
cp package/LICENSE "$here/htmx.LICENSE"
printf 'htmx.org %s\n@picocss/pico %s\n' "$HTMX_VERSION" "$PICO_VERSION" >"$here/VERSIONS"
