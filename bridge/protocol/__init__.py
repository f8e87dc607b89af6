"""Wire dialects: bytes on a socket <-> typed messages.

``native`` is protocol v1 (MessagePack, one map per frame, see the README).
"""
