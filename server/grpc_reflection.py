"""gRPC server reflection (grpc.reflection.v1alpha), so that `grpcurl -plaintext host:port
list` and `describe` work without the .proto files.

grpcio-reflection reads descriptors from one pool, by default protobuf's default pool. Our
stubs register in private pools of their own (protos/generate.py: tritonclient puts the same
`inference.*` names in the default one), so the reflection service gets a pool built for it
from the files of every service the port serves.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection, reflection_pb2

REFLECTION_SERVICE = reflection.SERVICE_NAME


def reflection_pool(files: Iterable[FileDescriptor]) -> DescriptorPool:
    """A pool holding `files` and the files they import, dependencies first."""
    pool = DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


def add_reflection_to_server(
    server: grpc.aio.Server, files: Iterable[FileDescriptor]
) -> tuple[str, ...]:
    """Serve reflection for every service in `files` and for reflection itself; the
    service names it lists, sorted."""
    files = [*files, reflection_pb2.DESCRIPTOR]
    names = sorted({service for file in files for service in _service_names(file)})
    reflection.enable_server_reflection(names, server, pool=reflection_pool(files))
    return tuple(names)


def _service_names(file: FileDescriptor) -> list[str]:
    return [service.full_name for service in file.services_by_name.values()]
