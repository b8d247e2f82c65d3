"""streamproc: a real-time ML event processor for media platforms.

Kafka events (playback, upload, audio) are routed through PyTorch model plugins found
through the ``streamproc.plugins`` entry-point group; results go to Redis and Kafka.
"""

__version__ = "0.1.0"
