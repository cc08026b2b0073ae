"""Restarts that are not full syncs: the state file (``statefile``), the warm start's scan
(``warmscan``) and the keeper that decides warm or full at start and writes the watermark
while running (``keeper``)."""
