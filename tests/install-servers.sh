#!/usr/bin/env bash
# Installs the servers the integration tests start themselves, into tests/.tools:
#   s3s-fs — an S3-compatible object store serving a directory (the backup tests' S3 target).
#            0.14.1 is the newest that builds with our rustc; about 5 minutes on 2 cores.
# The backup test runs this script itself when the server is missing; CI runs it first, so that
# its time shows as its own step.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$here/.tools"
mkdir -p "$tools"
if [ ! -x "$tools/bin/s3s-fs" ]; then
  echo "building s3s-fs 0.14.1 (an S3-compatible server; about 5 minutes on 2 cores)…" >&2
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$tools" >&2
fi
echo "$tools/bin/s3s-fs"
