#!/usr/bin/env python3
"""Lists tollgate's gRPC services through server reflection and calls ShouldRateLimit with message
types built from the reflected descriptors alone (no .proto files), as grpcurl does.

    target/envoy-venv/bin/python scripts/rls-reflection-check.py 127.0.0.1:8081 shop user alice

Needs grpcio, grpcio-reflection and protobuf (the venv .ci/run makes has pip; install them there).
"""
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"

addr, domain, key, value = sys.argv[1:5]
channel = grpc.insecure_channel(addr)
db = ProtoReflectionDescriptorDatabase(channel)
services = db.get_services()
print("services:", ", ".join(services))
assert SERVICE in services, f"{SERVICE} is not listed"

pool = descriptor_pool.DescriptorPool(db)
method = pool.FindServiceByName(SERVICE).FindMethodByName("ShouldRateLimit")
Request = message_factory.GetMessageClass(method.input_type)
Response = message_factory.GetMessageClass(method.output_type)
call = channel.unary_unary(
    f"/{SERVICE}/ShouldRateLimit",
    request_serializer=Request.SerializeToString,
    response_deserializer=Response.FromString,
)
req = json_format.ParseDict(
    {"domain": domain, "descriptors": [{"entries": [{"key": key, "value": value}]}]}, Request()
)
print(json_format.MessageToJson(call(req), indent=None))
