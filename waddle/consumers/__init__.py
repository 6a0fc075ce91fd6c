"""Consumers: processes that read the log and do something with it (docs/consumers.md).

``base`` holds the protocol and the run loop; one module per consumer; ``state`` is the
registry of durable consumers, ``retention`` the garbage collector that respects it.
"""
