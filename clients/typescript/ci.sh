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
exit "$status"
