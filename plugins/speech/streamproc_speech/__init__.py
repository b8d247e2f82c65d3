"""Speech recognizer plugin for streamproc: voice commands of a media platform to text."""

__version__ = "0.1.0"
