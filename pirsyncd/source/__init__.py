"""The source side: inotify watches on every real directory (``watcher``, with ``dirfd``,
``mounts`` and ``watchlimit``), events turned into changes (``events``), or one fanotify
filesystem mark (``fanotify*``), whichever ``backend`` chooses; excludes (``filters``),
hard-link inodes, the source's identity, and the intake that feeds every replica
(``intake``). Never imports a replica, the restart state or the operations."""
