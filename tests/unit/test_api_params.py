"""Every query parameter of every endpoint, fed anything: a 400 that says what is wanted, never a
500 (issue 7, item 9). The app runs in testing mode, so any exception fails the test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import cluster
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webkit import TOKEN, make_app

from hmonitor.web.params import BadParam, choice_param, float_param, int_param
from hmonitor.web.state import get_state

# Each endpoint with its query parameters.
ENDPOINTS = {
    "/api/v1/history": ("host", "gpu", "metric", "agg", "window", "since", "until", "points",
                        "format"),
    "/api/v1/history/processes": ("host", "gpu", "window", "since", "until", "points", "format"),
    "/api/v1/sparklines": ("window", "points"),
    "/api/v1/notes": ("host",),
    "/api/v1/hosts": (),
    "/api/v1/users": (),
    "/api/v1/alerts": (),
    "/": ("user", "host", "free", "window"),
    "/host/gpu000/gpu/0": ("window",),
    "/notes": ("user", "host"),
}
NUMBERS = st.one_of(
    st.integers().map(str), st.floats().map(repr), st.sampled_from(
        ["1e308", "-1e308", "1e400", "nan", "inf", "-0", "²", "٣", "1_000", "0x10", " 1",
         "9" * 5000, "99999999999999999999", "", "1.5", ".5", "5.", "1e-400"]),
)
VALUES = st.one_of(NUMBERS, st.text(max_size=50))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    states = cluster(2, 2, 2)
    app = make_app(Path(tmp_path_factory.mktemp("params")), states)
    start = time.time() - 600
    for k in range(60):
        get_state(app).recorder.on_round(states, start + 10 * k)
    yield app


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return c


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(sorted(ENDPOINTS)), data=st.data())
def test_any_query_is_answered_never_with_a_500(
    client: FlaskClient, path: str, data: st.DataObject
) -> None:
    names = ENDPOINTS[path]
    query = {"host": "gpu000", "gpu": "0"} if "gpu" in names else {}
    for name in data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []:
        query[name] = data.draw(VALUES, label=name)
    resp = client.get(path, query_string=query)
    assert resp.status_code in (200, 400, 404), (path, query)
    if resp.status_code == 400 and path.startswith("/api/"):
        assert resp.get_json()["error"]


@pytest.mark.parametrize(("query", "words"), [
    ("gpu=0&window=1e308", "window must be 1h, 24h, 10d or a number of seconds"),
    ("gpu=99999999999999999999", "gpu must be a whole number from 0 to 2147483647"),
    ("gpu=%C2%B2", "gpu must be a whole number"),
    ("gpu=%D9%A3", "gpu must be a whole number"),
    ("gpu=0&since=-1e308", "since must be a number from 0"),
    ("gpu=0&until=1e300", "until must be a number from 0"),
    ("gpu=0&points=1e308", "points must be a whole number from 1 to 1000"),
    ("gpu=0&points=0", "points must be a whole number from 1 to 1000"),
    ("gpu=0&metric=power", "metric must be one of util, mem, mem_total, temp, fan"),
    ("gpu=0&format=xml", "format must be one of json, csv"),
    ("gpu=", "gpu (an index) is required"),
])
def test_the_found_cases_answer_400_in_words(client: FlaskClient, query: str, words: str) -> None:
    resp = client.get(f"/api/v1/history?host=gpu000&{query}")
    assert resp.status_code == 400
    assert words in resp.get_json()["error"]


def test_the_csv_file_name_cannot_be_forged_through_the_host(client: FlaskClient) -> None:
    evil = 'x"; filename="evil.sh'
    resp = client.get("/api/v1/history", query_string={"host": evil, "gpu": "0",
                                                        "format": "csv"})
    assert resp.status_code == 200
    header = resp.headers["Content-Disposition"]
    assert header.count("filename=") == 1 and "evil.sh\"" not in header
    assert header == "attachment; filename=x_filename_evil.sh_0_util.csv"


@given(st.text(max_size=30))
def test_params_accept_only_what_they_say(text: str) -> None:
    args = {"n": text}
    for parse in (lambda: int_param(args, "n", 7, -5, 5),
                  lambda: float_param(args, "n", 7.0, -5.0, 5.0),
                  lambda: choice_param(args, "n", "a", ("a", "b"))):
        try:
            value = parse()
        except BadParam as err:
            assert "n must be" in str(err)
        else:
            assert text == "" or value in ("a", "b") or -5 <= float(value) <= 5
