"""pirsyncd: keep a directory an exact, near-real-time mirror with inotify and rsync."""

__version__ = "0.1.0"
