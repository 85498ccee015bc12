"""Bad launches: each is a 4xx naming what is wrong, never a 500, and nothing is sent."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from tests.api.conftest import AUTH, NoLaunches, serve

pytestmark = pytest.mark.anyio

GOOD_CSV = "a,b,label\n" + "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(20))
PARAMS = {"bounty": "1000000000000000000", "min_stake": "10000000000000000", "portions": "4"}


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


async def _upload(
    app: FastAPI, content: bytes, name: str = "test.csv", **fields: str
) -> tuple[int, dict[str, Any]]:
    async with serve(app) as api:
        answer = await api.post(
            "/markets", headers=AUTH, files={"file": (name, content)}, data={**PARAMS, **fields}
        )
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({}, 401, "missing token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "missing token"),
        ({"Authorization": "Bearer wrong"}, 403, "wrong"),
    ],
)
async def test_launch_needs_the_token(
    make_app: Callable[..., FastAPI],
    no_launches: NoLaunches,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    async with serve(make_app()) as api:
        answer = await api.post(
            "/markets", headers=headers, files={"file": ("t.csv", GOOD_CSV.encode())}, data=PARAMS
        )
    assert answer.status_code == status
    assert words in answer.json()["detail"] and answer.json()["field"] == "Authorization"
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    assert no_launches.calls == 0


async def test_launch_disabled_without_a_token(make_app: Callable[..., FastAPI]) -> None:
    async with serve(make_app(api_token=None)) as api:
        answer = await api.post("/markets", headers=AUTH, data=PARAMS)
    assert answer.status_code == 503 and "MARKET_API_TOKEN" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("content", "name", "fields", "status", "field", "words"),
    [
        (b"", "t.csv", {}, 422, "dataset", "empty"),
        (b"a,b,label\n", "t.csv", {}, 422, "dataset", "no data rows"),
        (b"a,b\n1,2\n3,4\n", "t.csv", {}, 422, "label", "label column is missing"),
        (GOOD_CSV.encode(), "t.csv", {"columns": "a,zz"}, 422, "zz", "missing"),
        (GOOD_CSV.encode().replace(b"\n3,4,1", b"\nnan,4,1"), "t.csv", {}, 422, "dataset", "row"),
        (b"a,b,label\n1,2,0\n3,4,2\n5,6,1\n", "t.csv", {}, 422, "dataset", "row 1, column label"),
        (b"a,b,label\n1,2,0\n3,x,1\n", "t.csv", {}, 422, "dataset", "row 1, column b"),
        (b'{"a": 1, "label": 0}\n{"a": 1, "label": 5}\n', "t.jsonl", {}, 422, "dataset", "row 1"),
        (b"a,label\n\xff\xfe,1\n", "t.csv", {}, 422, "dataset", "UTF-8"),
        (_npz(X=np.ones((8, 2)), y=np.arange(8)), "t.npz", {}, 422, "dataset", "column y"),
        (b"PK\x03\x04 not really a zip", "t.npz", {}, 422, "dataset", "NPZ"),
        (GOOD_CSV.encode(), "t.csv", {"portions": "50"}, 422, "test_set", "fewer than P"),
        (GOOD_CSV.encode(), "t.csv", {"portions": "1"}, 422, "portions", "greater than"),
        (GOOD_CSV.encode(), "t.csv", {"bounty": "1.5"}, 422, "bounty", "wei"),
        (GOOD_CSV.encode(), "t.csv", {"bounty": "0"}, 422, "bounty", "positive"),
        (GOOD_CSV.encode(), "t.csv", {"bounty": str(2**100)}, 422, "bounty", "2**96"),
        (GOOD_CSV.encode(), "t.csv", {"min_stake": "-3"}, 422, "min_stake", "wei"),
        (GOOD_CSV.encode(), "t.csv", {"encoder": "magic"}, 422, "encoder", "binned_numeric"),
        (GOOD_CSV.encode(), "t.csv", {"dim": "9"}, 422, "dim", "omit dim"),
        (GOOD_CSV.encode(), "t.csv", {"encoder": "sparse"}, 422, "dim", "needs dim"),
        (GOOD_CSV.encode(), "t.csv", {"latest_end_s": "0"}, 422, "latest_end_s", "future"),
        (GOOD_CSV.encode(), "t.csv", {"colour": "red"}, 422, "colour", "Extra"),
        (GOOD_CSV.encode(), "t.csv", {"format": "xlsx"}, 422, "format", "csv"),
        (b"text,label\nhello world,1\n,0\n", "t.csv", {"encoder": "text"}, 422, "dataset", "row 1"),
        (
            b'{"features": [1, 2], "label": 1}\n{"features": [3, 99], "label": 0}\n',
            "t.jsonl",
            {"encoder": "sparse", "dim": "16"},
            422,
            "dataset",
            "outside [0, 16)",
        ),
    ],
)
async def test_bad_upload_names_the_fault(
    make_app: Callable[..., FastAPI],
    no_launches: NoLaunches,
    content: bytes,
    name: str,
    fields: dict[str, str],
    status: int,
    field: str,
    words: str,
) -> None:
    code, body = await _upload(make_app(), content, name, **fields)
    assert code == status, body
    assert body["field"] == field, body
    assert words in body["detail"], body
    assert no_launches.calls == 0


async def test_file_over_the_limit_is_413(
    make_app: Callable[..., FastAPI], no_launches: NoLaunches
) -> None:
    big = GOOD_CSV.encode() * 40  # about 4 KB
    app = make_app(upload_limit_bytes=1000)
    code, body = await _upload(app, big)
    assert code == 413 and "over the limit of 1000 bytes" in body["detail"]
    # a body streamed without Content-Length is cut off as well
    async with serve(app) as api:

        async def chunks() -> Any:
            yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
            for _ in range(200):
                yield b"1,2,0\n" * 200

        answer = await api.post(
            "/markets",
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
            content=chunks(),
        )
    assert answer.status_code == 413 and "over the limit" in answer.json()["detail"]
    assert no_launches.calls == 0


async def test_missing_file_and_wrong_content_type(make_app: Callable[..., FastAPI]) -> None:
    async with serve(make_app()) as api:
        no_file = await api.post(
            "/markets", headers=AUTH, data=PARAMS, files={"other": ("t.csv", b"a,label\n1,1\n")}
        )
        form = await api.post("/markets", headers=AUTH, data=PARAMS)
        plain = await api.post(
            "/markets", headers={**AUTH, "Content-Type": "text/plain"}, content=b"hi"
        )
        bad_json = await api.post(
            "/markets", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope"
        )
        array = await api.post("/markets", headers=AUTH, json=[1, 2])
    assert (no_file.status_code, no_file.json()["field"]) == (422, "file")
    assert form.status_code == 415 and "x-www-form-urlencoded" in form.json()["detail"]
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["detail"]
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
    assert array.status_code == 422 and "JSON object" in array.json()["detail"]


@pytest.mark.parametrize(
    ("path", "words"),
    [("../secret.csv", "outside"), ("/etc/passwd", "outside"), ("missing.csv", "not a file")],
)
async def test_json_launch_stays_in_the_dataset_directory(
    make_app: Callable[..., FastAPI],
    no_launches: NoLaunches,
    tmp_path: Path,
    path: str,
    words: str,
) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "secret.csv").write_text(GOOD_CSV)
    async with serve(make_app()) as api:
        answer = await api.post("/markets", headers=AUTH, json={**PARAMS, "path": path})
    assert answer.status_code == 422
    assert answer.json()["field"] == "path" and words in answer.json()["detail"]
    assert no_launches.calls == 0


async def test_json_file_over_the_limit_is_413(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "big.csv").write_text(GOOD_CSV * 40)
    async with serve(make_app(upload_limit_bytes=1000)) as api:
        answer = await api.post("/markets", headers=AUTH, json={**PARAMS, "path": "big.csv"})
    assert answer.status_code == 413 and "big.csv" in answer.json()["detail"]


async def test_a_good_launch_without_a_factory_is_503_not_500(
    make_app: Callable[..., FastAPI], no_launches: NoLaunches
) -> None:
    """Everything valid, but the service cannot launch: the operator's message, not a 500."""
    code, body = await _upload(make_app(), GOOD_CSV.encode())
    assert code == 503 and "sends no transaction" in body["detail"]
    assert no_launches.calls == 1
