"""The engine: from a consumed record to its acknowledged publication, independent of Faust.

``engine`` accepts records and fans them out, ``routing`` says which plugins receive what,
``batching`` and ``runtime`` run plugins in micro-batches, ``state`` applies keyed state,
``delivery`` publishes and acks in offset order, ``sinks`` write to Redis and Kafka, and
``keys`` is the Redis key layout. Nothing here imports Faust, the tools or the worker.
"""
