#!/usr/bin/env bash
# CI for the TypeScript SDK: a clean install from package-lock.json, then the
# build and every test (the spec vectors are read from ../../spec at test time).
# Prints the counts; on failure also the failing tests (or the compiler's errors).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
npm test --silent >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  if grep -q '^# tests' "$log"; then
    sed -n '/^not ok/,/^  \.\.\.$/p' "$log" | grep -Ev '^ *(duration_ms|location): ' | head -200 || true
  else
    tail -n 60 "$log"
  fi
fi
grep -E '^# (tests|pass|fail|cancelled) ' "$log" || true
echo "typescript sdk: $([ "$status" -eq 0 ] && echo ok || echo FAILED)"
# The node serves the SDK bundled for browsers (the trade page): it must be
# the bundle of these sources, byte for byte.
bundle=../../src/node/assets/sealbatch-sdk.js
cp "$bundle" "$log.committed"
npm run bundle --silent
if ! cmp -s "$bundle" "$log.committed"; then
  echo "src/node/assets/sealbatch-sdk.js is not the bundle of the SDK's sources: run npm run bundle in clients/typescript and commit it"
  status=1
fi
rm -f "$log.committed"
# The same tests of the spec's vectors and golden frames in a browser
# (headless Chromium): the test files bundled with the spec files inlined.
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -n "$browser" ]; then
  npm run browser-vectors --silent
  profile="$(mktemp -d)"
  page="$("$browser" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --virtual-time-budget=20000 \
    --user-data-dir="$profile" --dump-dom "file://$PWD/browser/vectors.html" 2>/dev/null || true)"
  rm -rf "$profile"
  summary="$(printf '%s' "$page" | grep -o '<output id="result"[^<]*' || true)"
  echo "typescript sdk in chromium: ${summary#*>}"
  if ! printf '%s' "$summary" | grep -q 'data-status="pass"'; then
    printf '%s' "$page" | grep -o '<li data-ok="false">[^<]*' | head -20 || true
    status=1
  fi
elif [ -n "${SEALBATCH_REQUIRE_BROWSER:-}" ]; then
  echo "SEALBATCH_REQUIRE_BROWSER is set, but chromium is not installed"
  status=1
else
  echo "chromium is not installed: the SDK's tests did not run in a browser (apt-get install chromium)"
fi
exit "$status"
