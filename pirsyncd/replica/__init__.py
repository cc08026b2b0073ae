"""One destination's pipeline: pending changes (``pending``) become a batch, a job (``job``)
plans it (``plan``, pure) into rsync runs (``rsync``: argv and exit statuses; ``deletions``:
the deletion path; ``ssh``: shared connections), failing paths are retried on their own
(``failing``), and the replica's state (``policy``) decides when. Reads the source side's
changes; never imports the restart state or the operations."""
