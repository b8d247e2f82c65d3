"""Test plugins for streamproc's own tests, installed through their entry points."""
