"""What the user asked for: the option table, value parsing, the configuration file and
command line made into one :class:`~pirsyncd.config.parse.Config`, destinations, and the
exit statuses. Pure: imports nothing else of pirsyncd."""
