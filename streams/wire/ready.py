"""The lines a process prints when it is ready: what the launcher waits for before it calls a
process started."""

__all__ = ["TRAINER_READY", "WORKER_READY"]

WORKER_READY = "[^Worker]: Ready"  # faust's own line once the worker has joined its group
TRAINER_READY = "borderline trainer: ready"  # printed by `borderline trainer`
