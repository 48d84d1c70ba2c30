#!/usr/bin/env python3
"""Writes the protobuf descriptors tollgate's gRPC reflection serves.

The envoy-types crate ships every Envoy proto compiled into one FileDescriptorSet (types.bin);
reflection needs only rls.proto and what it imports, so this keeps that closure. Run it after
changing the envoy-types version (needs the `protobuf` Python package):

    python3 scripts/rls-descriptor.py ~/.cargo/registry/src/*/envoy-types-X.Y.Z/src/generated/types.bin
"""
import sys

from google.protobuf import descriptor_pb2

ROOT = "envoy/service/ratelimit/v3/rls.proto"
OUT = "crates/tollgate-server/src/rls/rls_descriptor.bin"

full = descriptor_pb2.FileDescriptorSet()
with open(sys.argv[1], "rb") as f:
    full.ParseFromString(f.read())
files = {fd.name: fd for fd in full.file}
ordered, seen = [], set()


def visit(name):
    if name in seen:
        return
    seen.add(name)
    for dep in files[name].dependency:
        visit(dep)
    ordered.append(files[name])  # dependencies first, as protoc writes them


visit(ROOT)
for fd in ordered:
    fd.ClearField("source_code_info")  # comments; keeps the committed file small
out = descriptor_pb2.FileDescriptorSet()
out.file.extend(ordered)
with open(OUT, "wb") as f:
    f.write(out.SerializeToString())
print(f"{OUT}: {len(ordered)} files, {out.ByteSize()} bytes")
