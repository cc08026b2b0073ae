"""What operators see and drive: the status file and STATUS= (``status``, ``report``), the
metrics, hooks, pause, and the operations that tie them to the instance (``operations``)."""
