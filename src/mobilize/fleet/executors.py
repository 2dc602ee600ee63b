"""Where fleet jobs run: ``local`` (parallel job processes on this machine) or ``ray`` (Ray tasks on a cluster).

Both run :func:`mobilize.fleet.jobs.execute` per job and retry a job whose process or worker died
(:class:`~mobilize.fleet.jobs.JobLost`, or Ray's own worker-death errors) up to ``retries`` more times; a job that
still has no result is returned as ``failed`` with the last error — never dropped. Ray does the scheduling, the
retries of lost workers and the data transfer (a job's bundle comes back as bytes, so workers need no shared
folder for the results; they do need the model's files at the same paths, e.g. through Ray's ``runtime_env``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mobilize.fleet.jobs import Job, JobLost, execute

Outcome = dict[str, Any]  # {"status": "done" | "failed", "payload"?: …, "error"?: str}
Event = Callable[[str], None]


def run_local(jobs: Sequence[Job], *, workers: int, retries: int, on_event: Event) -> dict[str, Outcome]:
    """Run ``jobs`` as up to ``workers`` parallel job processes on this machine."""

    def one(job: Job) -> Outcome:
        last = ""
        for attempt in range(retries + 1):
            try:
                payload = execute(job.spec())
            except JobLost as exc:
                last = str(exc)
                on_event(f"{job.label}: attempt {attempt + 1} lost ({last})"
                         + ("; retrying" if attempt < retries else ""))
                continue
            return {"status": "done", "payload": payload}
        return {"status": "failed", "error": f"no result after {retries + 1} attempt(s): {last}"}

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mobilize-fleet") as pool:
        futures = {job.key: pool.submit(one, job) for job in jobs}
        return {key: f.result() for key, f in futures.items()}


def run_ray(jobs: Sequence[Job], *, address: str | None, retries: int, num_cpus: int | None,
            on_event: Event) -> dict[str, Outcome]:
    """Run ``jobs`` as Ray tasks (one CPU each) on the cluster at ``address`` — or on the cluster this process is
    already connected to, or on a local one started here (``num_cpus``) and stopped afterwards."""
    try:
        import ray
    except ImportError:
        from mobilize.errors import OptionError

        raise OptionError("the ray executor needs Ray; install it with `pip install -c constraints.txt "
                          "'mobilize[ray]'` (or choose executor kind = \"local\")") from None
    started = False
    if not ray.is_initialized():
        from mobilize.bench.machine import usable_cores

        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or usable_cores(), include_dashboard=False, log_to_driver=False)
            started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=[JobLost])(execute)
        refs = {job.key: task.remote({**job.spec(), "executor": "ray"}) for job in jobs}
        labels = {job.key: job.label for job in jobs}
        out: dict[str, Outcome] = {}
        for key, ref in refs.items():
            try:
                out[key] = {"status": "done", "payload": ray.get(ref)}
            except Exception as exc:  # noqa: BLE001 - ray.exceptions.*: the worker died and the retries ran out
                why = " ".join(str(exc).split())[:400]
                on_event(f"{labels[key]}: failed on Ray after {retries + 1} attempt(s): {why}")
                out[key] = {"status": "failed", "error": f"no result after {retries + 1} attempt(s) on Ray: "
                                                         f"{type(exc).__name__}: {why}"}
        return out
    finally:
        if started:
            ray.shutdown()
