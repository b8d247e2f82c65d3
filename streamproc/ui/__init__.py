"""The live results page (``streamproc ui``, or the worker's HTTP port with ``http.ui``).

- ``board``: what the page shows, kept in memory and bounded (cards per input, dead
  letters, per-plugin figures), with change numbers so each browser gets only what changed;
- ``stats``: per-plugin throughput and latency over the last minutes;
- ``sources``: the readers that fill the board (Redis feeds and state, the dead-letter
  and input topics);
- ``server``: the aiohttp routes (page, static assets, server-sent events, media).

The page is read-only: it never writes to Redis or Kafka, and no setting (the Redis and
Kafka passwords included) is ever sent to the browser.
"""
