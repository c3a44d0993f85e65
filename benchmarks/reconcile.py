"""Benchmark: ``cohorts reconcile`` against a replace (``upload --existing-cohort-id``).

    python -m benchmarks.reconcile                  # 250,000 ids, 10 % out and 10 % new
    python -m benchmarks.reconcile --count 1000000 --churn 0.02

Both run in the same process against the embedded fake Amplitude API over loopback, from the
same starting cohort to the same target file. For each: the requests and ids sent, the wall
time, and what a partner syncing every minute could have seen mid-run: the smallest size
the cohort had after any request, and how many members that the file keeps were missing at
that moment (a replace first cuts the cohort to its first 100,000 ids). Prints ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from cohortctl.customer.client import AmplitudeClient, connect
from cohortctl.customer.reconcile import reconcile
from cohortctl.customer.uploading import UploadSpec, execute, plan_upload
from cohortctl.retry import RetryPolicy
from cohortctl.servers.amplitude.app import STORE_KEY, FakeSettings, create_app
from cohortctl.servers.amplitude.store import CohortStore
from cohortctl.servers.runner import BackgroundServer

KEY, SECRET = "bench-key", "bench-secret"


def files(count: int, churn: float) -> tuple[list[str], list[str]]:
    """The starting ids, and the target: ``churn`` of them removed, as many new ones."""
    step = max(1, round(1 / churn)) if churn > 0 else count + 1
    first = [f"user-{n:08d}" for n in range(count)]
    kept = [i for n, i in enumerate(first) if n % step != step - 1]
    new = [f"new-{n:08d}" for n in range(count - len(kept))]
    return first, kept + new


class Watch:
    """Reads the cohort's size after every request a client makes (the fake's own store)."""

    def __init__(self, store: CohortStore, cohort_id: str, kept: set[str]) -> None:
        self.store = store
        self.cohort_id = cohort_id
        self.kept = kept
        self.smallest: int | None = None
        self.kept_missing = 0

    def after_request(self) -> None:
        size = self.store.size(self.cohort_id)
        if self.smallest is None or size < self.smallest:
            self.smallest = size
            self.kept_missing = len(self.kept - self.store.user_ids(self.cohort_id))


def watched(client: AmplitudeClient, watch: Watch) -> AmplitudeClient:
    """The client, with ``watch`` called after each upload and membership request."""
    for name in ("upload", "membership"):
        original: Callable[[Any], Any] = getattr(client, name)

        def wrapper(body: Any, _original: Callable[[Any], Any] = original) -> Any:
            answer = _original(body)
            watch.after_request()
            return answer

        setattr(client, name, wrapper)
    return client


def run(count: int, churn: float) -> dict[str, dict[str, Any]]:
    """Both ways from the same start to the same file; their figures."""
    first, target = files(count, churn)
    kept = set(first) & set(target)
    spec = UploadSpec(name="Bench", app_id=1, owner="bench@example.com")
    results: dict[str, dict[str, Any]] = {}
    with BackgroundServer(lambda: create_app(FakeSettings(KEY, SECRET))) as server:
        assert server.app is not None
        store = server.app[STORE_KEY]
        for way in ("replace", "reconcile"):
            client = connect(
                server.url,
                api_key=KEY,
                secret_key=SECRET,
                retry=RetryPolicy(retries=3, base_delay=0.1, max_delay=1.0),
                poll_delay=0.0,
                poll_max_delay=0.0,
            )
            cohort_id = execute(client, plan_upload(first, spec)).cohort_id
            assert cohort_id
            watch = Watch(store, cohort_id, kept)
            client.attempts.clear()
            started = time.perf_counter()
            if way == "replace":
                replace = UploadSpec(**{**spec.__dict__, "existing_cohort_id": cohort_id})
                done = execute(watched(client, watch), plan_upload(target, replace))
                sent = done.ids
            else:
                result = reconcile(watched(client, watch), cohort_id, target)
                sent = result.ids_sent
            seconds = time.perf_counter() - started
            assert store.user_ids(cohort_id) == set(target), f"{way}: cohort != file"
            writes = [a for a in client.attempts if a.method == "POST"]
            results[way] = {
                "requests": len(client.attempts),
                "changing requests": len(writes),
                "ids sent": sent,
                "seconds": seconds,
                "smallest size mid-run": watch.smallest,
                "kept members missing then": watch.kept_missing,
            }
            client.http.close()
    return results


def main() -> None:
    """Run both, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=250_000)
    parser.add_argument("--churn", type=float, default=0.10)
    args = parser.parse_args()
    results = run(args.count, args.churn)
    print(f"{args.count:,} ids, {args.churn:.0%} removed and as many new\n")
    keys = list(results["replace"])
    print(f"{'':28} {'replace':>14} {'reconcile':>14}")
    for key in keys:
        row = [results[w][key] for w in ("replace", "reconcile")]
        shown = [f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" for v in row]
        print(f"{key:28} {shown[0]:>14} {shown[1]:>14}")
    ratio_ids = results["replace"]["ids sent"] / max(results["reconcile"]["ids sent"], 1)
    ratio_time = results["replace"]["seconds"] / max(results["reconcile"]["seconds"], 1e-9)
    print(f"\nids sent: replace / reconcile = {ratio_ids:.1f}x")
    print(f"wall time: replace / reconcile = {ratio_time:.2f}x (reconcile includes its export)")


if __name__ == "__main__":
    main()
