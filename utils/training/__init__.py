"""Training room: the schedule (``schedule``), one step with its AMP and
NaN policy (``step``), the full checkpoint state (``state``), DDP set-up
(``distributed``) and the logs (``logger``). The loop that composes them is
``utils.engine.trainer``; the batches come from ``data.loader``."""
