"""Where pirsyncd meets the operating system and systemd: the one way a subprocess starts
(``runner``), sd_notify (``notify``), journald logging (``log``), signals, and the loop's
interface. Imports only :mod:`pirsyncd.config`."""
