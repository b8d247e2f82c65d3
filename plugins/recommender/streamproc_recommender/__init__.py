"""streamproc plugin: next-item recommendations from a user's playback stream."""
