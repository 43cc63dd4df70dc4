#!/usr/bin/env bash
# Regenerates the checked-in Python stubs for proto/e2e/hello.proto with grpcio-tools.
#
# Runs from the repository root with `-I.` so the generated modules import each other as
# `proto.e2e.hello_pb2` (the package path, not a bare `hello_pb2`). Usage:
#   proto/generate.sh            # rewrite proto/e2e/hello_pb2{.py,.pyi,_grpc.py} in place
#   proto/generate.sh OUT_DIR    # write proto/e2e/... under OUT_DIR instead (the staleness test)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
mkdir -p "$out"
"${PYTHON:-python3}" -m grpc_tools.protoc -I. \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    proto/e2e/hello.proto
