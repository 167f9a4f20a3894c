"""The durable job manager, in rooms: accept, schedule fairly, submit, poll, deliver, recover, cancel.

    model.py      states, update kinds, settlements, Job / NewJob / JobUpdate, errors, protocols
    core.py       the memory every room shares and the one way a state changes
    scheduler.py  the fair local queue, slots, dispatch, positions, submission
    poller.py     following jobs at the backend: status, deadlines, backoff, worker health
    delivery.py   completed -> outputs -> deliver -> notify, with retries
    recovery.py   reconcile, adopt, replay unsaved steps, settle forgotten credits
    manager.py    `JobManager`, which wires them and is what the rest of the bot calls

Its SQL lives in `bot/store/jobs.py`; the GPU backend is reached through `bot/backend.py`.
"""

from bot.jobs.manager import JobManager
from bot.jobs.model import (
    AT_BACKEND,
    DEFAULT_ENDPOINT,
    FAILURE_STATES,
    IN_FLIGHT,
    TERMINAL,
    Accounting,
    AlreadyFinished,
    DatabaseBusy,
    Deliverer,
    DeliveryError,
    FreeAccounting,
    Job,
    JobError,
    JobState,
    JobUpdate,
    Limits,
    MemberBusy,
    NewJob,
    NotYourJob,
    Settlement,
    UpdateKind,
)

__all__ = [
    "AT_BACKEND",
    "DEFAULT_ENDPOINT",
    "FAILURE_STATES",
    "IN_FLIGHT",
    "TERMINAL",
    "Accounting",
    "AlreadyFinished",
    "DatabaseBusy",
    "Deliverer",
    "DeliveryError",
    "FreeAccounting",
    "Job",
    "JobError",
    "JobManager",
    "JobState",
    "JobUpdate",
    "Limits",
    "MemberBusy",
    "NewJob",
    "NotYourJob",
    "Settlement",
    "UpdateKind",
]
