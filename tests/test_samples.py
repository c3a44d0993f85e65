"""``sample_payloads/`` holds exactly what the builders produce: the builders are the source."""

from __future__ import annotations

import json

from cohortctl.partner import samples


def test_sample_files_equal_the_builders_output() -> None:
    expected = samples.all_payloads()
    on_disk = {p.name for p in samples.SAMPLES_DIR.glob("*.json")}
    assert on_disk == set(expected), "regenerate with: python -m cohortctl.partner.samples"
    for name, payload in expected.items():
        text = (samples.SAMPLES_DIR / name).read_text(encoding="utf-8")
        regenerate = "python -m cohortctl.partner.samples"
        assert text == samples.render(payload), f"{name} drifted: {regenerate}"
        assert json.loads(text) == payload


def test_samples_are_what_amplitude_sends() -> None:
    payloads = samples.all_payloads()
    context = {"integration": {"name": "Amplitude Cohort Sync", "version": "1.0.0"}}
    assert payloads["list_create.json"] == {
        "name": "[Amplitude] Power Users: 7y6y3ij",
        "context": context,
    }
    assert payloads["list_add.json"]["userIds"] == list(samples.SAMPLE_USER_IDS)
    single = payloads["identify.json"]
    assert single == {
        "type": "identify",
        "traits": {"[Amplitude] Power Users: 7y6y3ij": True},
        "userId": "user-1001",
        "context": context,
    }
    assert payloads["identify_batch.json"]["batch"][0] == single
    upload = payloads["amplitude_upload.json"]
    assert upload["app_id"] == samples.APP_ID and upload["id_type"] == "BY_USER_ID"
    assert upload["published"] is True
