"""The files in ``sample_payloads/``, generated from the package's builders (the single source).

Regenerate with ``python -m cohortctl.partner.samples [DIR]``; ``tests/test_samples.py`` fails
when the committed files drift from what the builders produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cohortctl.partner import payloads

SAMPLE_COHORT_NAME = "Power Users"
SAMPLE_COHORT_ID = "7y6y3ij"
SAMPLE_LIST_ID = "list_1"
SAMPLE_USER_IDS = ("user-1001", "user-1002", "user-1003")
APP_ID = 153957
OWNER = "datamonster@example.com"

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "sample_payloads"
DEMO_IDS_FILE = "ids.csv"


def partner_payloads() -> dict[str, Any]:
    """Every payload Amplitude sends to a partner, keyed by sample file name."""
    return {
        "list_create.json": payloads.list_create(SAMPLE_COHORT_NAME, SAMPLE_COHORT_ID),
        "list_add.json": payloads.list_members(SAMPLE_USER_IDS),
        "list_remove.json": payloads.list_members(SAMPLE_USER_IDS[:1]),
        "identify.json": payloads.identify(
            SAMPLE_USER_IDS[0], SAMPLE_COHORT_NAME, SAMPLE_COHORT_ID, member=True
        ),
        "identify_batch.json": payloads.identify_batch(
            SAMPLE_USER_IDS, SAMPLE_COHORT_NAME, SAMPLE_COHORT_ID, member=True
        ),
    }


WEBHOOK_UUID = "9baaa88f-9d46-4ee5-a946-be0c6aea0046"
COMPUTED_TIME = "1692206763"


def webhook_payloads() -> dict[str, Any]:
    """The default Cohort Webhook bodies (spec part C): users entering, a user leaving."""
    from cohortctl.partner.webhooks.payload import User, message_id, webhook_body

    def body(entering: bool, users: list[User]) -> dict[str, Any]:
        return webhook_body(
            SAMPLE_COHORT_NAME,
            SAMPLE_COHORT_ID,
            in_cohort=entering,
            computed_time=COMPUTED_TIME,
            message_id=message_id(WEBHOOK_UUID, entering=entering, batch=0),
            users=users,
        )

    entering: list[User] = [
        (SAMPLE_USER_IDS[0], {"plan": "pro"}),
        *((uid, None) for uid in SAMPLE_USER_IDS[1:]),
    ]
    return {
        "webhook_enter.json": body(True, entering),
        "webhook_exit.json": body(False, [(SAMPLE_USER_IDS[0], None)]),
    }


def upload_payload() -> dict[str, Any]:
    """The body of Amplitude's ``POST /api/3/cohorts/upload`` for the sample ids."""
    from cohortctl.customer.api import upload_body

    return upload_body(
        name=SAMPLE_COHORT_NAME,
        app_id=APP_ID,
        id_type="BY_USER_ID",
        ids=list(SAMPLE_USER_IDS),
        owner=OWNER,
        published=True,
    )


def all_payloads() -> dict[str, Any]:
    """Every sample file's content, keyed by file name."""
    return {
        **partner_payloads(),
        **webhook_payloads(),
        "amplitude_upload.json": upload_payload(),
    }


def render(payload: Any) -> str:
    """A payload as it is stored in ``sample_payloads/``: indented JSON, trailing newline."""
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def write_samples(directory: Path = SAMPLES_DIR) -> list[Path]:
    """Write every sample payload into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, payload in all_payloads().items():
        path = directory / name
        path.write_text(render(payload), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR
    for path in write_samples(target):
        print(path)
