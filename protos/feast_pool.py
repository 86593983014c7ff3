"""The descriptor pool of the Feast registry subset (feast_types.proto, feast_core.proto).

A pool of its own keeps `feast.*` out of the default pool (the feast package registers the
same names there); it holds google's Duration too, which feast_core.proto imports.
"""

from google.protobuf import descriptor_pool, duration_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
